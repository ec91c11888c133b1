"""The compile stage of the search pipeline: a screened graph to checked, costed kernels.

``compile_layer`` generates a layer's kernels, compiles them ahead of time for a GPU target
(where the installed triton carries the CUDA backend), counts their memory traffic and,
with ``verify=True``, checks them against the eager layer in triton's interpreter.  A
graph it cannot turn into good kernels comes back as a :class:`CompileRefusal` naming the
reason, never as an exception, so that the search records it as a funnel stage.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from evonorm_search.codegen.aot import TARGETS, KernelReport, compile_kernels, has_cuda_backend
from evonorm_search.codegen.launch import on_chip_tile
from evonorm_search.codegen.runtime import private_cache_dir
from evonorm_search.codegen.source import generate, unsupported
from evonorm_search.graph import LayerGraph
from evonorm_search.ops import effective_groups

__all__ = ["CompileRefusal", "CompiledLayer", "compile_layer"]

MIN_TRAFFIC = (2, 3)  # forward: read x, write y; backward: read x and dy, write dx


@dataclass(frozen=True)
class CompiledLayer:
    """A layer's generated kernels and their figures (``kernels`` is empty where the
    installed triton cannot compile for GPUs)."""

    formula: str
    kernel_hash: str  # content hash of the generated source: its cache file's name
    target: str
    shape: tuple[int, ...]
    dtype: str
    # Full-size tensor elements moved per element by a training step at ``shape``: the
    # single-kernel path where the graph has one and its groups fit on chip.
    traffic_fwd: int
    traffic_bwd: int
    kernels: tuple[KernelReport, ...] = ()
    verified: bool = False  # checked against the eager layer in the interpreter
    seconds: float = 0.0  # wall time of the whole stage
    ok: bool = field(default=True, init=False)

    @property
    def registers(self) -> int:
        return max((k.registers for k in self.kernels), default=0)

    @property
    def spill_bytes(self) -> int:
        return max((k.spill_bytes for k in self.kernels), default=0)

    @property
    def compile_s(self) -> float:
        """Cold compile seconds of all kernels, one after another."""
        return round(sum(k.compile_s for k in self.kernels), 3)

    def figures(self) -> dict[str, Any]:
        """What the store keeps with the candidate."""
        return {
            "kernel_hash": self.kernel_hash,
            "target": self.target,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "registers": self.registers,
            "spill_bytes": self.spill_bytes,
            "compile_s": self.compile_s,
            "traffic_fwd": self.traffic_fwd,
            "traffic_bwd": self.traffic_bwd,
            "kernels": len(self.kernels),
            "verified": self.verified,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            **self.figures(),
            "kernels": [asdict(k) for k in self.kernels],
        }


@dataclass(frozen=True)
class CompileRefusal:
    formula: str
    reason: str
    seconds: float = 0.0
    ok: bool = field(default=False, init=False)


def compile_layer(
    graph: LayerGraph,
    *,
    target: str = "sm_90a",
    shape: tuple[int, ...] = (128, 64, 56, 56),
    dtype: torch.dtype | str = torch.bfloat16,
    groups: int = 32,
    verify: bool = False,
    max_spill_bytes: int = 0,
    aot: bool | None = None,
) -> CompiledLayer | CompileRefusal:
    """Compile ``graph`` (a valid layer) for ``target`` at ``shape`` and ``dtype`` (a torch
    dtype or its name).

    ``aot``: compile for the GPU target (default: where the installed triton has the CUDA
    backend).  ``verify``: run the kernels against the eager layer on tiny probes in the
    interpreter (a subprocess; a few seconds).  Refuses graphs the generator does not
    support, kernels that fail to compile or spill more than ``max_spill_bytes`` per
    thread, and kernels that disagree with the eager layer.
    """
    start = time.perf_counter()
    formula = graph.formula()

    def refuse(reason: str) -> CompileRefusal:
        return CompileRefusal(formula, reason, round(time.perf_counter() - start, 3))

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    reason = unsupported(graph)
    if reason:
        return refuse(f"unsupported: {reason}")
    aot = has_cuda_backend() if aot is None else aot
    if verify or aot:
        private_cache_dir()  # an unsafe kernel cache is the user's error, not the layer's
    groups = effective_groups(shape[1], groups)  # as the layer does
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype  # "bfloat16", as spaces say
    source = generate(graph)
    on_chip = on_chip_tile(source.launch, shape, groups, dtype) is not None
    traffic_fwd, traffic_bwd = source.traffic("train", on_chip=on_chip)
    kernels: list[KernelReport] = []
    if aot:
        try:
            kernels = compile_kernels(
                source, target=target, shape=shape, dtype=dtype, groups=groups
            )
        except Exception as e:  # triton's compile errors have no common base class
            message = " ".join(str(e).split())[:300] or type(e).__name__
            return refuse(f"compile error: {message}")
        spilling = [k for k in kernels if k.spill_bytes > max_spill_bytes]
        if spilling:
            worst = max(spilling, key=lambda k: k.spill_bytes)
            return refuse(
                f"spills: {worst.kernel} spills {worst.spill_bytes} bytes per thread "
                f"(limit {max_spill_bytes})"
            )
    if verify:
        from evonorm_search.codegen.verify import TOLERANCE, failed, verify_in_subprocess

        try:
            results = verify_in_subprocess([graph])
        except (RuntimeError, OSError) as e:
            return refuse(f"mismatch: {e}")
        bad = [r for r in results if failed(r)]
        if bad:
            r = bad[0]
            what = (
                "gradient presence " + ", ".join(r["gradient_presence"])
                if r["gradient_presence"]
                else f"error {max(r['output'], r['buffers'], r['gradients']):.2g} "
                f"(tolerance {TOLERANCE:g})"
            )
            mode = "train" if r["training"] else "eval"
            return refuse(
                f"mismatch: the kernels disagree with the eager layer at shape "
                f"{tuple(r['shape'])} in {mode} mode: {what}"
            )
    return CompiledLayer(
        formula,
        source.digest,
        target,
        tuple(shape),
        str(dtype).removeprefix("torch."),
        traffic_fwd,
        traffic_bwd,
        tuple(kernels),
        verify,
        round(time.perf_counter() - start, 3),
    )
