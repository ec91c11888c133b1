"""The generated kernels as a PyTorch operator: ``torch.library`` custom ops with fake
(meta) implementations and an autograd formula, so that the fused layer trains under
autograd and traces under ``torch.compile`` like any built-in op.

Two ops, keyed by the canonical graph's JSON (generation is memoised per graph):
``evonorm_search::fused_forward`` and ``evonorm_search::fused_backward``.  Their
definitions, and the launcher they call, are ``customop.register_ops`` (standalone, so that
an exported layer can carry them); here they find each graph's kernels through the
package's generator and kernel cache.
"""

from __future__ import annotations

import functools
from types import ModuleType

from evonorm_search.codegen import customop, runtime
from evonorm_search.codegen.source import LayerSource, generate
from evonorm_search.graph import LayerGraph

__all__ = ["fused_norm_act"]


@functools.lru_cache(maxsize=256)
def _source(graph_json: str) -> LayerSource:
    return generate(LayerGraph.from_json(graph_json))


def _plan(graph_json: str) -> dict:
    return _source(graph_json).launch


def _kernels(graph_json: str) -> ModuleType:
    return runtime.load_module(_source(graph_json))


fused_norm_act = customop.register_ops("evonorm_search", _plan, _kernels)
