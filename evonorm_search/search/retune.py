"""Final re-ranking (as in the EvoNorm paper): the best layers of a search and the baseline
zoo, retrained longer with a tuned learning rate, over several seeds.

For each layer, Optuna's TPE (Ray Tune's ``OptunaSearch``, one per layer) searches the
learning rate, log-uniform over ``[lr / 10, lr * 10]`` around the space's
``training.learning_rate`` (``lr``), whose own value is the first trial.  A trial trains
the layer on every architecture with ``train_candidate`` (seed 0, ``steps`` steps: twice
the space's by default); its metric is the mean validation accuracy over the
architectures, 0 for one rejected at the quality check or diverged.  Then ``seeds`` runs
(seeds 1..S, independent of the seed the learning rate was chosen on) train every
architecture with the best learning rate for ``steps`` steps (no quality check) and are
measured on the dataset's transfer-validation slice (``split``: ``transfer_val``), which
neither the search (it selected on its validation split) nor any training has read.

One Ray Tune run holds every trial of every layer (a layer's final seeds start once its
learning-rate trials are done), so a worker keeps its process and data throughout.
Trials never touch the database: the driver records each layer once its seeds are done,
in one transaction, as evaluations with stage ``retune`` of the candidate whose graph was
trained (``queries.retune_subject`` for a baseline) and, under that candidate's
``measured["retune"]``, the settings, the trials and the chosen learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evonorm_search.errors import StoreError
from evonorm_search.provenance import code_version
from evonorm_search.search.driver import SearchSettings, settings_space
from evonorm_search.search.trial import effective_space, trial_dataset, worker_node
from evonorm_search.search.tuner import tune_run
from evonorm_search.space import SearchSpace

__all__ = ["FINAL_SPLIT", "LR_FACTOR", "Layer", "RetunePlan", "plan_retune", "run_retune"]

LR_FACTOR = 10.0  # the learning rate is searched in [lr / LR_FACTOR, lr * LR_FACTOR]
FINAL_SPLIT = "transfer_val"  # where the final seeds are measured


@dataclass(frozen=True)
class Layer:
    label: str  # "#ID" for a candidate of the search, the zoo's name for a baseline
    kind: str  # candidate or baseline
    candidate: int  # whose graph is trained and under whose id the results are stored
    graph: str  # graph JSON


@dataclass
class RetunePlan:
    """What ``retune`` will train: the layers, the settings every one of them shares, and
    the layers skipped because they were retuned already with these settings."""

    search: SearchSettings  # the retuned search's own settings (space, data, preset)
    space: SearchSpace
    settings: dict[str, Any]  # steps, seeds, lr_trials, lr_range: compared on a re-run
    layers: list[Layer] = field(default_factory=list)
    skipped: list[Layer] = field(default_factory=list)
    baselines: bool = True  # whether the zoo was evaluated on the search's protocol


def plan_retune(
    store: Any, name: str, *, top: int, seeds: int = 3, steps: int | None = None, lr_trials: int = 6
) -> RetunePlan:
    """The layers to retune for the search ``name`` (a read-only store is enough): the
    ``top`` candidates of its Pareto front by mean accuracy, then the zoo's layers trained
    on its protocol.  A layer retuned before with the same settings is skipped; with
    other settings it is refused (StoreError), before anything is trained."""
    if top < 1 or seeds < 1 or lr_trials < 1 or (steps is not None and steps < 1):
        raise ValueError("top, seeds, lr_trials and steps must be >= 1")
    found = store.search(name)
    search = SearchSettings.from_config(
        {"name": name, "space": found["space"], **(found["config"] or {})}
    )
    space = settings_space(search)
    front = store.pareto(name)[:top]
    if not front:
        raise StoreError(f"search {name!r} has no trained candidate to retune")
    lr = space.training.learning_rate
    settings = {
        "steps": steps or 2 * space.training.steps,
        "seeds": list(range(1, seeds + 1)),
        "lr_trials": lr_trials,
        "lr_range": [lr / LR_FACTOR, lr * LR_FACTOR],
    }
    plan = RetunePlan(search, space, settings)
    layers = [Layer(f"#{c['id']}", "candidate", c["id"], c["graph"]) for c in front]
    from evonorm_search.store import RETUNE_KEY, retune_subject

    zoo = [row for row in store.baseline_layers(name) if row["scores"]]
    plan.baselines = bool(zoo)
    for row in zoo:
        subject = retune_subject(row)
        graph = row["graph"] if subject == row["id"] else store.candidate(subject)["graph"]
        layers.append(Layer(row["name"], "baseline", subject, graph))
    for layer in layers:
        done = store.candidate(layer.candidate)["measured"].get(RETUNE_KEY)
        if done is None:
            plan.layers.append(layer)
        elif all(done.get(k) == v for k, v in settings.items()):
            plan.skipped.append(layer)
        else:
            raise StoreError(
                f"{layer.label} (candidate {layer.candidate}) was retuned already with other "
                f"settings ({_settings_text(done)}; asked: {_settings_text(settings)}); a "
                "layer keeps one retune: use those settings, or another --db"
            )
    return plan


def _settings_text(settings: dict[str, Any]) -> str:
    return (
        f"--steps {settings.get('steps')} --seeds {len(settings.get('seeds') or [])} "
        f"--lr-trials {settings.get('lr_trials')}"
    )


# -- on a worker ---------------------------------------------------------------------------


def retune_trial(request: dict[str, Any]) -> dict[str, Any]:
    """One trial on a worker: ``phase`` ``lr`` (a learning-rate trial: train_candidate at
    seed 0, mean validation accuracy) or ``final`` (one seed, every architecture, measured
    on transfer-validation).  A plain, JSON-able report."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.proxy.train import TrainingRun, evaluate, train_candidate

    space = effective_space(request["space"], request["dataset"], request["preset"])
    space = dataclasses.replace(
        space, training=dataclasses.replace(space.training, learning_rate=request["learning_rate"])
    )
    graph = LayerGraph.from_json(request["graph"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = trial_dataset(space.proxy.dataset, request["data_dir"], space.proxy.validation, device)
    architectures, steps = space.proxy.architectures, request["steps"]
    if request["phase"] == "lr":
        runs = train_candidate(graph, data, space=space, seed=0, steps=steps)
        scores = {
            a: runs[a].accuracy if a in runs and runs[a].status == "completed" else 0.0
            for a in architectures
        }
        return {
            "node": worker_node(),
            "scores": scores,
            "accuracy": statistics.fmean(scores.values()),
        }
    split = FINAL_SPLIT
    evaluations = []
    for architecture in architectures:
        run = TrainingRun(graph, architecture, data, space, request["seed"], steps)
        figures = dict(
            zip(("accuracy", "loss"), evaluate(run.model, data, split), strict=True)
            if run.advance(steps)
            else {}
        )
        evaluations.append(
            {
                "architecture": architecture,
                "steps": run.step,
                "status": "completed" if figures else "diverged",
                "seconds": round(run.seconds, 3),
                **figures,
            }
        )
    return {
        "node": worker_node(),
        "code_version": code_version(),
        "split": split,
        "evaluations": evaluations,
    }


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    try:
        report = retune_trial(config["request"])
    except Exception as e:
        report = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:500]}
    tune.report({"report": json.dumps(report)})


