"""The search: strategies that propose candidates (``strategies``).

Importing this package imports neither Ray nor Optuna; the strategies load Optuna when an
Optuna strategy is made.
"""

from evonorm_search.search.strategies import STRATEGIES, Proposal, Strategy, Told, make_strategy

__all__ = ["STRATEGIES", "Proposal", "Strategy", "Told", "make_strategy"]
