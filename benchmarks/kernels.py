"""Fused Triton kernels: ahead-of-time figures, correctness, and CPU and GPU training speed.

    python benchmarks/kernels.py aot     [--random 20]  # sm_90a figures, cold compile s
    python benchmarks/kernels.py verify  [--random 20]  # the kernels against the eager layer
    python benchmarks/kernels.py cpu     [--repeats 20] # eager and inductor training steps
    python benchmarks/kernels.py gpu                    # the fused layer on a CUDA device
    python benchmarks/kernels.py profile                # where a GPU step's time goes
    python benchmarks/kernels.py all     [--random 20]  # aot, verify, cpu (gpu, profile if any)

``aot`` compiles each image baseline, three graphs with nested statistics and random graphs
that pass screening for sm_90a at (128, 64, 56, 56) bf16, each with an empty triton cache,
and prints registers, spills, cold compile seconds and the traffic model: full-size tensor
elements moved per element of x by a training step's forward and backward (at least 2 and
3), for the fused kernels and for the eager layer, counted from the aten ops it runs.
``verify`` runs the interpreter check of the compile stage on the same graphs.  ``cpu``
times forward + backward of eager and inductor layers against the native layers in the
same process.  ``gpu`` (CUDA only) times the fused layer against the eager layer,
``torch.compile`` of it and the native layers, with achieved bandwidth against a plain
copy, peak memory and compile latency.  ``profile`` (CUDA only) splits a training step of
the zoo's layers, fused and eager, into the host's time to enqueue it, the GPU time of its
kernels (torch.profiler) and the step replayed as a CUDA graph (no host in the way).  With
``$OUT`` set, each part also writes its figures to ``$OUT/kernels_<part>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from evonorm_search import GraphNormAct, LayerGraph, baselines
from evonorm_search.codegen import schedule
from evonorm_search.codegen.aot import has_cuda_backend
from evonorm_search.codegen.compiler import MIN_TRAFFIC, compile_layer
from evonorm_search.codegen.verify import SHAPES, TOLERANCE, failed, verify_in_subprocess
from evonorm_search.rejection import screened_random_graphs
from evonorm_search.space import load_space

IMAGE_BASELINES = [n for n in baselines.names() if n not in ("layernorm", "rmsnorm", "dyt")]
NESTED = [
    "x / std_instance(x - mean_group(x * std_layer(x)))",
    "x * sigmoid(v1 * x) / std_group(x - mean_instance(x))",
    "max(x - mean_batch(x), 0) / std_group(x)",
]
AOT_SHAPE = (128, 64, 56, 56)
CPU_SHAPE = (32, 64, 28, 28)
GPU_SHAPES = ((128, 64, 56, 56), (256, 256, 14, 14))
GROUPS = 32
# Each baseline against the native layer it reproduces.
NATIVE_OF = {
    "gn_relu": "GroupNorm + ReLU",
    "evonorm_s0": "GroupNorm + SiLU",
    "evonorm_b0": "BatchNorm2d + ReLU",
    "bn_relu": "BatchNorm2d + ReLU",
}
# Aten ops that return a view or alias of their input: they move no memory.
VIEWS = {
    "view",
    "_unsafe_view",
    "_reshape_alias",
    "reshape",
    "expand",
    "permute",
    "as_strided",
    "t",
    "transpose",
    "detach",
    "alias",
    "squeeze",
    "unsqueeze",
    "select",
    "slice",
    "unflatten",
    "view_as",
    "split",
    "unbind",
    "lift_fresh",
}
# Aten ops that read only their input's metadata (shape, dtype), never its elements.
LIKE = {
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
    "rand_like",
    "randn_like",
}


def natives(c: int) -> dict[str, nn.Module]:
    return {
        "GroupNorm + ReLU": nn.Sequential(nn.GroupNorm(GROUPS, c), nn.ReLU()),
        "GroupNorm + SiLU": nn.Sequential(nn.GroupNorm(GROUPS, c), nn.SiLU()),
        "BatchNorm2d + ReLU": nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()),
    }


def layer_set(random: int) -> list[tuple[str, str, LayerGraph]]:
    """(kind, label, graph): the image baselines, the nested graphs, ``random`` random ones."""
    return (
        [("baseline", n, baselines.get(n)) for n in IMAGE_BASELINES]
        + [("nested", f, LayerGraph.parse(f)) for f in NESTED]
        + [
            ("random", g.formula(), g)
            for g in screened_random_graphs(
                [load_space("evonorm_b"), load_space("evonorm_s")], random
            )
        ]
    )


def short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    """Plain text, the first column left-aligned and the others right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [columns, *cells]) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    print(line(columns))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row), flush=True)


