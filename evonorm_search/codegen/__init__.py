"""Layer graphs compiled to fused Triton kernels.

``schedule`` lowers a graph into one reduction pass per stage and one element-wise pass;
``generate`` writes their forward and backward Triton source from the templates in
``kernels/`` (plus single-kernel forward and backward for one stage of per-sample
statistics); ``runtime`` caches and loads them as a module; ``launch`` (standalone: an
exported layer can carry its text) launches them and ``customop`` (standalone too) defines
the ``torch.library`` custom ops around them, which ``op`` registers for the package
(what ``GraphNormAct(backend="triton")`` runs);
``aot.compile_kernels`` compiles them ahead of time for a GPU target;
``compiler.compile_layer`` is the search's compile stage (figures, traffic model, refusals)
and ``verify`` checks kernels against the eager layer in triton's interpreter.  Importing
this package does not import triton."""

from evonorm_search.codegen.schedule import ReductionPass, Schedule, schedule
from evonorm_search.codegen.source import LayerSource, generate, unsupported

__all__ = ["LayerSource", "ReductionPass", "Schedule", "generate", "schedule", "unsupported"]
