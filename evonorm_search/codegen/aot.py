"""Ahead-of-time compilation of a layer's kernels for real GPUs, on any machine.

Triton compiles for an NVIDIA target without a GPU (``triton.compile`` of an ``ASTSource``
for a ``GPUTarget``), and the ``cuobjdump`` inside triton's wheel reads each cubin's
registers, spilled (local) bytes and shared memory.  Block sizes, and so registers, depend
on the shape, so kernels compile at a reference shape and dtype.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evonorm_search.codegen.launch import (
    OPTIONS,
    channel_launch,
    forward_block,
    on_chip_tile,
    stage_block,
)
from evonorm_search.codegen.runtime import load_module
from evonorm_search.codegen.source import LayerSource

__all__ = ["TARGETS", "KernelReport", "compile_kernels", "has_cuda_backend"]

TARGETS = {"sm_90a": 90, "sm_80": 80, "sm_100": 100}
_TRITON_DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


@dataclass(frozen=True)
class KernelReport:
    kernel: str
    mode: str  # train, eval or both
    stage: int | None  # None for the element-wise passes
    direction: str  # forward or backward
    registers: int
    spill_bytes: int  # local memory per thread: spilled registers
    shared_bytes: int
    compile_s: float


def has_cuda_backend() -> bool:
    """Whether the installed triton carries the NVIDIA backend (and its cuobjdump)."""
    try:
        return _cuobjdump().is_file()
    except ImportError:
        return False


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run(
            [str(_cuobjdump()), "-res-usage", f.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        os.unlink(f.name)
    return {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def _compile(
    fn: Any,
    signature: dict[str, str],
    constexprs: dict[str, Any],
    options: dict[str, Any],
    capability: int,
) -> tuple[dict[str, int], float]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn, signature, constexprs),
        options=options,
        target=GPUTarget("cuda", capability, 32),
    )
    seconds = time.perf_counter() - start
    return _resources(compiled.asm["cubin"]), seconds


def _signature(fn: Any, data: str, compute: str, constexprs: dict[str, Any]) -> dict[str, str]:
    """Triton argument types from the generated kernels' naming: full-size tensors in the
    data dtype, statistics and partial sums in the compute dtype, parameters in float32."""
    types = {}
    for name in fn.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr"):
            types[name] = f"*{data}"
        elif name in ("v0_ptr", "v1_ptr", "weight_ptr", "bias_ptr"):
            types[name] = "*fp32"
        elif name.endswith("_ptr"):  # moments, means, adjoints, partial results
            types[name] = f"*{compute}"
        else:
            types[name] = "fp32" if name == "eps" else "i32"
    return types


def compile_kernels(
    source: LayerSource,
    *,
    target: str = "sm_90a",
    shape: tuple[int, ...] = (128, 64, 56, 56),
    dtype: torch.dtype = torch.bfloat16,
    groups: int = 32,
) -> list[KernelReport]:
    """Compile every kernel the launcher runs for x of ``shape`` and ``dtype`` (both modes,
    forward and backward) for ``target``, with the block sizes it picks there.  One after
    another: triton parses kernel source with ``ast.parse``, which CPython 3.11 cannot run
    in several threads at once ("AST constructor recursion depth mismatch")."""
    import triton.language as tl

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    module = load_module(source)
    data = _TRITON_DTYPES[dtype]
    compute = "fp64" if dtype == torch.float64 else "fp32"
    tl_compute = tl.float64 if dtype == torch.float64 else tl.float32
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    jobs: list[tuple[str, str, int | None, str, dict[str, Any], dict[str, Any]]] = []

    def add(name: str, mode: str, stage: int | None, direction: str, **constexprs: Any) -> None:
        options = dict(OPTIONS)
        if "num_warps" in constexprs:
            options["num_warps"] = constexprs.pop("num_warps")
        constexprs = {"COMPUTE": tl_compute, **constexprs}
        jobs.append((name, mode, stage, direction, constexprs, options))

    tile = on_chip_tile(source.launch, (n, c, s), groups, dtype)
    if tile:
        for direction in ("forward", "backward"):
            add(
                f"fused_{direction}",
                "both",
                0,
                direction,
                AFFINE=True,
                CBLOCK=tile.cblock,
                SBLOCK=tile.sblock,
                num_warps=tile.num_warps,
            )
    else:
        block, _ = stage_block(s)
        for mode in ("train", "eval"):
            for name, p in source.reduce_kernels[mode]:
                add(name, mode, p.stage, "forward", BLOCK=block)
            for name, p in source.backward_reduce_kernels[mode]:
                add(name, mode, p.stage, "backward", AFFINE=True, BLOCK=block)
            launch = channel_launch(n, c, s)
            add(
                f"backward_{mode}",
                mode,
                None,
                "backward",
                AFFINE=True,
                BLOCK=launch.block,
                SPLIT=launch.split,
            )
        add("forward", "both", None, "forward", AFFINE=True, BLOCK=forward_block(n * c * s))
    capability = TARGETS[target]
    reports = []
    for name, mode, stage, direction, constexprs, options in jobs:
        fn = getattr(module, name)
        signature = _signature(fn, data, compute, constexprs)
        r, seconds = _compile(fn, signature, constexprs, options, capability)
        reports.append(
            KernelReport(
                name,
                mode,
                stage,
                direction,
                r["REG"],
                r.get("LOCAL", 0),
                r.get("SHARED", 0),
                round(seconds, 3),
            )
        )
    return reports
