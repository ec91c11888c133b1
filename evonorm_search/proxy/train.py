"""Short proxy training of a candidate layer, with quality rejection and divergence handling.

One run trains one proxy architecture with the candidate at every normalization site:
SGD with Nesterov momentum and weight decay, the learning rate on a cosine from its initial
value to 0 over ``steps``, batches and augmentation on the training device.  All settings
come from the search space (``[training]``, ``[proxy]``, ``[rejection]``).

A candidate's training runs in stages (``CandidateTraining``), each cheaper than the next
and each able to stop it: the learning signal (the first ``[signal] steps`` on the first,
cheapest architecture: is the loss falling, is the gradient at the input neither vanishing
nor exploding, do the outputs still differ between images), the quality check (at
``quality_steps`` every architecture is validated; below ``quality_accuracy`` the run stops
as ``rejected``: the EvoNorm paper's 20% on CIFAR-10 after 100 steps, twice chance), then
full training.  The signal stage only watches the first steps of the run the quality check
continues, so it changes nothing that training measures.  A non-finite training loss stops a
run at once as ``diverged``: never an exception.  On a CPU a run is deterministic for its
seed; on CUDA it uses bfloat16 autocast and channels_last.
"""

from __future__ import annotations

import copy
import dataclasses
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

__all__ = [
    "CandidateTraining",
    "SignalResult",
    "TrainResult",
    "evaluate",
    "quality_check",
    "signal_problem",
    "train",
    "train_candidate",
]

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
def evaluate(
    model: nn.Module, data: Dataset, split: str = "val", *, batch_statistics: bool = False
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a split, in eval mode; with ``batch_statistics``
    a copy of the model in train mode instead (each evaluation batch normalized by its own
    statistics, the running estimates unused and left alone): the gap between the two
    measures how far a layer's running estimates are from what it trained with."""
    if batch_statistics:
        model = copy.deepcopy(model)
    was_training = model.training
    model.train(batch_statistics)
    correct, loss, count = 0, 0.0, 0
    for images, labels in data.evaluation_batches(split):
        with _autocast(images.device):
            logits = model(_layout(images))
        loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    model.train(was_training)
    return correct / count, loss / count


class TrainingRun:
    """A resumable training run of one architecture."""

    def __init__(
        self,
        graph: LayerGraph,
        architecture: str,
        data: Dataset,
        space: SearchSpace,
        seed: int,
        steps: int,
        backend: str = "auto",
    ) -> None:
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
            model = build(
                architecture,
                lambda c: GraphNormAct(graph, c, groups=groups, backend=backend),
                preset=space.proxy.preset,
                in_channels=data.channels,
                num_classes=data.num_classes,
                image_size=data.size,
            )
        self.model = model.to(data.device)
        if data.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        t = space.training
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=t.learning_rate,
            momentum=t.momentum,
            nesterov=t.momentum > 0,
            weight_decay=t.weight_decay,
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        generator = torch.Generator(device=data.device).manual_seed(seed)
        self.batches = data.batches(t.batch_size, generator)

    def advance(self, until: int, watch: _Watch | None = None) -> bool:
        """Train up to step ``until``; False when the loss became non-finite.  ``watch``
        records the learning signal of these steps (the updates are the same with it)."""
        self.model.train()
        start = time.perf_counter()
        try:
            while self.step < until:
                images, labels = next(self.batches)
                probe = watch is not None and watch.probes(self.step, until)
                if probe:  # the gradient at the input, for this step only
                    images = images.detach().requires_grad_(True)
                with _autocast(images.device):
                    logits = self.model(_layout(images)).float()
                    loss = F.cross_entropy(logits, labels)
                if not torch.isfinite(loss):
                    self.train_loss = loss.item()
                    return False
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.schedule.step()
                self.step += 1
                self.train_loss = loss.item()
                if watch is not None:
                    watch.losses.append(self.train_loss)
                    if probe:
                        watch.record(images.grad, logits.detach())
            return True
        finally:
            self.seconds += time.perf_counter() - start

    def result(self, status: Status, **figures: float | None) -> TrainResult:
        return TrainResult(
            self.architecture,
            status,
            self.step,
            self.seconds,
            train_loss=self.train_loss,
            **figures,
        )

    def state_dict(self) -> dict[str, object]:
        """Everything the run's next steps depend on (weights and running estimates, the
        optimizer's momentum, the schedule, the batch stream), for a checkpoint."""
        return {
            "step": self.step,
            "seconds": self.seconds,
            "train_loss": self.train_loss,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "batches": self.batches.state_dict(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue from ``state_dict()``'s checkpoint, on exactly the steps it would have
        taken next (bitwise on a CPU)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.batches.load_state_dict(state["batches"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.train_loss = state["train_loss"]


class _Watch:
    """The learning signal of a run's first steps: every step's loss, and at the first and
    the last step the gradient at the input and the spread of the outputs."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.input_gradients: list[float] = []  # RMS of dL/dx per element (x: the images)
        self.output_spreads: list[float] = []  # logits' std over the batch / their RMS

    def probes(self, step: int, until: int) -> bool:
        return step == 0 or step == until - 1

    def record(self, gradient: torch.Tensor | None, logits: torch.Tensor) -> None:
        g = 0.0 if gradient is None else gradient.float().pow(2).mean().sqrt().item()
        rms = logits.pow(2).mean().sqrt().item()
        spread = logits.std(0).mean().item() / rms if rms > 0 else 0.0
        self.input_gradients.append(g)
        self.output_spreads.append(spread)


@dataclass(frozen=True)
class SignalResult:
    """The learning-signal stage of one candidate: ``status`` ``passed``, ``rejected``
    (``reason`` says why) or ``diverged``, with the figures it decided on."""

    architecture: str
    status: Literal["passed", "rejected", "diverged"]
    steps: int
    seconds: float
    loss_drop: float | None = None  # mean loss of the first `window` steps minus the last
    input_gradient: tuple[float, ...] = ()  # at the first and the last step
    output_spread: tuple[float, ...] = ()
    losses: tuple[float, ...] = ()
    reason: str | None = None

    def figures(self) -> dict[str, object]:
        """JSON-able, as the store keeps them."""
        return {
            "architecture": self.architecture,
            "status": self.status,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "loss_drop": self.loss_drop,
            "input_gradient": list(self.input_gradient),
            "output_spread": list(self.output_spread),
            "losses": [round(v, 5) for v in self.losses],
            "reason": self.reason,
        }


def signal_problem(result: SignalResult, space: SearchSpace) -> str | None:
    """Why ``result`` shows no learning signal under the space's ``[signal]`` thresholds, or
    None.  Kept apart from the measurement so that a calibration can replay thresholds."""
    t = space.signal
    if result.loss_drop is not None and result.loss_drop < t.min_loss_drop:
        return (
            f"loss not falling on {result.architecture}: dropped {result.loss_drop:.3f} "
            f"< {t.min_loss_drop:g} over {result.steps} steps"
        )
    if not all(map(math.isfinite, (*result.input_gradient, *result.output_spread))):
        return f"non-finite gradient or outputs on {result.architecture}"
    low, high = min(result.input_gradient, default=1.0), max(result.input_gradient, default=1.0)
    if low < t.min_input_gradient:
        return f"vanishing gradient at the input: {low:.3g} < {t.min_input_gradient:g}"
    if high > t.max_input_gradient:
        return f"exploding gradient at the input: {high:.3g} > {t.max_input_gradient:g}"
    spread = min(result.output_spread, default=1.0)
    if spread < t.min_output_spread:
        return f"outputs collapsed: spread {spread:.3g} < {t.min_output_spread:g}"
    return None


def _layout(images: torch.Tensor) -> torch.Tensor:
    if images.device.type == "cuda":
        return images.contiguous(memory_format=torch.channels_last)
    return images


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _checkpoint(run: TrainingRun, space: SearchSpace) -> TrainResult | None:
    """Train to the quality checkpoint: a final result (rejected or diverged), or None."""
    if not run.advance(min(space.training.quality_steps, run.total)):
        return run.result("diverged")
    accuracy, loss = evaluate(run.model, run.data)
    run.quality_accuracy, run.quality_loss = accuracy, loss
    if accuracy < space.rejection.quality_accuracy:
        return run.result("rejected", accuracy=accuracy, loss=loss, quality_accuracy=accuracy)
    return None


def _finish(run: TrainingRun) -> TrainResult:
    if not run.advance(run.total):
        return run.result("diverged", quality_accuracy=run.quality_accuracy)
    accuracy, loss = evaluate(run.model, run.data)
    return run.result(
        "completed", accuracy=accuracy, loss=loss, quality_accuracy=run.quality_accuracy
    )


def train(
    graph: LayerGraph,
    architecture: str,
    data: Dataset,
    *,
    space: SearchSpace,
    seed: int = 0,
    steps: int | None = None,
) -> TrainResult:
    """Train ``architecture`` with ``graph`` at every site on ``data`` for ``steps``
    (default: the space's), checking quality at ``quality_steps``."""
    run = TrainingRun(graph, architecture, data, space, seed, steps or space.training.steps)
    return _checkpoint(run, space) or _finish(run)


def quality_check(
    graph: LayerGraph, architecture: str, data: Dataset, *, space: SearchSpace, seed: int = 0
) -> TrainResult:
    """Train only to the quality checkpoint: ``rejected``, ``diverged``, or ``completed``
    with the checkpoint's validation figures."""
    run = TrainingRun(graph, architecture, data, space, seed, space.training.steps)
    return _checkpoint(run, space) or run.result(
        "completed",
        accuracy=run.quality_accuracy,
        loss=run.quality_loss,
        quality_accuracy=run.quality_accuracy,
    )


class CandidateTraining:
    """A candidate trained on every architecture of its space, in stages that each may stop
    it: ``signal`` (the first steps on the first architecture), ``quality`` (every
    architecture to the quality checkpoint, in the space's order, which is cheapest first),
    ``finish`` (every architecture on to ``steps``).  A network is built when its stage first
    needs it, so a candidate stopped early costs no other network's construction; a run
    continues from where the previous stage left it."""

    def __init__(
        self,
        graph: LayerGraph,
        data: Dataset,
        *,
        space: SearchSpace,
        seed: int = 0,
        steps: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.graph, self.data, self.space, self.seed = graph, data, space, seed
        self.total = steps or space.training.steps
        self.backend = backend
        self.architectures = tuple(space.proxy.architectures)
        self._runs: dict[str, TrainingRun] = {}

    def run(self, architecture: str) -> TrainingRun:
        if architecture not in self._runs:
            self._runs[architecture] = TrainingRun(
                self.graph, architecture, self.data, self.space, self.seed, self.total, self.backend
            )
        return self._runs[architecture]

    def signal(self) -> SignalResult:
        """Train the first architecture for ``[signal] steps`` (at most to the quality
        checkpoint), measuring; ``status`` says whether the space's thresholds pass it."""
        t = self.space.signal
        run = self.run(self.architectures[0])
        steps = min(t.steps, self.space.training.quality_steps, self.total)
        watch = _Watch()
        if not run.advance(steps, watch):
            reason = f"diverged on {run.architecture} at step {run.step}"
            return SignalResult(
                run.architecture,
                "diverged",
                run.step,
                run.seconds,
                losses=tuple(watch.losses),
                reason=reason,
            )
        window = max(1, min(t.window, steps // 2))
        losses = watch.losses
        drop = sum(losses[:window]) / window - sum(losses[-window:]) / window
        result = SignalResult(
            run.architecture,
            "passed",
            run.step,
            run.seconds,
            drop,
            tuple(watch.input_gradients),
            tuple(watch.output_spreads),
            tuple(losses),
        )
        problem = signal_problem(result, self.space)
        if problem is None:
            return result
        return dataclasses.replace(result, status="rejected", reason=problem)

    def quality(self, on_result: Callable[[TrainResult], None] | None = None) -> TrainResult | None:
        """Every architecture to the quality checkpoint: the first that was rejected or
        diverged (the others are not trained), or None when all passed."""
        for architecture in self.architectures:
            stopped = _checkpoint(self.run(architecture), self.space)
            if stopped is not None:
                if on_result:
                    on_result(stopped)
                return stopped
        return None

    def finish(
        self, on_result: Callable[[TrainResult], None] | None = None
    ) -> dict[str, TrainResult]:
        """Every architecture on to ``steps`` (after ``quality``)."""
        results = {}
        for architecture in self.architectures:
            results[architecture] = _finish(self.run(architecture))
            if on_result:
                on_result(results[architecture])
        return results


def train_candidate(
    graph: LayerGraph,
    data: Dataset,
    *,
    space: SearchSpace,
    seed: int = 0,
    steps: int | None = None,
    on_result: Callable[[TrainResult], None] | None = None,
    backend: str = "auto",
) -> dict[str, TrainResult]:
    """Train the candidate on every architecture of the space: all of them to the quality
    checkpoint first, then on to ``steps`` only if none was rejected or diverged (so that a
    candidate that fails on one network costs no full training on another).  ``backend``:
    the layer's (``GraphNormAct``); ``auto`` runs the fused kernels on a GPU and the eager
    layer on a CPU, the faster there (``benchmarks/proxy.py backends``)."""
    training = CandidateTraining(graph, data, space=space, seed=seed, steps=steps, backend=backend)
    stopped = training.quality(on_result)
    if stopped is not None:
        return {stopped.architecture: stopped}
    return training.finish(on_result)
