"""Planning a transfer: which layers, on which networks, with which settings; a plan's
layers and settings recorded in the search before anything trains."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from evonorm_search.errors import SpaceError, StoreError
from evonorm_search.search.driver import SearchSettings, settings_space
from evonorm_search.search.reevaluate import reevaluation_ranking
from evonorm_search.space import SearchSpace

STAGE = "transfer"
TRANSFER_KEY = "transfer"  # the layer's settings and chosen rates, in its ``measured``
WORKER = "evonorm_search.search.transfer.worker:transfer_trial"
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
        return settings_key(comparable_settings(self.settings))


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


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
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
        "settings": comparable_settings(plan.settings),
        "comparator": plan.settings["comparator"] or before["comparator"],
        "layers": layers,
    }
    store.set_search_config(name, config)
