"""Layer graphs compiled to fused Triton kernels.

``schedule`` lowers a graph into reduction passes and one element-wise pass, ``generate``
writes their forward and backward Triton source from the templates in ``kernels/``,
``runtime.forward`` and ``runtime.backward`` launch them, and ``aot.compile_kernels``
compiles them ahead of time for a GPU target.  Importing this package does not import
triton.  (Still to come: the custom op behind ``GraphNormAct(backend="triton")``,
``compile_layer`` with the traffic model, and the ``compile`` command.)
"""

from evonorm_search.codegen.schedule import ReductionPass, Schedule, schedule
from evonorm_search.codegen.source import LayerSource, generate

__all__ = ["LayerSource", "ReductionPass", "Schedule", "generate", "schedule"]
