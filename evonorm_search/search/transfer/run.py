"""Running a transfer in the driver: the learning-rate sweep, then the seeds, as units that
resume from the database."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from evonorm_search.search.transfer.plan import (
    RETRIES,
    STAGE,
    SWEEP_SEED,
    TRANSFER_KEY,
    WORKER,
    TransferLayer,
    TransferPlan,
    comparable_settings,
    record_plan,
)
from evonorm_search.search.units import Unit, decode_bytes, encode_bytes, run_units


def stored_runs(store: Any, candidate: int, key: str) -> dict[tuple[str, str, int, float], dict]:
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


def chosen_rate(
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
            layer.candidate: stored_runs(store, layer.candidate, self.key) for layer in plan.layers
        }

    def _rate(self, layer: TransferLayer, network: str) -> float | None:
        return chosen_rate(self.plan.settings, self.done[layer.candidate], network)

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
                "settings": comparable_settings(self.plan.settings),
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
            "settings": comparable_settings(self.plan.settings),
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
        self.done[r["candidate"]] = stored_runs(self.store, r["candidate"], self.key)


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
