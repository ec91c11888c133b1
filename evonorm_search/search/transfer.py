"""Transfer: layers trained from scratch on networks bigger than the proxies that chose them,
on shared seeds, judged on data that chose nothing.

``transfer NAME`` takes the search's best layers after re-evaluation (``--top K``, FEC
twins collapsed; see ``reevaluate``), the zoo's layers trained on its protocol (the
references; ``--zoo`` names some) and any layer named with ``--layer`` (a zoo name, a
candidate id, or a formula: one that no candidate of the search computes is stored as a
candidate with status ``named``, outside the search's funnel), and trains each on the
space's ``[transfer]`` networks (``resnet20`` for images: full resolution, every
normalization site replaced).
This tests transfer across scale within a family of networks, not across families.

- **Seeds.** Seeds 1..S fix the initial weights and the data order alike for every layer,
  so layers are compared pairwise.  With ``learning_rates`` each layer first trains once
  per rate at seed 0 (not a reported seed) and keeps, per network, the best on
  transfer-validation: one rate tuned for BatchNorm is a confound for a layer that rescales.
- **Splits.** Training reads only the dataset's ``train`` split.  The learning curve and
  every choice (the rate, the comparator) use transfer-validation; transfer-test is read
  once per run, for the final table (and CIFAR-10's ``test_batch`` beside it, where present).
- **Storage.** Every finished run is at once an evaluation with stage ``transfer`` of the
  layer's candidate (``architecture``: the network; ``accuracy``: transfer-validation;
  ``figures``: the phase, the learning rate, the curve, transfer-test and test figures, the
  settings' key).  A run's state goes to the database every ``checkpoint_minutes`` (through
  the driver: workers never write), so a session that ends loses minutes, not the run; a
  rerun trains only the runs that are missing, each from its checkpoint.  Settings that
  differ from a layer's earlier transfer are refused before anything trains (more seeds
  are not a change: only the new ones are trained).
- **The search's transfer.** The layers transferred for a search, its settings and its
  comparator are kept in the search's config (``transfer``), growing with every command;
  ``stored_transfer`` reads them back, so the command's JSON, ``report`` and the dashboard
  show the same transfer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from evonorm_search.errors import SpaceError, StoreError
from evonorm_search.search.driver import SearchSettings, settings_space
from evonorm_search.search.reevaluate import reevaluation_ranking
from evonorm_search.search.units import Unit, decode_bytes, encode_bytes, run_units
from evonorm_search.space import SearchSpace, TrainingBudget
from evonorm_search.stats import compare_paired, mean_interval

__all__ = [
    "STAGE",
    "TRANSFER_KEY",
    "TransferLayer",
    "TransferPlan",
    "comparison_table",
    "plan_transfer",
    "record_plan",
    "run_transfer",
    "stored_transfer",
    "transfer_results",
    "transfer_settings",
    "transfer_table",
    "transfer_trial",
]

STAGE = "transfer"
TRANSFER_KEY = "transfer"  # the layer's settings and chosen rates, in its ``measured``
WORKER = "evonorm_search.search.transfer:transfer_trial"
SWEEP_SEED = 0  # the learning-rate sweep's seed: never one of the reported seeds 1..S
RETRIES = 2  # a unit whose process died is started again (from its checkpoint) this often


@dataclass(frozen=True)
class TransferLayer:
    label: str  # "#ID" for a candidate, the zoo's name for a baseline
    kind: str  # candidate (chosen by the search), baseline (the zoo), named (--layer)
    # Whose graph is trained and under whose id the runs are stored; None for a formula
    # named with --layer that becomes a candidate when the transfer runs (``record_plan``).
    candidate: int | None
    graph: str


@dataclass
class TransferPlan:
    """What ``transfer`` trains: the layers, the settings they share (compared on a rerun),
    the seeds, and whether any zoo layer was trained on the search's protocol."""

    search: SearchSettings
    space: SearchSpace
    settings: dict[str, Any]
    seeds: list[int]
    layers: list[TransferLayer] = field(default_factory=list)
    baselines: bool = True
    checkpoint_minutes: float = 3.0

    @property
    def key_comparable(self) -> str:
        """The key of the settings that change what a run measures (stored with each run)."""
        return settings_key(_comparable(self.settings))


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def transfer_settings(space: SearchSpace, overrides: dict[str, Any]) -> dict[str, Any]:
    """Everything a transfer run depends on but its seed."""
    from evonorm_search.proxy.data import TRANSFER_SLICE

    tr = dataclasses.replace(
        space.transfer, **{k: v for k, v in overrides.items() if v is not None}
    )
    return {
        "networks": list(tr.networks),
        "steps": tr.steps,
        "batch_size": tr.batch_size,
        "learning_rate": tr.learning_rate,
        "learning_rates": list(tr.learning_rates),
        "momentum": tr.momentum,
        "weight_decay": tr.weight_decay,
        "eval_every": tr.eval_every,
        "dataset": space.proxy.dataset,
        "transfer_slice": TRANSFER_SLICE[space.proxy.dataset],
        "groups": space.proxy.groups,
    }


