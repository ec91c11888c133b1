"""One trial: a screened candidate's compile stage and proxy training, run on a worker.

The worker never touches the database (the driver is its only writer): ``run_trial`` takes a
plain request and returns a plain, JSON-able report of what happened, which the driver
records.  Compiling takes seconds, so it runs here, inside the trial, not in the driver's
loop.  Datasets are loaded once per worker process and kept.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

from evonorm_search.graph import LayerGraph
from evonorm_search.space import SearchSpace, load_space

__all__ = ["TrialRequest", "effective_space", "run_trial"]


def effective_space(space: str, dataset: str, preset: str | None) -> SearchSpace:
    """The space a search trains with: its file, with the dataset and preset the search
    chose.  A dataset other than the file's validates on that dataset's default split (the
    file's size suits its own dataset: 2,000 images are more than the digits hold)."""
    loaded = load_space(space)
    proxy = loaded.proxy
    if dataset != proxy.dataset:
        from evonorm_search.proxy.data import DEFAULT_VALIDATION

        proxy = dataclasses.replace(proxy, dataset=dataset,
                                    validation=DEFAULT_VALIDATION[dataset])  # fmt: skip
    if preset and preset != proxy.preset:
        proxy = dataclasses.replace(proxy, preset=preset)
    return dataclasses.replace(loaded, proxy=proxy)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _dataset(name: str, data_dir: str | None, validation: int, device: str) -> Any:
    from evonorm_search.proxy.data import load_dataset

    return load_dataset(name, root=data_dir, validation=validation, device=device)


def _node() -> str:
    """The Ray node this runs on (its node id), or this machine's name outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return platform.node()


def run_trial(request: dict[str, Any]) -> dict[str, Any]:
    """Compile, then train the candidate on every architecture of its space.

    The report: ``status`` (``trained``, ``rejected`` at stage ``compile`` or ``quality``,
    ``failed`` when training diverged), ``reason``, ``compiled`` (figures), ``evaluations``
    (one per architecture run), ``scores`` (for a trained candidate), ``seconds`` per stage
    and the ``node`` it ran on."""
    import torch

    from evonorm_search.codegen.compiler import compile_layer
    from evonorm_search.proxy.train import train_candidate

    r = TrialRequest(**request)
    space = effective_space(r.space, r.dataset, r.preset)
    graph = LayerGraph.from_json(r.graph)
    report: dict[str, Any] = {"candidate": r.candidate, "node": _node(), "seconds": {}}
    c = space.compile
    result = compile_layer(graph, target=c.target, shape=tuple(c.reference_shape),
                           dtype=c.dtype, groups=space.proxy.groups, verify=r.verify)  # fmt: skip
    report["seconds"]["compile"] = result.seconds
    if not result.ok:
        return {**report, "status": "rejected", "stage": "compile", "reason": result.reason}
    report["compiled"] = result.figures()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = _dataset(space.proxy.dataset, r.data_dir, space.proxy.validation, device)
    start = time.perf_counter()
    runs = train_candidate(graph, data, space=space, seed=r.seed)
    report["seconds"]["proxy"] = round(time.perf_counter() - start, 3)
    report["evaluations"] = [
        {"architecture": run.architecture, "status": run.status, "steps": run.steps,
         "seconds": round(run.seconds, 3), "accuracy": run.accuracy, "loss": run.loss,
         "quality_accuracy": run.quality_accuracy}
        for run in runs.values()
    ]  # fmt: skip
    stopped = [run for run in runs.values() if run.status != "completed"]
    if stopped:
        run = stopped[0]
        if run.status == "diverged":
            return {**report, "status": "failed", "stage": "quality",
                    "reason": f"diverged on {run.architecture} at step {run.steps}"}  # fmt: skip
        return {**report, "status": "rejected", "stage": "quality",
                "reason": f"below the quality threshold on {run.architecture}: "
                          f"{run.accuracy:.3f} < {space.rejection.quality_accuracy:g} at step "
                          f"{run.steps}"}  # fmt: skip
    report["scores"] = {a: run.accuracy for a, run in runs.items()}
    return {**report, "status": "trained"}
