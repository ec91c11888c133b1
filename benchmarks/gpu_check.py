"""The GPU path, proved in one run on a machine with a CUDA device (under 5 minutes).

    python benchmarks/gpu_check.py [--steps 300] [--skip-kernels] [--skip-search]

Nothing of the fused-kernel training path had run on a GPU before this script; it is what a
lent device runs first (``scripts/gpu_check.sh`` runs it, writing under ``$OUT``).  Three
checks, one table, exit status 1 on any mismatch (2 without a CUDA device):

1. ``kernels``: ``benchmarks/kernels.py gpu``, the fused layer against the eager one,
   ``torch.compile`` and the native layers (its own table; fails if it fails).
2. ``training``: the zoo layers bn_relu, gn_relu, evonorm_b0 and evonorm_s0 trained on the
   digits (resnet, tiny preset, ``--steps``) with the triton backend, the eager layer and,
   where one exists, the native torch layer, two seeds each: mean validation accuracy per
   backend (the fused layer must match the eager one within ``TOLERANCE``; it runs in
   bfloat16 autocast like the others) and milliseconds per step.
3. ``search``: a small search (``benchmarks/strategies.toml``'s short proxy on the digits, 4
   trained candidates, 2 workers, ``--gpus-per-trial 0.5``) run through the command line:
   it must complete, and every trained candidate must have its compile figures and
   evaluations recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 0.03  # accuracy, triton against eager, mean over seeds
LAYERS = ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0")
SEEDS = (0, 1)
ROOT = Path(__file__).resolve().parents[1]

# The strategy benchmark's short proxy on the digits (two architectures, 120 steps).
SEARCH_SPACE = ROOT / "benchmarks" / "strategies.toml"


def native(name: str):
    """The torch layer a zoo layer stands for, where there is one."""
    from torch import nn

    return {
        "bn_relu": lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()),
        "gn_relu": lambda c: nn.Sequential(nn.GroupNorm(4, c), nn.ReLU()),
    }.get(name)


def train_once(factory, data, space, seed: int, steps: int) -> tuple[float, float]:
    """Validation accuracy after ``steps`` and milliseconds per step (after a warm-up)."""
    import torch

    from evonorm_search.proxy.models import build
    from evonorm_search.proxy.train import evaluate

    # The proxy's optimiser at a constant rate: the same for every backend, any factory.
    torch.manual_seed(seed)
    model = build(
        "resnet",
        factory,
        preset="tiny",
        in_channels=data.channels,
        num_classes=data.num_classes,
        image_size=data.size,
    ).cuda()
    t = space.training
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=t.learning_rate,
        momentum=t.momentum,
        nesterov=True,
        weight_decay=t.weight_decay,
    )
    generator = torch.Generator(device=data.device).manual_seed(seed)
    batches = data.batches(t.batch_size, generator)
    model.train()
    start = None
    for step in range(steps):
        if step == 10:
            torch.cuda.synchronize()
            start = time.perf_counter()
        images, labels = next(batches)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / (steps - 10) * 1000
    accuracy, _ = evaluate(model, data)
    return accuracy, ms


def check_training(steps: int) -> list[dict]:
    from evonorm_search import baselines
    from evonorm_search.layer import GraphNormAct
    from evonorm_search.proxy.data import load_dataset
    from evonorm_search.space import load_space

    space = load_space("evonorm_b")
    data = load_dataset("digits", validation=200, device="cuda")
    rows = []
    for name in LAYERS:
        graph = baselines.get(name)
        factories = {
            "triton": lambda c, g=graph: GraphNormAct(g, c, groups=4, backend="triton"),
            "eager": lambda c, g=graph: GraphNormAct(g, c, groups=4, backend="eager"),
        }
        if native(name):
            factories["native"] = native(name)
        figures = {}
        for backend, factory in factories.items():
            runs = [train_once(factory, data, space, seed, steps) for seed in SEEDS]
            figures[backend] = (
                statistics.mean(a for a, _ in runs),
                statistics.mean(ms for _, ms in runs),
            )
        gap = abs(figures["triton"][0] - figures["eager"][0])
        rows.append(
            {
                "check": f"training {name}",
                "ok": gap <= TOLERANCE,
                "figures": "; ".join(
                    f"{b} {a:.3f} acc, {ms:.1f} ms/step" for b, (a, ms) in figures.items()
                )
                + f"; |triton - eager| {gap:.3f} (tolerance {TOLERANCE})",
            }
        )
        print(rows[-1], flush=True)
    return rows


def check_kernels(out: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "gpu"],
        env={**os.environ, "OUT": str(out)},
    )
    return {
        "check": "kernels (benchmarks/kernels.py gpu)",
        "ok": done.returncode == 0,
        "figures": f"exit {done.returncode} in {time.perf_counter() - start:.0f} s; "
        f"figures in {out}/kernels_gpu.json",
    }


def check_search(out: Path) -> dict:
    import sqlite3

    directory = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    url = f"sqlite:///{directory / 'search.db'}"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "evonorm_search",
            "run",
            "--name",
            "gpu",
            "--space",
            str(SEARCH_SPACE),
            "--budget",
            "4",
            "--workers",
            "2",
            "--gpus-per-trial",
            "0.5",
            "--initial",
            "baselines",
            "--db",
            url,
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    (out / "search.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {
            "check": "search --gpus-per-trial 0.5",
            "ok": False,
            "figures": f"exit {done.returncode}: {done.stderr.strip()[-300:]}",
        }
    with sqlite3.connect(directory / "search.db") as db:
        trained = db.execute(
            "SELECT id, compiled FROM candidates WHERE status = 'trained'"
        ).fetchall()
        evaluations = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    figures = [json.loads(c) for _, c in trained if c]
    ok = len(trained) == 4 and len(figures) == 4 and evaluations >= 4
    return {
        "check": "search --gpus-per-trial 0.5",
        "ok": ok,
        "figures": f"{len(trained)} trained, {len(figures)} with compile figures, "
        f"{evaluations} evaluations, {seconds:.0f} s",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False): nothing to check here",
            file=sys.stderr,
        )
        return 2
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-out-"))
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"gpu_check on {torch.cuda.get_device_name()}, torch {torch.__version__}; results in {out}",
        flush=True,
    )
    rows = [] if args.skip_kernels else [check_kernels(out)]
    rows += check_training(args.steps)
    if not args.skip_search:
        rows.append(check_search(out))
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    width = max(len(r["check"]) for r in rows)
    print(f"\n{'check':<{width}}  ok    figures")
    for r in rows:
        print(f"{r['check']:<{width}}  {'yes' if r['ok'] else 'NO ':<5} {r['figures']}")
    failed = [r["check"] for r in rows if not r["ok"]]
    print(f"\ngpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