def _named_layer(store: Any, name: str, spec: str, zoo: dict[str, TransferLayer]) -> TransferLayer:
    """``--layer``: a zoo name (trained on the protocol), a candidate id, or a formula: the
    candidate of the search that computes the same function, else a new ``named`` one."""
    from evonorm_search import baselines

    if spec in zoo:
        return dataclasses.replace(zoo[spec], kind="named")
    if spec in baselines.names():
        _zoo_refusal(name, spec, "--layer")
    if spec.lstrip("#").isdigit():
        c = store.candidate(int(spec.lstrip("#")))
        return TransferLayer(f"#{c['id']}", "named", c["id"], c["graph"])
    from evonorm_search.errors import GraphError
    from evonorm_search.graph import LayerGraph
    from evonorm_search.hashing import functional_hash

    try:
        graph = LayerGraph.parse(spec)
        wanted = functional_hash(graph)
    except GraphError as e:
        raise StoreError(f"--layer {spec!r} is no zoo name, candidate id or formula: {e}") from None
    for c in store.history(name, named=True):
        if c["functional_hash"] == wanted and c["graph"] is not None:
            return TransferLayer(f"#{c['id']}", "named", c["id"], c["graph"])
    return TransferLayer(graph.formula(), "named", None, graph.to_json())


def _zoo_refusal(name: str, spec: str, option: str) -> None:
    from evonorm_search import baselines

    if spec not in baselines.names():
        raise StoreError(
            f"{option} {spec!r} is not a layer of the zoo (known: {', '.join(baselines.names())})"
        )
    raise StoreError(
        f"{option} {spec}: the zoo's {spec} was not trained on the protocol of "
        f"search {name!r}: `evonorm-search baselines evaluate` trains it"
    )