@contextlib.contextmanager
def empty_cache(variable: str) -> Iterator[None]:
    """Point the cache folder named by ``$variable`` at a new, empty one for the block."""
    saved = os.environ.get(variable)
    folder = tempfile.mkdtemp(prefix="evonorm-bench-")
    os.environ[variable] = folder
    try:
        yield
    finally:
        if saved is None:
            del os.environ[variable]
        else:
            os.environ[variable] = saved
        shutil.rmtree(folder, ignore_errors=True)


def save(part: str, data: Any) -> None:
    """``$OUT/kernels_<part>.json`` where ``$OUT`` is set (the device machine's outbox)."""
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"kernels_{part}.json").write_text(json.dumps(data, indent=1))


# -- the eager layer's memory traffic ----------------------------------------------------


class TrafficCounter(TorchDispatchMode):
    """Counts the full-size tensors (numel of x) each aten op reads and writes: elements
    moved per element of x.  Views and aliases move nothing; ``zeros_like`` and the like
    only write."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.units = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not (func.is_view or name in VIEWS):
            moved = pytree.tree_leaves(out if name in LIKE else (args, kwargs, out))
            self.units += sum(
                isinstance(t, torch.Tensor) and t.numel() == self.numel for t in moved
            )
        return out


def eager_traffic(graph: LayerGraph, shape: tuple[int, ...] = (4, 64, 8, 8)) -> tuple[int, int]:
    """Forward and backward traffic of one training step of the eager layer."""
    layer = GraphNormAct(graph, shape[1], groups=GROUPS, backend="eager")
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    with TrafficCounter(x.numel()) as forward:
        y = layer(x)
    with TrafficCounter(x.numel()) as backward:
        y.backward(dy)
    return forward.units, backward.units


# -- aot: sm_90a figures ----------------------------------------------------------------


def cold_compile(graph: LayerGraph, aot: bool) -> tuple[Any, float]:
    """``compile_layer`` with an empty triton cache: every kernel compiles.  Spilling
    kernels are measured here, not refused."""
    with empty_cache("TRITON_CACHE_DIR"):
        start = time.perf_counter()
        result = compile_layer(
            graph,
            target="sm_90a",
            shape=AOT_SHAPE,
            dtype=torch.bfloat16,
            groups=GROUPS,
            aot=aot,
            max_spill_bytes=2**31,
        )
        return result, time.perf_counter() - start


def triton_missing(part: str) -> bool:
    if importlib.util.find_spec("triton") is None:
        print(f"\n== {part}: skipped: triton is not installed ==")
        return True
    return False


def aot_part(random: int) -> list[dict[str, Any]]:
    if triton_missing("aot"):
        return []
    aot = has_cuda_backend()
    print(
        f"\n== aot: sm_90a at {','.join(map(str, AOT_SHAPE))} bf16, groups {GROUPS}, an empty "
        f"triton cache per layer (triton {importlib.metadata.version('triton')}) =="
    )
    if not aot:
        print("the installed triton has no CUDA backend: traffic only, no kernels compiled")
    graphs = layer_set(random)
    cold_compile(baselines.get("relu"), aot)  # warm-up: imports and triton's own start-up
    rows, records = [], []
    for kind, label, graph in graphs:
        result, seconds = cold_compile(graph, aot)
        eager = eager_traffic(graph)
        record = {
            "kind": kind,
            "formula": graph.formula(),
            "cold_s": round(seconds, 3),
            "stages": schedule(graph, training=True).stages,
            "eager_fwd": eager[0],
            "eager_bwd": eager[1],
            "ok": result.ok,
        }
        if not result.ok:
            record["reason"] = result.reason
            rows.append(
                [
                    short(label),
                    "refused",
                    "",
                    "",
                    f"{seconds:.2f}",
                    "",
                    "",
                    f"{eager[0]} / {eager[1]}",
                    short(result.reason, 30),
                ]
            )
        else:
            record.update(result.figures())
            rows.append(
                [
                    short(label),
                    len(result.kernels),
                    result.registers,
                    result.spill_bytes,
                    f"{seconds:.2f}",
                    f"{result.traffic_fwd} / {result.traffic_bwd}",
                    f"{result.traffic_fwd / MIN_TRAFFIC[0]:.1f}x / "
                    f"{result.traffic_bwd / MIN_TRAFFIC[1]:.1f}x",
                    f"{eager[0]} / {eager[1]}",
                    f"{eager[0] / result.traffic_fwd:.1f}x / {eager[1] / result.traffic_bwd:.1f}x",
                ]
            )
        records.append(record)
    print_table(
        [
            "layer",
            "kernels",
            "max regs",
            "max spill B",
            "cold s",
            "fused fwd/bwd",
            "vs min 2/3",
            "eager fwd/bwd",
            "eager/fused",
        ],
        rows,
    )
    compiled = [r for r in records if r["ok"]]
    cold = [r["cold_s"] for r in records]
    single = [r for r in compiled if r["stages"] == 1]
    meeting = sum(r["traffic_fwd"] <= 3 and r["traffic_bwd"] <= 5 for r in single)
    spilling = sum(r["spill_bytes"] > 0 for r in compiled)
    print(
        f"{len(records)} layers ({len(records) - len(compiled)} refused): cold compile median "
        f"{statistics.median(cold):.2f} s, max {max(cold):.2f} s; "
        f"{spilling} layers spill (total {sum(r['spill_bytes'] for r in compiled)} B per "
        f"thread); {meeting} of {len(single)} single-stage layers move forward <= 3 and "
        f"backward <= 5"
    )
    if compiled:
        fwd = statistics.median(r["eager_fwd"] / r["traffic_fwd"] for r in compiled)
        bwd = statistics.median(r["eager_bwd"] / r["traffic_bwd"] for r in compiled)
        print(f"eager / fused traffic, median: {fwd:.1f}x forward, {bwd:.1f}x backward")
    save("aot", records)
    return records


# -- verify: the interpreter check -------------------------------------------------------


def verify_part(random: int) -> list[dict[str, Any]]:
    if triton_missing("verify"):
        return []
    graphs = layer_set(random)
    print(
        f"\n== verify: the fused layer against the eager layer in triton's interpreter "
        f"(tolerance {TOLERANCE:g}, relative to max(|reference|, 1)) =="
    )
    start = time.perf_counter()
    results = verify_in_subprocess([g for _, _, g in graphs])
    seconds = time.perf_counter() - start
    per_graph = 2 * len(SHAPES)  # a check per (shape, mode), in the order of the graphs
    rows = []
    for kind in ("baseline", "nested", "random"):
        mine = [r for i, r in enumerate(results) if graphs[i // per_graph][0] == kind]
        if mine:
            rows.append(
                [
                    kind,
                    len(mine) // per_graph,
                    len(mine),
                    f"{max(r['output'] for r in mine):.1e}",
                    f"{max(r['buffers'] for r in mine):.1e}",
                    f"{max(r['gradients'] for r in mine):.1e}",
                    sum(failed(r) for r in mine),
                ]
            )
    print_table(
        [
            "graphs",
            "count",
            "checks",
            "worst output",
            "worst buffers",
            "worst gradients",
            "failing",
        ],
        rows,
    )
    bad = [r for r in results if failed(r)]
    for r in bad:
        print(
            f"  FAILED {r['formula']} at {tuple(r['shape'])} "
            f"{'train' if r['training'] else 'eval'}: {r}"
        )
    print(f"{len(results)} checks of {len(graphs)} graphs, {len(bad)} failing, {seconds:.0f} s")
    save("verify", results)
    return results


# -- cpu: eager and inductor training steps -----------------------------------------------


def median_step_s(module: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    """Median seconds of one forward + backward on the CPU."""
    x = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    times = []
    for i in range(warmup + repeats):
        x.grad = None
        start = time.perf_counter()
        module(x).backward(dy)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_step_s(module: nn.Module, x: torch.Tensor) -> float:
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    module(x).backward(torch.randn_like(x))
    return time.perf_counter() - start


def cpu_part(repeats: int) -> list[dict[str, Any]]:
    print(
        f"\n== cpu: forward + backward at {','.join(map(str, CPU_SHAPE))} float32, median of "
        f"{repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads; inductor "
        f"with an empty cache =="
    )
    with empty_cache("TORCHINDUCTOR_CACHE_DIR"):
        torch.manual_seed(0)
        x = torch.randn(CPU_SHAPE)
        native_s = {name: median_step_s(m, x, repeats) for name, m in natives(x.shape[1]).items()}
        # Warm-up: inductor's one-time start-up is no layer's compile time.
        first_step_s(GraphNormAct(baselines.get("relu"), x.shape[1], backend="inductor"), x)
        rows, records = [], []
        for name, native in NATIVE_OF.items():
            graph = baselines.get(name)
            eager_s = median_step_s(
                GraphNormAct(graph, x.shape[1], groups=GROUPS, backend="eager"), x, repeats
            )
            inductor = GraphNormAct(graph, x.shape[1], groups=GROUPS, backend="inductor")
            compile_s = first_step_s(inductor, x)
            inductor_s = median_step_s(inductor, x, repeats)
            base = native_s[native]
            records.append(
                {
                    "layer": name,
                    "native": native,
                    "native_ms": base * 1e3,
                    "eager_ms": eager_s * 1e3,
                    "inductor_ms": inductor_s * 1e3,
                    "inductor_first_call_s": compile_s,
                }
            )
            rows.append(
                [
                    name,
                    native,
                    f"{base * 1e3:.2f}",
                    f"{eager_s * 1e3:.2f}",
                    f"{eager_s / base:.1f}x",
                    f"{inductor_s * 1e3:.2f}",
                    f"{inductor_s / base:.1f}x",
                    f"{compile_s:.1f}",
                ]
            )
    print_table(
        [
            "layer",
            "native counterpart",
            "native ms",
            "eager ms",
            "eager/native",
            "inductor ms",
            "inductor/native",
            "inductor first call s",
        ],
        rows,
    )
    save("cpu", records)
    return records


# -- gpu: the fused layer on a CUDA device -------------------------------------------------

# The first training step of a fused layer in a new process: with an empty triton cache it
# compiles every kernel (cold); with the cache a cold run left, it loads them (warm).
FIRST_STEP = """
import json, sys, time, torch
from evonorm_search import GraphNormAct
graph, shape, dtype, groups = json.loads(sys.argv[1])
layer = GraphNormAct(graph, shape[1], groups=groups, backend="triton").cuda()
x = torch.randn(shape, device="cuda", dtype=getattr(torch, dtype), requires_grad=True)
dy = torch.randn_like(x)
torch.cuda.synchronize()
start = time.perf_counter()
layer(x).backward(dy)
torch.cuda.synchronize()
print(time.perf_counter() - start)
"""


def first_step_in_new_process(graph: LayerGraph, shape: tuple[int, ...], dtype: str) -> float:
    arguments = json.dumps([graph.to_json(), list(shape), dtype, GROUPS])
    out = subprocess.run(
        [sys.executable, "-c", FIRST_STEP, arguments], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"first step of {graph.formula()} failed: {out.stderr[-2000:]}")
    return float(out.stdout.split()[-1])


def copy_bandwidth(x: torch.Tensor) -> float:
    """GB/s of ``y.copy_(x)``: what a pass that reads and writes x once can reach."""
    from triton.testing import do_bench

    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), return_mode="median")
    return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9


def gpu_measure(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, float]:
    """Median ms of a training forward and of forward + backward (gradients returned, not
    accumulated, so no extra pass over x.grad), and peak memory above the inputs (MiB)."""
    from triton.testing import do_bench

    x = x.detach().requires_grad_()
    inputs = [x, *module.parameters()]

    def forward() -> None:
        module(x)

    def step() -> None:
        torch.autograd.grad(module(x), inputs, dy, allow_unused=True)

    step()  # compiles the fused kernels (or the rest of torch.compile's work)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return {
        "fwd_ms": do_bench(forward, return_mode="median"),
        "step_ms": do_bench(step, return_mode="median"),
        "peak_mib": peak,
    }


def gpu_record(
    label: str,
    graph: LayerGraph,
    x: torch.Tensor,
    dy: torch.Tensor,
    copy_gbs: float,
    native: dict[str, float] | None,
) -> dict[str, Any]:
    """The fused layer, the eager one and torch.compile of it on ``x``; ``native`` is the
    native counterpart's measurement (None for graphs without one)."""
    c = x.shape[1]
    fused = gpu_measure(GraphNormAct(graph, c, groups=GROUPS, backend="triton").cuda(), x, dy)
    eager = gpu_measure(GraphNormAct(graph, c, groups=GROUPS, backend="eager").cuda(), x, dy)
    # Every GraphNormAct shares one forward code object: a reset keeps dynamo under its
    # recompile limit, past which it would silently run the layer eagerly.
    torch._dynamo.reset()
    compiled_layer = torch.compile(GraphNormAct(graph, c, groups=GROUPS, backend="eager").cuda())
    torch.cuda.synchronize()
    start = time.perf_counter()
    compiled_layer(x.detach().requires_grad_()).backward(dy)
    torch.cuda.synchronize()
    compiled_first_s = time.perf_counter() - start
    compiled = gpu_measure(compiled_layer, x, dy)
    # The traffic of the kernels the fused layer runs at this shape (single-kernel or not).
    model = compile_layer(graph, shape=tuple(x.shape), dtype=x.dtype, groups=GROUPS, aot=False)
    size = x.numel() * x.element_size()
    return {
        "layer": label,
        "shape": list(x.shape),
        "dtype": str(x.dtype).removeprefix("torch."),
        "traffic": [model.traffic_fwd, model.traffic_bwd],
        "copy_gbs": copy_gbs,
        "fused": fused,
        "eager": eager,
        "compiled": compiled,
        "native": native,
        "compiled_first_s": compiled_first_s,
        "fwd_gbs": model.traffic_fwd * size / (fused["fwd_ms"] * 1e-3) / 1e9,
        "step_gbs": (model.traffic_fwd + model.traffic_bwd)
        * size
        / (fused["step_ms"] * 1e-3)
        / 1e9,
    }


