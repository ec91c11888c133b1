"""One trial: a screened candidate's compile stage and proxy training, run on a worker.

The worker never touches the database (the driver is its only writer): ``run_trial`` takes a
plain request and returns a plain, JSON-able report of what happened, which the driver
records.  Compiling takes seconds, so it runs here, inside the trial, not in the driver's
loop.  Datasets are loaded once per worker process and kept.

The stages, each able to stop the candidate: the learning signal, the quality check and
full training (``proxy.train.CandidateTraining``), and the compile stage.  Where training runs
the fused kernels (a CUDA trial) the kernels must exist first, so compiling comes first;
where it runs the eager layer (a CPU trial) compiling comes after the quality check, so that
kernels are built only for layers that go on to full training (``compile_order``).
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

from evonorm_search.graph import LayerGraph
from evonorm_search.provenance import code_version
from evonorm_search.space import SearchSpace, load_space

__all__ = ["COMPILE_ORDERS", "TrialRequest", "compiles_first", "effective_space", "run_trial"]

COMPILE_ORDERS = ("auto", "first", "after-quality")


def compiles_first(order: str, device: str) -> bool:
    """Whether a trial on ``device`` (``cuda`` or ``cpu``) compiles before it trains:
    ``auto`` does where training runs the fused kernels, that is on CUDA."""
    if order not in COMPILE_ORDERS:
        raise ValueError(
            f"unknown compile order {order!r} (choose from {', '.join(COMPILE_ORDERS)})"
        )
    return order == "first" or (order == "auto" and device == "cuda")


def effective_space(space: str, dataset: str, preset: str | None) -> SearchSpace:
    """The space a search trains with: its file, with the dataset and preset the search
    chose.  A dataset other than the file's validates on that dataset's default split (the
    file's size suits its own dataset: 2,000 images are more than the digits hold)."""
    loaded = load_space(space)
    proxy = loaded.proxy
    signal = loaded.signal
    if dataset != proxy.dataset:
        from evonorm_search.proxy.data import DEFAULT_VALIDATION
        from evonorm_search.space import SignalThresholds

        proxy = dataclasses.replace(proxy, dataset=dataset, validation=DEFAULT_VALIDATION[dataset])
        # The learning-signal thresholds were calibrated on the file's dataset: measured
        # here, not applied.
        signal = SignalThresholds(steps=signal.steps, window=signal.window)
    if preset and preset != proxy.preset:
        proxy = dataclasses.replace(proxy, preset=preset)
    return dataclasses.replace(loaded, proxy=proxy, signal=signal)


@dataclass(frozen=True)
class TrialRequest:
    candidate: int
    graph: str  # graph JSON
    space: str  # a space name or a TOML path
    dataset: str
    data_dir: str | None
    preset: str | None
    seed: int
    verify: bool = True  # check the kernels against the eager layer in the interpreter
    compile_order: str = "auto"  # COMPILE_ORDERS
    signal_stage: bool = True  # reject at the learning-signal stage (it is measured anyway)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def trial_dataset(name: str, data_dir: str | None, validation: int, device: str) -> Any:
    from evonorm_search.proxy.data import load_dataset

    return load_dataset(name, root=data_dir, validation=validation, device=device)


def worker_node() -> str:
    """The Ray node this runs on (its node id), or this machine's name outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return platform.node()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_trial(request: dict[str, Any]) -> dict[str, Any]:
    """Compile and train the candidate on every architecture of its space, stage by stage.

    The report: ``status`` (``trained``; ``rejected`` at stage ``compile``, ``signal`` or
    ``quality``; ``failed`` when training diverged), ``reason``, ``stages`` (those run, in
    order), ``compiled`` (figures), ``signal`` (the learning signal's figures),
    ``evaluations`` (one per architecture run), ``scores`` (for a trained candidate),
    ``seconds`` per stage (``compile``, ``signal``, ``quality``, ``training``: disjoint) and
    the ``node`` it ran on."""
    from evonorm_search.proxy.train import CandidateTraining

    r = TrialRequest(**request)
    space = effective_space(r.space, r.dataset, r.preset)
    graph = LayerGraph.from_json(r.graph)
    device = _device()
    report: dict[str, Any] = {
        "candidate": r.candidate,
        "node": worker_node(),
        "code_version": code_version(),
        "seconds": {},
        "stages": [],
    }
    seconds = report["seconds"]

    def stop(status: str, stage: str, reason: str) -> dict[str, Any]:
        return {**report, "status": status, "stage": stage, "reason": reason}

    first = compiles_first(r.compile_order, device)
    if first and (rejection := _compile(graph, space, r, report)):
        return stop("rejected", "compile", rejection)
    data = trial_dataset(space.proxy.dataset, r.data_dir, space.proxy.validation, device)
    training = CandidateTraining(graph, data, space=space, seed=r.seed)
    report["stages"].append("signal")
    clock = time.perf_counter()
    signal = training.signal()
    report["signal"] = signal.figures()
    seconds["signal"], clock = _since(clock)
    if signal.status == "diverged":
        return stop("failed", "signal", signal.reason or "diverged")
    if signal.status == "rejected" and r.signal_stage:
        return stop("rejected", "signal", signal.reason or "no learning signal")
    report["stages"].append("quality")
    stopped = training.quality()
    seconds["quality"], clock = _since(clock)
    if stopped is not None:
        report["evaluations"] = [_evaluation(stopped)]
        if stopped.status == "diverged":
            return stop(
                "failed", "quality", f"diverged on {stopped.architecture} at step {stopped.steps}"
            )
        return stop(
            "rejected",
            "quality",
            f"below the quality threshold on {stopped.architecture}: "
            f"{stopped.accuracy:.3f} < {space.rejection.quality_accuracy:g} at step "
            f"{stopped.steps}",
        )
    if not first and (rejection := _compile(graph, space, r, report)):
        return stop("rejected", "compile", rejection)
    report["stages"].append("training")
    clock = time.perf_counter()
    runs = training.finish()
    seconds["training"], _ = _since(clock)
    report["evaluations"] = [_evaluation(run) for run in runs.values()]
    stopped_runs = [run for run in runs.values() if run.status != "completed"]
    if stopped_runs:  # only divergence stops a run after the quality check
        run = stopped_runs[0]
        return stop("failed", "training", f"diverged on {run.architecture} at step {run.steps}")
    report["scores"] = {a: run.accuracy for a, run in runs.items()}
    return {**report, "status": "trained"}


def _compile(
    graph: LayerGraph, space: SearchSpace, r: TrialRequest, report: dict[str, Any]
) -> str | None:
    """The compile stage, into ``report``: None, or why the layer was rejected."""
    from evonorm_search.codegen.compiler import compile_layer

    c = space.compile
    report["stages"].append("compile")
    result = compile_layer(
        graph,
        target=c.target,
        shape=tuple(c.reference_shape),
        dtype=c.dtype,
        groups=space.proxy.groups,
        verify=r.verify,
    )
    report["seconds"]["compile"] = result.seconds
    if not result.ok:
        return result.reason
    report["compiled"] = result.figures()
    return None


def _since(start: float) -> tuple[float, float]:
    """Seconds since ``start`` (rounded), and now."""
    now = time.perf_counter()
    return round(now - start, 3), now


def _evaluation(run: Any) -> dict[str, Any]:
    return {
        "architecture": run.architecture,
        "status": run.status,
        "steps": run.steps,
        "seconds": round(run.seconds, 3),
        "accuracy": run.accuracy,
        "loss": run.loss,
        "quality_accuracy": run.quality_accuracy,
    }
