"""evonorm-search: discover normalization-activation layers by evolutionary search.

The core (this import) needs only torch and numpy; ray, optuna, sqlalchemy, triton and
networkx load when the parts that use them do, so a discovered layer runs wherever torch runs.
"""

from evonorm_search import baselines
from evonorm_search.errors import EvoNormError, GraphError, SpaceError
from evonorm_search.graph import LayerGraph, Node, ShapeClass
from evonorm_search.layer import GraphNormAct
from evonorm_search.provenance import __version__

__all__ = [
    "EvoNormError",
    "GraphError",
    "GraphNormAct",
    "LayerGraph",
    "Node",
    "ShapeClass",
    "SpaceError",
    "__version__",
    "baselines",
]