# -- in the driver -------------------------------------------------------------------------


class _Retune:
    """The driver's side: one OptunaSearch per layer, then each layer's final seeds."""

    def __init__(self, store: Any, plan: RetunePlan, on_event: Callable[[str], None]) -> None:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study
        self.store, self.plan, self.on_event = store, plan, on_event
        s = plan.settings
        n, self.trials_per_layer = len(plan.layers), s["lr_trials"]
        base = plan.space.training.learning_rate
        self.optuna = [
            OptunaSearch(
                space={
                    "learning_rate": optuna.distributions.FloatDistribution(
                        *s["lr_range"], log=True
                    )
                },
                metric="accuracy",
                mode="max",
                points_to_evaluate=[{"learning_rate": base}],
                # TPE proper after half the trials (Optuna's default waits for 10 random ones).
                sampler=optuna.samplers.TPESampler(
                    seed=0, n_startup_trials=max(1, s["lr_trials"] // 2)
                ),
            )
            for _ in range(n)
        ]
        self.asked = [0] * n
        self.tried: list[list[tuple[float, float | None]]] = [[] for _ in range(n)]
        self.seeds_left = [list(s["seeds"]) for _ in range(n)]
        self.finals: list[dict[int, dict[str, Any]]] = [{} for _ in range(n)]
        self.running: dict[str, tuple[int, str, float, int]] = {}

    def best(self, i: int) -> float:
        """The learning rate of the best trial (the first of equals); the space's own
        when every trial failed."""
        done = [
            (accuracy, -k, lr)
            for k, (lr, accuracy) in enumerate(self.tried[i])
            if accuracy is not None
        ]
        return max(done)[2] if done else self.plan.space.training.learning_rate

    # The search driver's Ray Tune searcher (tuner._searcher) calls these three.
    def finished(self) -> bool:
        return not any(self.seeds_left)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for i, left in enumerate(self.seeds_left):  # finish a layer before starting another
            if left and len(self.tried[i]) == self.trials_per_layer:
                return self._start(trial_id, i, "final", self.best(i), left.pop(0))
        for i in range(len(self.plan.layers)):
            if self.asked[i] < self.trials_per_layer:
                self.asked[i] += 1
                lr = self.optuna[i].suggest(trial_id)["learning_rate"]
                return self._start(trial_id, i, "lr", lr, 0)
        return None  # until a layer's learning-rate trials are done

    def _start(self, trial_id: str, i: int, phase: str, lr: float, seed: int) -> dict[str, Any]:
        self.running[trial_id] = (i, phase, lr, seed)
        s = self.plan.search
        return {
            "request": {
                "graph": self.plan.layers[i].graph,
                "space": s.space,
                "dataset": s.dataset,
                "data_dir": s.data_dir,
                "preset": s.preset,
                "phase": phase,
                "learning_rate": lr,
                "seed": seed,
                "steps": self.plan.settings["steps"],
            }
        }

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        i, phase, lr, seed = self.running.pop(trial_id)
        ok = result and "report" in result and not error
        report = json.loads(result["report"]) if ok else {}
        report.setdefault("error", None if report else "its process died")
        label = self.plan.layers[i].label
        if phase == "lr":
            accuracy = report.get("accuracy")
            self.optuna[i].on_trial_complete(
                trial_id,
                None if accuracy is None else {"accuracy": accuracy},
                error=accuracy is None,
            )
            self.tried[i].append((lr, accuracy))
            outcome = (
                f"failed: {report['error']}"
                if accuracy is None
                else (f"val accuracy {accuracy:.4f}")
            )
            self.on_event(
                f"{label}: lr trial {len(self.tried[i])}/{self.trials_per_layer}, "
                f"lr {lr:.4g}: {outcome}"
            )
            return
        self.finals[i][seed] = report
        runs = report.get("evaluations") or []
        outcome = ", ".join(
            f"{e['architecture']} "
            + (e["status"] if e.get("accuracy") is None else f"{e['accuracy']:.4f}")
            for e in runs
        )
        self.on_event(
            f"{label}: seed {seed} at lr {lr:.4g}: "
            + (
                f"{report.get('split')} accuracy {outcome}"
                if runs
                else f"failed: {report['error']}"
            )
        )
        if len(self.finals[i]) == len(self.plan.settings["seeds"]):
            self._record(i)

    def _record(self, i: int) -> None:
        """The layer's final runs and its retune record, in one transaction."""
        layer, space = self.plan.layers[i], self.plan.space
        splits = {r["split"] for r in self.finals[i].values() if "split" in r}
        split = splits.pop() if len(splits) == 1 else None
        with self.store.batch():
            for seed, report in sorted(self.finals[i].items()):
                runs = report.get("evaluations") or [
                    {"architecture": a, "steps": 0, "status": "failed", "seconds": 0.0}
                    for a in space.proxy.architectures
                ]
                for e in runs:
                    self.store.add_evaluation(
                        layer.candidate,
                        dataset=space.proxy.dataset,
                        preset=space.proxy.preset,
                        seed=seed,
                        stage="retune",
                        node=report.get("node"),
                        code_version=report.get("code_version"),
                        **e,
                    )
            self.store.set_retune(
                layer.candidate,
                {
                    **self.plan.settings,
                    "learning_rate": self.best(i),
                    "base_learning_rate": space.training.learning_rate,
                    "trials": [{"learning_rate": lr, "accuracy": a} for lr, a in self.tried[i]],
                    "split": split,
                    "search": self.plan.search.name,
                },
            )
        means = [
            statistics.fmean(e["accuracy"] for e in r["evaluations"])
            for r in self.finals[i].values()
            if r.get("evaluations") and all(e.get("accuracy") is not None for e in r["evaluations"])
        ]
        summary = (
            f"{statistics.fmean(means):.4f} mean over {len(means)} complete seeds"
            if means
            else "no seed completed"
        )
        self.on_event(
            f"{layer.label}: done at lr {self.best(i):.4g}: {summary} (on {split or '-'}), recorded"
        )


def run_retune(
    store: Any,
    plan: RetunePlan,
    *,
    workers: int = 1,
    gpus_per_trial: float = 0.0,
    address: str | None = None,
    on_event: Callable[[str], None] | None = None,
) -> list[str]:
    """Train ``plan``'s layers on Ray Tune (local, or the cluster at ``address``) and
    record them in ``store`` (writable), each layer once its seeds are done.  Returns the
    labels of the layers left unfinished (none unless interrupted)."""
    if not plan.layers:
        return []
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    retune = _Retune(store, plan, on_event or (lambda line: None))
    # Interrupted, the layers recorded so far stay; the others are trained by a re-run.
    tune_run(
        _trainable,
        retune,
        name="retune",
        scratch_prefix="evonorm-retune-",
        workers=workers,
        resources={"cpu": 1, "gpu": gpus_per_trial},
        cpus=workers,
        max_failures=2,
        address=address,
    )
    seeds = len(plan.settings["seeds"])
    return [
        layer.label
        for layer, finals in zip(plan.layers, retune.finals, strict=True)
        if len(finals) < seeds
    ]
