"""Short proxy training of a candidate layer, with quality rejection and divergence handling.

One run trains one proxy architecture with the candidate at every normalization site:
SGD with Nesterov momentum and weight decay, the learning rate on a cosine from its initial
value to 0 over ``steps``, batches and augmentation on the training device.  All settings
come from the search space (``[training]``, ``[proxy]``, ``[rejection]``).

At ``quality_steps`` the run is validated; below ``quality_accuracy`` it stops as
``rejected`` (the EvoNorm paper: 20% on CIFAR-10 after 100 steps, twice chance).  A
non-finite training loss stops it at once as ``diverged``: never an exception.  On a CPU a
run is deterministic for its seed; on CUDA it uses bfloat16 autocast and channels_last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from evonorm_search.graph import LayerGraph
from evonorm_search.layer import GraphNormAct
from evonorm_search.proxy.data import Dataset
from evonorm_search.proxy.models import build
from evonorm_search.space import SearchSpace

__all__ = ["TrainResult", "evaluate", "quality_check", "train", "train_candidate"]

Status = Literal["completed", "rejected", "diverged"]


@dataclass(frozen=True)
class TrainResult:
    """One architecture's run.  ``accuracy`` and ``loss`` are the last validation figures
    (at the quality checkpoint for a rejected run; None for a run that diverged before)."""

    architecture: str
    status: Status
    steps: int
    seconds: float
    accuracy: float | None = None
    loss: float | None = None
    quality_accuracy: float | None = None
    train_loss: float | None = None  # the last training batch's loss


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "val") -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a split, in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for images, labels in data.evaluation_batches(split):
        with _autocast(images.device):
            logits = model(_layout(images))
        loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    model.train(was_training)
    return correct / count, loss / count


class _Run:
    """A resumable training run of one architecture."""

    def __init__(self, graph: LayerGraph, architecture: str, data: Dataset, space: SearchSpace,
                 seed: int, steps: int, backend: str = "auto") -> None:  # fmt: skip
        self.architecture, self.data, self.space = architecture, data, space
        self.total = steps
        self.step = 0
        self.seconds = 0.0
        self.train_loss: float | None = None
        self.quality_accuracy: float | None = None
        self.quality_loss: float | None = None
        groups = space.proxy.groups
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG alone
            torch.manual_seed(seed)
            model = build(architecture,
                          lambda c: GraphNormAct(graph, c, groups=groups, backend=backend),
                          preset=space.proxy.preset, in_channels=data.channels,
                          num_classes=data.num_classes, image_size=data.size)  # fmt: skip
        self.model = model.to(data.device)
        if data.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        t = space.training
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.learning_rate,
                                         momentum=t.momentum, nesterov=t.momentum > 0,
                                         weight_decay=t.weight_decay)  # fmt: skip
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        generator = torch.Generator(device=data.device).manual_seed(seed)
        self.batches = data.batches(t.batch_size, generator)

    def advance(self, until: int) -> bool:
        """Train up to step ``until``; False when the loss became non-finite."""
        self.model.train()
        start = time.perf_counter()
        try:
            while self.step < until:
                images, labels = next(self.batches)
                with _autocast(images.device):
                    loss = F.cross_entropy(self.model(_layout(images)).float(), labels)
                if not torch.isfinite(loss):
                    self.train_loss = loss.item()
                    return False
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.schedule.step()
                self.step += 1
                self.train_loss = loss.item()
            return True
        finally:
            self.seconds += time.perf_counter() - start

    def result(self, status: Status, **figures: float | None) -> TrainResult:
        return TrainResult(self.architecture, status, self.step, self.seconds,
                           train_loss=self.train_loss, **figures)  # fmt: skip


def _layout(images: torch.Tensor) -> torch.Tensor:
    if images.device.type == "cuda":
        return images.contiguous(memory_format=torch.channels_last)
    return images


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _checkpoint(run: _Run, space: SearchSpace) -> TrainResult | None:
    """Train to the quality checkpoint: a final result (rejected or diverged), or None."""
    if not run.advance(min(space.training.quality_steps, run.total)):
        return run.result("diverged")
    accuracy, loss = evaluate(run.model, run.data)
    run.quality_accuracy, run.quality_loss = accuracy, loss
    if accuracy < space.rejection.quality_accuracy:
        return run.result("rejected", accuracy=accuracy, loss=loss, quality_accuracy=accuracy)
    return None


def _finish(run: _Run) -> TrainResult:
    if not run.advance(run.total):
        return run.result("diverged", quality_accuracy=run.quality_accuracy)
    accuracy, loss = evaluate(run.model, run.data)
    return run.result("completed", accuracy=accuracy, loss=loss,
                      quality_accuracy=run.quality_accuracy)  # fmt: skip


def train(
    graph: LayerGraph, architecture: str, data: Dataset, *, space: SearchSpace, seed: int = 0,
    steps: int | None = None,
) -> TrainResult:  # fmt: skip
    """Train ``architecture`` with ``graph`` at every site on ``data`` for ``steps``
    (default: the space's), checking quality at ``quality_steps``."""
    run = _Run(graph, architecture, data, space, seed, steps or space.training.steps)
    return _checkpoint(run, space) or _finish(run)


def quality_check(
    graph: LayerGraph, architecture: str, data: Dataset, *, space: SearchSpace, seed: int = 0
) -> TrainResult:
    """Train only to the quality checkpoint: ``rejected``, ``diverged``, or ``completed``
    with the checkpoint's validation figures."""
    run = _Run(graph, architecture, data, space, seed, space.training.steps)
    return _checkpoint(run, space) or run.result(
        "completed", accuracy=run.quality_accuracy, loss=run.quality_loss,
        quality_accuracy=run.quality_accuracy,
    )  # fmt: skip


def train_candidate(
    graph: LayerGraph, data: Dataset, *, space: SearchSpace, seed: int = 0,
    steps: int | None = None, on_result: Callable[[TrainResult], None] | None = None,
    backend: str = "auto",
) -> dict[str, TrainResult]:  # fmt: skip
    """Train the candidate on every architecture of the space: all of them to the quality
    checkpoint first, then on to ``steps`` only if none was rejected or diverged (so that a
    candidate that fails on one network costs no full training on another).  ``backend``:
    the layer's (``GraphNormAct``); ``auto`` runs the fused kernels on a GPU and the eager
    layer on a CPU, the faster there (``benchmarks/proxy.py backends``)."""
    total = steps or space.training.steps
    runs = {a: _Run(graph, a, data, space, seed, total, backend)
            for a in space.proxy.architectures}  # fmt: skip
    results: dict[str, TrainResult] = {}
    for architecture, run in runs.items():
        stopped = _checkpoint(run, space)
        if stopped is not None:
            results[architecture] = stopped
            if on_result:
                on_result(stopped)
            return results
    for architecture, run in runs.items():
        results[architecture] = _finish(run)
        if on_result:
            on_result(results[architecture])
    return results
