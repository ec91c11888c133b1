"""What an export with ``kernels=True`` adds: the layer's generated Triton kernels, the
custom ops around them, the path a tensor takes, and the kernels' sm_90a figures."""

from __future__ import annotations

import ast
import pprint
import textwrap
from collections.abc import Mapping
from typing import Any

from evonorm_search.codegen import customop, launch
from evonorm_search.errors import GraphError
from evonorm_search.export.text import carried_text, doc_text
from evonorm_search.graph import LayerGraph

_PATH_SECTION = """
# -- The path a tensor takes ---------------------------------------------------------------

_TOLD: set[str] = set()  # the paths announced so far
_INSTALLED: list[bool] = []  # whether triton imports, once asked


def _triton_installed() -> bool:
    \"\"\"Whether triton imports; asked once (the layer asks when it is built, so that
    torch.compile reads the answers of this and ``interpreting`` as constants).\"\"\"
    if not _INSTALLED:
        try:
            import triton  # noqa: F401
        except ImportError:
            _INSTALLED.append(False)
        else:
            _INSTALLED.append(True)
    return _INSTALLED[0]


def _runs_kernels(x: Tensor) -> bool:
    \"\"\"Whether ``x`` runs the Triton kernels: CUDA tensors where triton is installed, any
    tensor under TRITON_INTERPRET=1 (triton's interpreter), up to MAX_ELEMENTS elements;
    the rest runs the same computation in PyTorch ops.  Says once per path which it took
    (when not traced by torch.compile, which cannot trace warnings).\"\"\"
    if not _triton_installed():
        fused, path = False, "in PyTorch ops: triton is not installed"
    elif not (x.is_cuda or interpreting()):
        fused, path = False, (f"in PyTorch ops on {{x.device.type}} tensors (its Triton "
                              "kernels run CUDA tensors, or any under TRITON_INTERPRET=1)")
    elif x.numel() > MAX_ELEMENTS:
        fused, path = False, (f"in PyTorch ops on inputs of over {{MAX_ELEMENTS:,}} elements "
                              "(its Triton kernels index with 32 bits)")
    else:
        fused = True
        path = "its Triton kernels" + ("" if x.is_cuda else " in triton's interpreter")
    if path not in _TOLD and not torch.compiler.is_compiling():
        _TOLD.add(path)
        warnings.warn(f"{class_name} runs {{path}}", stacklevel=2)
    return fused
"""

_KERNELS_SECTION = """
# -- This layer's kernels ------------------------------------------------------------------

# The launcher's plan for this layer (its structure: the launcher's notes above).
_PLAN = {plan}

_KERNELS: list[type] = []  # the class holding the kernels, once defined


def _kernels(graph: str) -> type:
    \"\"\"The layer's Triton kernels (``graph`` is GRAPH), defined on their first launch.\"\"\"
    if not _KERNELS:
        _KERNELS.append(_define_kernels())
    return _KERNELS[0]


def _define_kernels() -> type:
    \"\"\"Import triton and define the kernels.  Helpers become module globals (triton finds
    what a kernel calls among its globals), kernels attributes of a class under the names
    the launcher calls them by.\"\"\"
    global {globals}
    import triton
    import triton.language as tl

{helpers}

    class Kernels:
{kernels}

    return Kernels


_fused_norm_act = register_ops(NAMESPACE, lambda graph: _PLAN, _kernels)
"""


def layer_source(program: LayerGraph) -> Any:
    """The generated kernels of ``program`` (canonical); a graph the code generator
    cannot compile raises a GraphError."""
    from evonorm_search.codegen.source import generate, unsupported

    reason = unsupported(program)
    if reason:
        raise GraphError(f"cannot export the kernels of {program.formula()}: {reason}")
    return generate(program)


def sm90_figures(
    program: LayerGraph, source: Any, compiled: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``compiled`` where it gives these kernels' figures for sm_90a (stored figures of
    other kernels, of no compilation or not well formed are passed over), else those of an
    ahead-of-time compilation run now (no registers where triton cannot compile for
    CUDA here)."""
    counts = ("registers", "spill_bytes", "traffic_fwd", "traffic_bwd", "kernels")
    if (
        compiled
        and compiled.get("target") == "sm_90a"
        and compiled.get("kernel_hash") == source.digest
        and isinstance(compiled.get("dtype"), str)
        and isinstance(compiled.get("shape"), list)
        and all(type(v) is int for v in [*compiled["shape"], *(compiled.get(k) for k in counts)])
        and compiled["kernels"] > 0
    ):
        return dict(compiled)
    from evonorm_search.codegen.compiler import compile_layer

    result = compile_layer(program, target="sm_90a", max_spill_bytes=2**31)
    if not result.ok:
        raise GraphError(f"cannot export the kernels of {program.formula()}: {result.reason}")
    return result.figures()


def compiled_text(figures: Mapping[str, Any]) -> str:
    """The class docstring's paragraph on the kernels' figures."""
    shape = ", ".join(str(d) for d in figures["shape"])
    where = f"x of ({shape}) {doc_text(figures['dtype'])}, training"
    if figures["kernels"]:
        title = f"Its Triton kernels, compiled ahead of time for sm_90a at {where}:"
        compiled = (
            f"        {figures['kernels']} kernels, at most "
            f"{figures['registers']} registers per thread, "
            f"{figures['spill_bytes']} bytes spilled;\n"
        )
    else:
        title = (
            f"Its Triton kernels at {where} (not compiled for sm_90a: the triton that "
            "exported them has no CUDA backend):"
        )
        compiled = ""
    return (
        f"\n    {textwrap.fill(title, 88, subsequent_indent='    ')}\n{compiled}"
        f"        memory traffic: forward {figures['traffic_fwd']}, backward "
        f"{figures['traffic_bwd']} full-size tensors\n"
        "        read or written (2 and 3 at best).\n"
    )


def kernel_sections(source: Any, class_name: str) -> list[str]:
    """What follows the class in an export with kernels: the path a tensor takes, the
    launcher, the plan, the kernels and the registration of the custom ops."""
    helpers, kernels = _kernel_functions(source.text)
    return [
        _PATH_SECTION.format(class_name=class_name),
        carried_text(launch),
        carried_text(customop),
        _KERNELS_SECTION.format(
            plan=pprint.pformat(source.launch, width=88, sort_dicts=False),
            globals=", ".join(["triton", "tl", *helpers]),
            helpers="\n\n".join(textwrap.indent(text, " " * 4) for text in helpers.values()),
            kernels="\n\n".join(textwrap.indent(text, " " * 8) for text in kernels.values()),
        ),
    ]


def _kernel_functions(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The generated module's jit functions, decorators included: the helpers (private
    names) and the kernels, each by name."""
    lines = text.splitlines()
    helpers, kernels = {}, {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            function = "\n".join(lines[first - 1 : node.end_lineno])
            (helpers if node.name.startswith("_") else kernels)[node.name] = function
    return helpers, kernels