def gpu_row(r: dict[str, Any]) -> list[str]:
    fused = r["fused"]

    def versus(other: dict[str, float] | None) -> str:
        if other is None:
            return "-"
        return f"{other['step_ms']:.3f} ({other['step_ms'] / fused['step_ms']:.1f}x)"

    return [
        short(r["layer"], 40),
        "x".join(map(str, r["shape"])),
        r["dtype"],
        f"{fused['fwd_ms']:.3f}",
        f"{fused['step_ms']:.3f}",
        versus(r["eager"]),
        versus(r["compiled"]),
        versus(r["native"]),
        f"{r['fwd_gbs']:.0f} ({r['fwd_gbs'] / r['copy_gbs']:.0%})",
        f"{r['step_gbs']:.0f} ({r['step_gbs'] / r['copy_gbs']:.0%})",
        f"{fused['peak_mib']:.0f}",
        f"{r['eager']['peak_mib']:.0f}",
    ]


def gpu_part() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        print("\n== gpu: skipped: no CUDA device (torch.cuda.is_available() is False) ==")
        return []
    import triton

    print(
        f"\n== gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
        f"{triton.__version__}; training mode, median ms of do_bench =="
    )
    graphs = [(n, baselines.get(n)) for n in NATIVE_OF] + [(f, LayerGraph.parse(f)) for f in NESTED]
    records: list[dict[str, Any]] = []
    with empty_cache("TORCHINDUCTOR_CACHE_DIR"):
        for shape in GPU_SHAPES:
            for dtype in (torch.float32, torch.bfloat16):
                torch.manual_seed(0)
                x = torch.randn(shape, device="cuda", dtype=dtype)
                dy = torch.randn_like(x)
                copy_gbs = copy_bandwidth(x)
                native = {
                    name: gpu_measure(m.to(device="cuda", dtype=dtype), x, dy)
                    for name, m in natives(shape[1]).items()
                }
                for label, graph in graphs:
                    records.append(
                        gpu_record(
                            label, graph, x, dy, copy_gbs, native.get(NATIVE_OF.get(label, ""))
                        )
                    )
                    save("gpu", records)
                    print(
                        f"  measured {short(label, 40)} at {shape} {dtype}",
                        file=sys.stderr,
                        flush=True,
                    )
    print_table(
        [
            "layer",
            "shape",
            "dtype",
            "fused fwd ms",
            "fused step ms",
            "eager step",
            "compiled step",
            "native step",
            "fwd GB/s",
            "step GB/s",
            "fused peak MiB",
            "eager peak MiB",
        ],
        [gpu_row(r) for r in records],
    )
    print(
        "step: forward + backward, ms (the fused layer's speed-up over it); GB/s: the fused "
        "traffic model's bytes / time (share of a copy's bandwidth); peak: above the inputs"
    )
    latency = []
    for label, graph in graphs:
        with empty_cache("TRITON_CACHE_DIR"):
            cold = first_step_in_new_process(graph, GPU_SHAPES[0], "bfloat16")
            warm = first_step_in_new_process(graph, GPU_SHAPES[0], "bfloat16")
        compiled = next(r["compiled_first_s"] for r in records if r["layer"] == label)
        latency.append([short(label), f"{cold:.2f}", f"{warm:.2f}", f"{compiled:.1f}"])
        records.append(
            {
                "layer": label,
                "cold_first_step_s": cold,
                "warm_first_step_s": warm,
                "first_step_shape": list(GPU_SHAPES[0]),
            }
        )
        save("gpu", records)
    print(
        f"\nfirst training step, seconds: the fused layer at "
        f"{','.join(map(str, GPU_SHAPES[0]))} bf16 in a new process; torch.compile at fp32 "
        f"in this one, an empty inductor cache"
    )
    print_table(
        ["layer", "fused, empty triton cache", "fused, warm cache", "torch.compile"], latency
    )
    return records