def plan_transfer(
    store: Any,
    name: str,
    *,
    top: int = 2,
    layers: tuple[str, ...] = (),
    zoo_layers: tuple[str, ...] | None = None,
    seeds: int | None = None,
    comparator: str | None = None,
    checkpoint_minutes: float | None = None,
    **overrides: Any,
) -> TransferPlan:
    """The layers and settings of ``transfer`` for the search ``name`` (a read-only store is
    enough); ``zoo_layers`` are the references (default: every zoo layer trained on the
    search's protocol); ``overrides`` replace the space's ``[transfer]`` values (steps,
    networks, learning_rate, learning_rates, eval_every, batch_size).  Refuses
    (StoreError), before anything trains, settings other than those of the search's or a
    layer's earlier transfer."""
    from evonorm_search.store import retune_subject

    found = store.search(name)
    search = SearchSettings.from_config(
        {"name": name, "space": found["space"], **(found["config"] or {})}
    )
    space = settings_space(search)
    try:
        settings = transfer_settings(space, overrides)
        space = dataclasses.replace(
            space,
            transfer=dataclasses.replace(space.transfer, networks=tuple(settings["networks"])),
        )
    except TypeError as e:
        raise SpaceError(f"unknown transfer setting: {e}") from None
    from evonorm_search.catalog import TRANSFER_NETWORK_TENSORS

    fitting = [n for n, tensor in TRANSFER_NETWORK_TENSORS.items() if tensor == space.tensor]
    if not settings["networks"]:
        raise SpaceError(f"no transfer network given (known: {', '.join(fitting)})")
    for network in settings["networks"]:
        if network not in fitting:
            raise SpaceError(
                f"--networks: {network!r} is not a transfer network for "
                f"{space.tensor} tensors (known: {', '.join(fitting)})"
            )
    seed_count = seeds or space.transfer.seeds
    minutes = checkpoint_minutes or space.transfer.checkpoint_minutes
    plan = TransferPlan(
        search, space, settings, list(range(1, seed_count + 1)), checkpoint_minutes=minutes
    )
    chosen: list[TransferLayer] = []
    if top:
        ranking = reevaluation_ranking(store, name)
        if not ranking:
            raise StoreError(
                f"search {name!r} has no re-evaluated layer: `evonorm-search "
                f"reevaluate {name} --top M --seeds S` ranks its best by new "
                "seeds first (or name layers with --layer and --top 0)"
            )
        chosen += [
            TransferLayer(f"#{r['id']}", "candidate", r["id"], r["graph"]) for r in ranking[:top]
        ]
    zoo: dict[str, TransferLayer] = {}
    for row in store.baseline_layers(name):
        subject = retune_subject(row)
        if subject is None:
            continue
        graph = row["graph"] if subject == row["id"] else store.candidate(subject)["graph"]
        if row["scores"]:  # trained on the protocol: a possible reference
            zoo[row["name"]] = TransferLayer(row["name"], "baseline", subject, graph)
    for spec in zoo if zoo_layers is None else zoo_layers:
        if spec not in zoo:
            _zoo_refusal(name, spec, "--zoo")
        chosen.append(zoo[spec])
    plan.baselines = bool(zoo)
    chosen += [_named_layer(store, name, spec, zoo) for spec in layers]
    seen: set[int | str] = set()
    for layer in chosen:
        ident = layer.candidate if layer.candidate is not None else layer.graph
        if ident not in seen:
            seen.add(ident)
            plan.layers.append(layer)
    if not plan.layers:
        raise StoreError(f"nothing to transfer for search {name!r}")
    before = (found["config"] or {}).get(TRANSFER_KEY)
    labels = [layer.label for layer in plan.layers] + [
        entry["label"] for entry in (before or {}).get("layers", [])
    ]
    if comparator is not None and comparator not in labels:
        raise StoreError(
            f"--comparator {comparator!r} is not one of the layers transferred "
            f"({', '.join(dict.fromkeys(labels))})"
        )
    plan.settings["comparator"] = comparator
    if before is not None and before["key"] != plan.key_comparable:
        raise StoreError(
            f"search {name!r} was transferred already with other settings "
            f"({_changes(before['settings'], plan.settings)}): use those "
            "settings, or another --db"
        )
    for layer in plan.layers:
        if layer.candidate is None:
            continue
        done = (store.candidate(layer.candidate)["measured"] or {}).get(TRANSFER_KEY)
        if done is not None and done.get("key") != plan.key_comparable:
            raise StoreError(
                f"{layer.label} (candidate {layer.candidate}) was transferred already with other "
                f"settings ({_changes(done['settings'], plan.settings)}); a layer keeps one "
                "transfer: use those settings, or another --db"
            )
    return plan


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what a run measures (not the report's comparator)."""
    return {k: v for k, v in settings.items() if k != "comparator"}


def _changes(before: dict[str, Any], asked: dict[str, Any]) -> str:
    """The settings that differ, as ``steps 30, asked 31``."""
    keys = sorted((set(before) | set(asked)) - {"comparator"})
    return "; ".join(
        f"{k.replace('_', ' ')} {before.get(k)}, asked {asked.get(k)}"
        for k in keys
        if before.get(k) != asked.get(k)
    )


# -- on a worker ---------------------------------------------------------------------------


def transfer_trial(request: dict[str, Any], report_progress: Any) -> dict[str, Any]:
    """One run on a worker: ``graph`` on ``network`` at ``learning_rate`` and ``seed``,
    from ``checkpoint`` where given; the transfer-validation curve every ``eval_every``
    steps, a checkpoint through ``report_progress`` every ``checkpoint_minutes``, and at the
    end transfer-validation, transfer-test and (where present) test figures."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.provenance import code_version
    from evonorm_search.proxy.train import TrainingRun, evaluate
    from evonorm_search.search.trial import effective_space, worker_node

    s = request["settings"]
    space = effective_space(request["space"], request["dataset"], request["preset"])
    steps = s["steps"]
    space = dataclasses.replace(
        space,
        training=TrainingBudget(
            batch_size=s["batch_size"],
            learning_rate=request["learning_rate"],
            momentum=s["momentum"],
            weight_decay=s["weight_decay"],
            quality_steps=steps,
            steps=steps,
        ),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = _transfer_dataset(
        space.proxy.dataset,
        request["data_dir"],
        space.proxy.validation,
        s["transfer_slice"],
        device,
    )
    run = TrainingRun(
        LayerGraph.from_json(request["graph"]),
        request["network"],
        data,
        space,
        request["seed"],
        steps,
    )
    curve: list[list[float]] = []
    resumed_at = 0
    if request.get("checkpoint"):
        state = torch.load(
            io.BytesIO(decode_bytes(request["checkpoint"])), weights_only=True, map_location=device
        )
        run.load_state_dict(state["run"])
        curve, resumed_at = [list(point) for point in state["curve"]], run.step
    every, saved = s["eval_every"], time.monotonic()
    report = {"node": worker_node(), "code_version": code_version(), "resumed_at": resumed_at}
    while run.step < steps:
        if not run.advance(min(steps, (run.step // every + 1) * every)):
            return {
                **report,
                "status": "diverged",
                "steps": run.step,
                "seconds": round(run.seconds, 3),
                "curve": curve,
            }
        curve.append([run.step, round(evaluate(run.model, data, "transfer_val")[0], 6)])
        if run.step < steps and time.monotonic() - saved >= 60 * request["checkpoint_minutes"]:
            buffer = io.BytesIO()
            torch.save({"run": run.state_dict(), "curve": curve}, buffer)
            report_progress({"step": run.step, "state": encode_bytes(buffer.getvalue())})
            saved = time.monotonic()
    figures = {
        split: dict(zip(("accuracy", "loss"), evaluate(run.model, data, split), strict=True))
        for split in ("transfer_val", "transfer_test")
    }
    # The same with each batch's own statistics: a large gap blames the running estimates.
    figures["transfer_val_batch_statistics"] = dict(
        zip(
            ("accuracy", "loss"),
            evaluate(run.model, data, "transfer_val", batch_statistics=True),
            strict=True,
        )
    )
    if data.test_images is not None:
        figures["test"] = dict(
            zip(("accuracy", "loss"), evaluate(run.model, data, "test"), strict=True)
        )
    return {
        **report,
        "status": "completed",
        "steps": run.step,
        "seconds": round(run.seconds, 3),
        "curve": curve,
        "splits": figures,
    }


_DATA: dict[tuple[Any, ...], Any] = {}


def _transfer_dataset(
    name: str, data_dir: str | None, validation: int, transfer: int, device: str
) -> Any:
    """The dataset with the given transfer slices, loaded once per worker process."""
    from evonorm_search.proxy.data import load_dataset

    key = (name, data_dir, validation, transfer, device)
    if key not in _DATA:
        _DATA[key] = load_dataset(
            name, root=data_dir, validation=validation, transfer=transfer, device=device
        )
    return _DATA[key]


# -- in the driver -------------------------------------------------------------------------


def _runs(store: Any, candidate: int, key: str) -> dict[tuple[str, str, int, float], dict]:
    """A layer's stored transfer runs under the settings ``key``:
    (phase, network, seed, learning rate) -> evaluation."""
    runs = {}
    for e in store.candidate(candidate)["evaluations"]:
        f = e.get("figures") or {}
        if e["stage"] == STAGE and f.get("key") == key:
            runs[f["phase"], e["architecture"], e["seed"], f["learning_rate"]] = e
    return runs


def _best_rate(sweep: dict[float, float | None], default: float) -> float:
    """The rate with the best transfer-validation accuracy (the first of equals; a run that
    diverged scores nothing); ``default`` when every one diverged."""
    done = [
        (accuracy, -k, lr) for k, (lr, accuracy) in enumerate(sweep.items()) if accuracy is not None
    ]
    return max(done)[2] if done else default


def _chosen_rate(
    settings: dict[str, Any], done: dict[tuple[str, str, int, float], dict], network: str
) -> float | None:
    """The learning rate of a layer's seeds on ``network``, given its stored runs ``done``:
    the space's, or the sweep's best once every sweep run is stored (None until then)."""
    if not settings["learning_rates"]:
        return settings["learning_rate"]
    sweep = {}
    for lr in settings["learning_rates"]:
        run = done.get(("sweep", network, SWEEP_SEED, lr))
        if run is None:
            return None
        sweep[lr] = run["accuracy"] if run["status"] == "completed" else None
    return _best_rate(sweep, settings["learning_rate"])


class _Transfer:
    """The units of a plan for ``run_units``: per layer and network the sweep (if any),
    then the seeds at the chosen rate; each finished run is recorded at once."""

    def __init__(self, store: Any, plan: TransferPlan, on_event: Any) -> None:
        self.store, self.plan, self.on_event = store, plan, on_event
        self.key = plan.key_comparable
        self.started: set[tuple[int, str, str, int, float]] = set()
        self.retries: dict[tuple[int, str, str, int, float], int] = {}
        self.failed: set[tuple[int, str, str, int, float]] = set()
        self.done = {
            layer.candidate: _runs(store, layer.candidate, self.key) for layer in plan.layers
        }

    def _rate(self, layer: TransferLayer, network: str) -> float | None:
        return _chosen_rate(self.plan.settings, self.done[layer.candidate], network)

    def _wanted(self) -> list[tuple[TransferLayer, str, str, int, float]]:
        """The runs missing now: (layer, phase, network, seed, rate)."""
        s, wanted = self.plan.settings, []
        for layer in self.plan.layers:
            done = self.done[layer.candidate]
            for network in s["networks"]:
                for lr in s["learning_rates"]:
                    if ("sweep", network, SWEEP_SEED, lr) not in done:
                        wanted.append((layer, "sweep", network, SWEEP_SEED, lr))
                rate = self._rate(layer, network)
                for seed in self.plan.seeds:
                    if rate is not None and ("final", network, seed, rate) not in done:
                        wanted.append((layer, "final", network, seed, rate))
        return wanted

    def missing(self) -> int:
        """Runs not stored yet (a sweep's seeds count once the sweep is done)."""
        return len(self._wanted())

    def next_unit(self) -> Unit | None:
        for layer, phase, network, seed, lr in self._wanted():
            ident = (layer.candidate, phase, network, seed, lr)
            if ident in self.started or ident in self.failed:
                continue
            self.started.add(ident)
            return self._unit(layer, phase, network, seed, lr)
        return None

    def _checkpoint_key(
        self, candidate: int, phase: str, network: str, seed: int, lr: float
    ) -> str:
        text = json.dumps([self.key, candidate, phase, network, seed, lr])
        return hashlib.sha256(text.encode()).hexdigest()

    def _unit(self, layer: TransferLayer, phase: str, network: str, seed: int, lr: float) -> Unit:
        s = self.plan.search
        key = self._checkpoint_key(layer.candidate, phase, network, seed, lr)
        saved = self.store.checkpoint(key)
        where = f" (resumes at step {saved[0]})" if saved else ""
        label = f"{layer.label} {network} " + (
            f"lr {lr:g} (sweep)" if phase == "sweep" else f"seed {seed} lr {lr:g}"
        )
        self.on_event(f"{label}: started{where}")
        return Unit(
            label,
            WORKER,
            {
                "candidate": layer.candidate,
                "graph": layer.graph,
                "phase": phase,
                "network": network,
                "seed": seed,
                "learning_rate": lr,
                "space": s.space,
                "dataset": s.dataset,
                "data_dir": s.data_dir,
                "preset": s.preset,
                "settings": _comparable(self.plan.settings),
                "key": key,
                "checkpoint_minutes": self.plan.checkpoint_minutes,
                "checkpoint": encode_bytes(saved[1]) if saved else None,
            },
        )

    def finished(self) -> bool:
        return all(
            (layer.candidate, phase, network, seed, lr) in self.failed
            for layer, phase, network, seed, lr in self._wanted()
        )

    def progress(self, unit: Unit, progress: dict[str, Any]) -> None:
        r = unit.request
        self.store.put_checkpoint(
            r["key"], r["candidate"], progress["step"], decode_bytes(progress["state"])
        )
        self.on_event(f"{unit.label}: step {progress['step']}, checkpointed")

    def complete(self, unit: Unit, report: dict[str, Any]) -> None:
        r = unit.request
        ident = (r["candidate"], r["phase"], r["network"], r["seed"], r["learning_rate"])
        self.started.discard(ident)
        if "error" in report:
            self.retries[ident] = self.retries.get(ident, 0) + 1
            again = self.retries[ident] <= RETRIES
            if not again:
                self.failed.add(ident)
            self.on_event(
                f"{unit.label}: failed ({report['error']}); "
                + (
                    "started again from its checkpoint"
                    if again
                    else "a rerun of the command tries again"
                )
            )
            return
        self._record(r, report)
        run = self.done[r["candidate"]][r["phase"], r["network"], r["seed"], r["learning_rate"]]
        outcome = (
            f"transfer-validation {run['accuracy']:.4f}"
            if run["accuracy"] is not None
            else run["status"]
        )
        self.on_event(
            f"{unit.label}: {outcome} after {report['steps']} steps; {self.missing()} runs left"
        )

    def _record(self, r: dict[str, Any], report: dict[str, Any]) -> None:
        """The run as an evaluation, the layer's transfer record, the checkpoint gone: one
        transaction."""
        space = self.plan.space
        splits = report.get("splits") or {}
        val = splits.get("transfer_val") or {}
        figures = {
            "key": self.key,
            "phase": r["phase"],
            "learning_rate": r["learning_rate"],
            "curve": report.get("curve"),
            "split": "transfer_val",
            "transfer_test": splits.get("transfer_test"),
            "test": splits.get("test"),
            "transfer_val_batch_statistics": splits.get("transfer_val_batch_statistics"),
            "resumed_at": report.get("resumed_at"),
        }
        layer_record = {
            "key": self.key,
            "settings": _comparable(self.plan.settings),
            "search": self.plan.search.name,
        }
        with self.store.batch():
            self.store.add_evaluation(
                r["candidate"],
                architecture=r["network"],
                dataset=space.proxy.dataset,
                preset="transfer",
                seed=r["seed"],
                steps=report["steps"],
                status=report["status"],
                seconds=report["seconds"],
                accuracy=val.get("accuracy"),
                loss=val.get("loss"),
                stage=STAGE,
                node=report.get("node"),
                code_version=report.get("code_version"),
                figures=figures,
            )
            measured = self.store.candidate(r["candidate"])["measured"] or {}
            if TRANSFER_KEY not in measured:
                self.store.update_candidate(r["candidate"], measured={TRANSFER_KEY: layer_record})
            self.store.drop_checkpoint(r["key"])
        self.done[r["candidate"]] = _runs(self.store, r["candidate"], self.key)


def run_transfer(
    store: Any,
    plan: TransferPlan,
    *,
    workers: int = 1,
    gpus_per_trial: float = 0.0,
    address: str | None = None,
    on_event: Any = None,
) -> int:
    """Train ``plan``'s missing runs on Ray Tune, recording each as it ends and its
    checkpoints as they come; returns how many runs are left (none unless interrupted or
    failed).  First the formulas named with ``--layer`` become candidates and the plan
    joins the search's transfer."""
    record_plan(store, plan)
    source = _Transfer(store, plan, on_event or (lambda line: None))
    if source.missing():
        run_units(
            source,
            name="transfer",
            workers=workers,
            gpus_per_trial=gpus_per_trial,
            address=address,
            max_failures=0,
        )
    return source.missing()


def record_plan(store: Any, plan: TransferPlan) -> None:
    """Store each formula named with ``--layer`` that no candidate computes as a ``named``
    candidate of the search (labelled by its id from now on), and add the plan's layers,
    settings and comparator to the search's transfer (``stored_transfer`` reads it)."""
    from evonorm_search.graph import LayerGraph
    from evonorm_search.hashing import functional_hash
    from evonorm_search.store import NAMED

    name = plan.search.name
    for k, layer in enumerate(plan.layers):
        if layer.candidate is None:
            graph = LayerGraph.from_json(layer.graph)
            cid = store.add_candidate(
                name,
                graph=layer.graph,
                formula=graph.formula(),
                status=NAMED,
                mutation="named with transfer --layer",
                structural_hash=graph.structural_hash(),
                functional_hash=functional_hash(graph),
                node_count=len(graph.pruned().nodes),
            )
            plan.layers[k] = dataclasses.replace(layer, label=f"#{cid}", candidate=cid)
    config = dict(store.search(name)["config"] or {})
    before = config.get(TRANSFER_KEY) or {"layers": [], "comparator": None}
    known = {entry["candidate"] for entry in before["layers"]}
    layers = before["layers"] + [
        {"candidate": layer.candidate, "label": layer.label, "kind": layer.kind}
        for layer in plan.layers
        if layer.candidate not in known
    ]
    config[TRANSFER_KEY] = {
        "key": plan.key_comparable,
        "settings": _comparable(plan.settings),
        "comparator": plan.settings["comparator"] or before["comparator"],
        "layers": layers,
    }
    store.set_search_config(name, config)


# -- results -------------------------------------------------------------------------------


def transfer_results(store: Any, plan: TransferPlan, *, alpha: float = 0.05) -> dict[str, Any]:
    """The plan's stored runs as a report: per layer and network the seeds' figures, the
    mean and 95% t-interval on transfer-validation, transfer-test and test, the learning
    curves; per network the comparator (``--comparator``, else the zoo layer with the best
    mean transfer-validation accuracy, fixed before transfer-test is read) and each other
    layer's paired difference to it on transfer-test, Holm-corrected over that network's
    comparisons."""
    key = plan.key_comparable
    layers = []
    for layer in plan.layers:
        record = store.candidate(layer.candidate)
        done = _runs(store, layer.candidate, key)
        per_network = {}
        for network in plan.settings["networks"]:
            rate = _chosen_rate(plan.settings, done, network)
            runs = {seed: done.get(("final", network, seed, rate)) for seed in plan.seeds}
            runs = {seed: e for seed, e in runs.items() if e is not None}
            per_network[network] = _network_figures(runs, rate)
        layers.append(
            {
                "label": layer.label,
                "kind": layer.kind,
                "id": layer.candidate,
                "formula": record["formula"],
                "networks": per_network,
            }
        )
    comparisons = {}
    for network in plan.settings["networks"]:
        comparisons[network] = _comparisons(layers, network, plan.settings.get("comparator"), alpha)
    return {
        "search": plan.search.name,
        "settings": plan.settings,
        "seeds": plan.seeds,
        "layers": layers,
        "comparisons": comparisons,
    }


def stored_transfer(store: Any, name: str) -> dict[str, Any] | None:
    """The transfer of the search ``name`` as stored (``transfer --format json``, ``report``
    and the dashboard): every layer transferred for it, in the order they joined, under its
    settings and comparator, on every seed stored; None when nothing was transferred."""
    found = store.search(name)
    done = (found["config"] or {}).get(TRANSFER_KEY)
    if done is None:
        return None
    search = SearchSettings.from_config(
        {"name": name, "space": found["space"], **(found["config"] or {})}
    )
    layers = [
        TransferLayer(
            entry["label"],
            entry["kind"],
            entry["candidate"],
            store.candidate(entry["candidate"])["graph"],
        )
        for entry in done["layers"]
    ]
    seeds = sorted(
        {
            e["seed"]
            for layer in layers
            for e in store.candidate(layer.candidate)["evaluations"]
            if e["stage"] == STAGE
            and (e["figures"] or {}).get("key") == done["key"]
            and e["figures"].get("phase") == "final"
        }
    )
    plan = TransferPlan(
        search,
        settings_space(search),
        {**done["settings"], "comparator": done["comparator"]},
        seeds,
        layers,
    )
    return transfer_results(store, plan)


def _split_accuracy(e: dict[str, Any], split: str) -> float | None:
    if e["status"] != "completed":
        return None
    if split == "transfer_val":
        return e["accuracy"]
    return ((e.get("figures") or {}).get(split) or {}).get("accuracy")


def _network_figures(runs: dict[int, dict[str, Any]], rate: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "learning_rate": rate,
        "seeds": sorted(runs),
        "diverged": sorted(s for s, e in runs.items() if e["status"] != "completed"),
    }
    for split in ("transfer_val", "transfer_test", "test", "transfer_val_batch_statistics"):
        values = {seed: _split_accuracy(e, split) for seed, e in runs.items()}
        values = {seed: v for seed, v in values.items() if v is not None}
        figures[split] = {
            "by_seed": values,
            "interval": mean_interval(list(values.values())).to_dict() if values else None,
        }
    figures["curves"] = {seed: (e.get("figures") or {}).get("curve") for seed, e in runs.items()}
    return figures


def _comparisons(
    layers: list[dict[str, Any]], network: str, comparator: str | None, alpha: float
) -> dict[str, Any]:
    def val_mean(layer: dict[str, Any]) -> float | None:
        interval = layer["networks"][network]["transfer_val"]["interval"]
        return None if interval is None else interval["mean"]

    if comparator is None:
        zoo = [layer for layer in layers if layer["kind"] == "baseline" and val_mean(layer)]
        if not zoo:
            return {"comparator": None, "rule": "no zoo layer completed", "results": []}
        reference = max(zoo, key=lambda layer: (val_mean(layer), layer["label"]))
        rule = "the zoo layer with the best mean transfer-validation accuracy"
    else:
        reference = next(layer for layer in layers if layer["label"] == comparator)
        rule = "named with --comparator"
    scores = reference["networks"][network]["transfer_test"]["by_seed"]
    others = {
        layer["label"]: layer["networks"][network]["transfer_test"]["by_seed"]
        for layer in layers
        if layer is not reference
        and layer["kind"] != "baseline"
        and layer["networks"][network]["transfer_test"]["by_seed"]
    }
    others = {label: by_seed for label, by_seed in others.items() if set(by_seed) & set(scores)}
    results = compare_paired(scores, others, alpha=alpha) if scores and others else []
    return {
        "comparator": reference["label"],
        "rule": rule,
        "split": "transfer_test",
        "alpha": alpha,
        "results": [c.to_dict() for c in results],
    }


# -- as tables (the CLI and the report print the same) -------------------------------------


def transfer_table(results: dict[str, Any], network: str) -> tuple[list[str], list[list[str]]]:
    """The layers on ``network``: header and rows of text."""
    from evonorm_search.stats import interval_text

    rows = []
    for layer in results["layers"]:
        n = layer["networks"][network]
        rate = "-" if n["learning_rate"] is None else f"{n['learning_rate']:g}"
        rows.append(
            [
                layer["label"],
                layer["kind"],
                rate,
                *[
                    interval_text(n[split]["interval"])
                    for split in ("transfer_val", "transfer_test", "test")
                ],
                layer["formula"] or "-",
            ]
        )
    return [network, "kind", "lr", "transfer-validation", "transfer-test", "test", "formula"], rows


def comparison_table(comparison: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """The comparison fixed in advance on one network: the sentence that states it, and
    its header and rows of text."""
    from evonorm_search.stats import interval_text

    statement = (
        f"each layer the search chose against {comparison['comparator']} "
        f"({comparison['rule']}), paired over shared seeds on transfer-test, "
        f"Holm-corrected over {len(comparison['results'])} comparisons at alpha "
        f"{comparison.get('alpha', 0.05):g}"
    )
    rows = [
        [
            c["name"],
            interval_text(c["difference"]),
            interval_text(c["simultaneous"]),
            "-" if c["p"] is None else f"{c['p']:.3g}",
            "-" if c["p_holm"] is None else f"{c['p_holm']:.3g}",
            c["verdict"],
        ]
        for c in comparison["results"]
    ]
    return (
        statement,
        ["layer", "difference [95% t]", "simultaneous", "p", "p (Holm)", "verdict"],
        rows,
    )
