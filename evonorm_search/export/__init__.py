"""Export a discovered layer as a standalone PyTorch module, with or without its kernels.

:func:`export_source` writes the Python source of an ``nn.Module`` computing a layer's
canonical graph exactly as :class:`~evonorm_search.layer.GraphNormAct` runs it eagerly: the
file carries the eager runtime (``eager.py``, verbatim), which GraphNormAct runs too, so
the two share their parameters, running buffers, state-dict keys, compute dtypes and
BatchNorm semantics by construction.  The forward pass has one line per graph node, e.g.
``t5 = torch.sigmoid(t4)``; ``t<i>`` is the value of node ``i``.

With ``kernels=True`` the file also carries the layer's generated Triton kernels, the
launcher and the custom ops around them (``codegen/launch.py`` and ``customop.py``,
verbatim), and runs the kernels on CUDA tensors where triton is installed: the compiler's
speed without installing this project.

The source is built only from the registry's forms, keyed by op (and axis), over validated
integer indices, from the carried modules' own text and from the code generator's output:
nothing a graph or a database holds reaches the code as text.  Provenance, which may hold
any text, is escaped into the class docstring.
"""

from evonorm_search.export.candidates import load_layer, provenance_of, read_candidate
from evonorm_search.export.module import TEMPLATES, check_class_name, export_source

__all__ = [
    "TEMPLATES",
    "check_class_name",
    "export_source",
    "load_layer",
    "provenance_of",
    "read_candidate",
]