PROFILE_LAYERS = ("gn_relu", "evonorm_s0", "bn_relu", "evonorm_b0")
PROFILE_STEPS = 10


def profile_step(
    label: str, graph: LayerGraph, backend: str, shape: tuple[int, ...], dtype: torch.dtype
) -> dict[str, Any]:
    """One layer's training step (forward + backward) timed three ways: wall and host
    enqueue time over 50 steps, the GPU time of its kernels, and a CUDA graph's replay."""
    from torch.profiler import ProfilerActivity, profile
    from triton.testing import do_bench

    torch.manual_seed(0)
    layer = GraphNormAct(graph, shape[1], groups=GROUPS, backend=backend).cuda()
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    inputs = [x, *layer.parameters()]

    def step() -> None:
        torch.autograd.grad(layer(x), inputs, dy, allow_unused=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(50):
        step()
    enqueue_ms = (time.perf_counter() - start) / 50 * 1e3
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / 50 * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        for _ in range(PROFILE_STEPS):
            step()
        torch.cuda.synchronize()
    kernels = [
        e
        for e in profiler.key_averages()
        if str(e.device_type).endswith("CUDA") and e.self_device_time_total > 0
    ]
    side = torch.cuda.Stream()  # warm-up on a side stream, as CUDA graph capture asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        step()
    return {
        "layer": label,
        "backend": backend,
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "wall_ms": wall_ms,
        "enqueue_ms": enqueue_ms,
        "kernel_ms": sum(e.self_device_time_total for e in kernels) / PROFILE_STEPS / 1e3,
        "launches": sum(e.count for e in kernels) / PROFILE_STEPS,
        "graph_ms": do_bench(cuda_graph.replay, return_mode="median"),
        "kernels": sorted(
            (
                [e.key, e.self_device_time_total / PROFILE_STEPS / 1e3, e.count / PROFILE_STEPS]
                for e in kernels
            ),
            key=lambda k: -k[1],
        ),
    }


def profile_part() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        print("\n== profile: skipped: no CUDA device (torch.cuda.is_available() is False) ==")
        return []
    shape, dtype = GPU_SHAPES[0], torch.bfloat16
    print(
        f"\n== profile: {torch.cuda.get_device_name()}, a training step at "
        f"{','.join(map(str, shape))} bf16: host enqueue, GPU kernels, CUDA graph replay =="
    )
    records = []
    for name in PROFILE_LAYERS:
        for backend in ("triton", "eager"):
            records.append(profile_step(name, baselines.get(name), backend, shape, dtype))
            save("profile", records)
    print_table(
        [
            "layer",
            "backend",
            "wall ms",
            "host enqueue ms",
            "kernel ms",
            "launches",
            "CUDA graph ms",
        ],
        [
            [
                r["layer"],
                r["backend"],
                f"{r['wall_ms']:.3f}",
                f"{r['enqueue_ms']:.3f}",
                f"{r['kernel_ms']:.3f}",
                f"{r['launches']:.0f}",
                f"{r['graph_ms']:.3f}",
            ]
            for r in records
        ],
    )
    print(
        "wall: 50 steps with one synchronize; host enqueue: the same steps before it; kernel: "
        "the GPU time of the step's kernels (torch.profiler); CUDA graph: the step replayed"
    )
    for r in records:
        if r["backend"] == "triton":
            top = "; ".join(f"{short(k, 30)} {ms:.3f}" for k, ms, _ in r["kernels"][:3])
            print(f"{r['layer']} fused, longest kernels (ms): {top}")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["aot", "verify", "cpu", "gpu", "profile", "all"])
    parser.add_argument("--random", type=int, default=20, help="random graphs (aot, verify)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps (cpu)")
    args = parser.parse_args()
    parts: dict[str, Callable[[], Any]] = {
        "aot": lambda: aot_part(args.random),
        "verify": lambda: verify_part(args.random),
        "cpu": lambda: cpu_part(args.repeats),
        "gpu": gpu_part,
        "profile": profile_part,
    }
    for name, part in parts.items():
        if args.part in (name, "all"):
            part()


if __name__ == "__main__":
    main()
