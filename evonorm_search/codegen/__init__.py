"""Layer graphs compiled to fused Triton kernels (work in progress: the forward pass).

``schedule`` lowers a graph into reduction passes and one element-wise pass, ``generate``
writes their Triton source from the templates in ``kernels/``, and ``runtime.forward``
launches them.  Importing this package does not import triton.
"""

from evonorm_search.codegen.schedule import ReductionPass, Schedule, schedule
from evonorm_search.codegen.source import LayerSource, generate

__all__ = ["LayerSource", "ReductionPass", "Schedule", "generate", "schedule"]
