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

from evonorm_search.codegen.runtime import forward_block, load_module, pass_launch
from evonorm_search.codegen.source import LayerSource

__all__ = ["TARGETS", "KernelReport", "compile_kernels", "has_cuda_backend"]

TARGETS = {"sm_90a": 90, "sm_80": 80, "sm_100": 100}
_TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                  torch.float64: "fp64"}  # fmt: skip


@dataclass(frozen=True)
class KernelReport:
    kernel: str
    mode: str  # train or eval
    stage: int | None  # None for the element-wise pass
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
        out = subprocess.run([str(_cuobjdump()), "-res-usage", f.name], capture_output=True,
                             text=True, check=True, timeout=60).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    return {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def _compile(fn: Any, signature: dict[str, str], constexprs: dict[str, Any],
             capability: int) -> tuple[dict[str, int], float]:  # fmt: skip
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, signature, constexprs),
                              target=GPUTarget("cuda", capability, 32))  # fmt: skip
    seconds = time.perf_counter() - start
    return _resources(compiled.asm["cubin"]), seconds


def compile_kernels(
    source: LayerSource, *, target: str = "sm_90a", shape: tuple[int, ...] = (128, 64, 56, 56),
    dtype: torch.dtype = torch.bfloat16, groups: int = 32,
) -> list[KernelReport]:  # fmt: skip
    """Compile every kernel of ``source`` for ``target`` at ``shape`` and ``dtype``, with
    the block sizes the launcher would pick there.  One after another: triton parses
    kernel source with ``ast.parse``, which CPython 3.11 cannot run in several threads at
    once ("AST constructor recursion depth mismatch")."""
    import triton.language as tl

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    module = load_module(source)
    compute = "fp64" if dtype == torch.float64 else "fp32"
    tl_compute = tl.float64 if dtype == torch.float64 else tl.float32
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    stats = source.training.statistics
    moments = {f"{kind}{k}_ptr": f"*{compute}" for k in stats for kind in "mad"}
    data = {"x_ptr": f"*{_TRITON_DTYPES[dtype]}", "v0_ptr": "*fp32", "v1_ptr": "*fp32"}
    jobs: list[tuple[str, str, int | None, str, Any, dict[str, str], dict[str, Any]]] = []

    def add(name: str, mode: str, stage: int | None, direction: str, signature: dict[str, str],
            block: int, **flags: Any) -> None:  # fmt: skip
        constexprs = {"COMPUTE": tl_compute, "BLOCK": block, **flags}
        jobs.append((name, mode, stage, direction, getattr(module, name), signature, constexprs))

    part = {"part_ptr": f"*{compute}"}
    ints = dict.fromkeys(("N", "C", "S", "CG", "ROWS", "L", "CHUNK"), "i32")
    flags = {"eps": "fp32", **dict.fromkeys(("COMPUTE", "AFFINE", "BLOCK", "SPLIT"), "constexpr")}
    grads = {**data, "weight_ptr": "*fp32", "dy_ptr": f"*{_TRITON_DTYPES[dtype]}"}
    split = 1
    for mode in ("train", "eval"):
        for name, p in source.reduce_kernels[mode]:
            launch = pass_launch(p.axis, n, c, s, groups)
            split = max(split, launch.split)
            signature = {**data, **moments, **part, **{k: v for k, v in ints.items() if k != "N"},
                         **{k: v for k, v in flags.items() if k != "AFFINE"}}  # fmt: skip
            add(name, mode, p.stage, "forward", signature, launch.block, SPLIT=launch.split)
        for name, p in source.backward_reduce_kernels[mode]:
            launch = pass_launch(p.axis, n, c, s, groups)
            add(name, mode, p.stage, "backward", {**grads, **moments, **part, **ints, **flags},
                launch.block, AFFINE=True, SPLIT=launch.split)  # fmt: skip
        launch = pass_launch("batch", n, c, s, groups)
        signature = {**grads, "dx_ptr": f"*{_TRITON_DTYPES[dtype]}", **moments, **part,
                     **{k: v for k, v in ints.items() if k != "ROWS"}, **flags}  # fmt: skip
        add(f"backward_{mode}", mode, None, "backward", signature, launch.block, AFFINE=True,
            SPLIT=launch.split)  # fmt: skip
    signature = {**data, "weight_ptr": "*fp32", "bias_ptr": "*fp32",
                 "y_ptr": f"*{_TRITON_DTYPES[dtype]}", **moments,
                 **dict.fromkeys(("TOTAL", "C", "S", "CG"), "i32"), "eps": "fp32",
                 "COMPUTE": "constexpr", "AFFINE": "constexpr", "BLOCK": "constexpr"}  # fmt: skip
    add("forward", "both", None, "forward", signature, forward_block(n * c * s), AFFINE=True)
    if split > 1:  # batch rows split across programs: their partial results are merged
        signature = {**part, "out_ptr": f"*{compute}", "ROWS": "i32",
                     **dict.fromkeys(("KIND", "COMPUTE", "SPLIT"), "constexpr")}  # fmt: skip
        constexprs = {"KIND": 1, "COMPUTE": tl_compute, "SPLIT": split}
        jobs.append(("_merge_partials", "train", None, "forward", module._merge_partials,
                     signature, constexprs))  # fmt: skip
    capability = TARGETS[target]
    results = [_compile(*job[4:], capability) for job in jobs]
    return [
        KernelReport(name, mode, stage, direction, r["REG"], r.get("LOCAL", 0),
                     r.get("SHARED", 0), round(seconds, 3))
        for (name, mode, stage, direction, *_), (r, seconds) in zip(jobs, results, strict=True)
    ]  # fmt: skip
