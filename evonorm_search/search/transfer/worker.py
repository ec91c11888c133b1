"""One transfer run on a worker: a layer trained from scratch on a network, checkpointed
through the driver, read on transfer-validation and transfer-test at the end."""

from __future__ import annotations

import dataclasses
import io
import time
from typing import Any

from evonorm_search.search.units import decode_bytes, encode_bytes
from evonorm_search.space import TrainingBudget


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
