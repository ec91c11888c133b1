"""Search strategies: what to try next, from what has been tried.

One interface for every strategy: ``ask()`` proposes a candidate graph (with its parent
and mutation, where it has them), ``tell()`` reports its fate (per-architecture scores for
a trained candidate, ``None`` for one screened out or failed), ``restore()`` replays a
search's history from the database and ``random_state()`` / ``continue_from()`` carry the
random stream across sittings, so that ``resume`` continues where it stopped without
proposing again what it proposed before.  The driver screens, compiles and trains every
proposal the same way, whichever strategy proposed it.

- ``evolution``: regularized evolution (Real et al. 2019) as in the EvoNorm paper: a
  population of the most recent trained candidates (aging: the oldest leaves), tournament
  selection whose winner is drawn from the Pareto front of the tournament sample over the
  per-architecture scores, then one mutation.  It starts (steady state) once ``start_after``
  candidates are trained (default twice the tournament), not when the population is full.
  Until then it proposes the baseline zoo's layers that belong to the space (with
  ``initial="baselines"``), then mutants of a uniformly drawn trained candidate (a share
  ``initial_mutants`` of the proposals, once one is trained) and random graphs: random
  graphs alone rarely train (about 1 in 40 passes the quality check).
- ``random``: an independent random graph per proposal (after the zoo's layers, with
  ``initial="baselines"``: the same start as evolution's, for a fair comparison).
- ``tpe`` and ``nsga2``: Optuna's samplers over a fixed-length encoding of the genome (a
  size, then per node position its op and its inputs as categorical choices), through
  Optuna's ask/tell interface.  Genomes that decode to no valid layer are told as failed
  and redrawn, as random graphs are.
- ``zoo`` (not a choice of ``run --strategy``: ``baselines evaluate`` runs it): each layer of
  the baseline zoo that belongs to the space, once, in the zoo's order; then it is
  ``exhausted`` and the driver ends the search.
"""

from __future__ import annotations

import itertools
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from evonorm_search import baselines
from evonorm_search.errors import GraphError
from evonorm_search.graph import NUM_INITIAL, LayerGraph, Node
from evonorm_search.mutation import MAX_ATTEMPTS, mutate, random_graph
from evonorm_search.ops import OPS
from evonorm_search.pareto import non_dominated
from evonorm_search.space import SearchSpace

__all__ = [
    "INITIAL_POPULATIONS",
    "STRATEGIES",
    "Proposal",
    "Strategy",
    "Told",
    "Zoo",
    "make_strategy",
    "zoo_layers",
]

# A strategy's first proposals (``initial``): random graphs, or the zoo's layers first.
INITIAL_POPULATIONS = ("random", "baselines")


@dataclass(frozen=True)
class Proposal:
    """A candidate to screen and train: ``key`` links ``tell`` to this ``ask``."""

    key: int
    graph: LayerGraph
    parent: int | None = None  # candidate id of the parent (evolution)
    mutation: str | None = None  # how the parent was mutated, or "initial: ..." and "random"


@dataclass(frozen=True)
class Told:
    """A past candidate as ``restore`` replays it: its graph, id, parent and fate."""

    candidate: int
    graph: LayerGraph
    scores: Mapping[str, float] | None  # None: never trained (rejected, failed)
    initial: bool = False


class Strategy(ABC):
    """Proposes graphs of ``space``; ``architectures`` order the score vectors."""

    name: ClassVar[str]
    # True once the strategy has nothing more to propose: the driver ends the search.
    exhausted: bool = False

    def __init__(self, space: SearchSpace, architectures: Sequence[str], seed: int) -> None:
        self.space = space
        self.architectures = tuple(architectures)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._keys = itertools.count()

    def random_state(self) -> dict[str, Any]:
        """The random stream's position, JSON-able (numpy's 128-bit state as text)."""
        return {"numpy": json.dumps(self.rng.bit_generator.state)}

    def continue_from(self, state: Mapping[str, Any]) -> None:
        """Continue the stream ``random_state`` saved (on a resume, before any ``ask``)."""
        self.rng.bit_generator.state = json.loads(state["numpy"])

    def _proposal(self, graph: LayerGraph, **kw: Any) -> Proposal:
        return Proposal(next(self._keys), graph, **kw)

    def _vector(self, scores: Mapping[str, float]) -> list[float]:
        return [float(scores[a]) for a in self.architectures]

    @abstractmethod
    def ask(self) -> Proposal: ...

    @abstractmethod
    def tell(
        self, proposal: Proposal, candidate: int | None, scores: Mapping[str, float] | None
    ) -> None: ...

    @abstractmethod
    def restore(self, history: Iterable[Told]) -> None:
        """Rebuild the state from past candidates, oldest first: before any ``ask`` on a
        resume, and for a candidate that a resume re-queued once it is trained."""


def zoo_layers(space: SearchSpace) -> list[tuple[str, LayerGraph]]:
    """The baselines that are layers of ``space``, in the zoo's order."""
    return [
        (n, baselines.get(n)) for n in baselines.names() if not space.violations(baselines.get(n))
    ]


def _zoo_first(space: SearchSpace, initial: str) -> deque[tuple[str, LayerGraph]]:
    """The layers a strategy proposes before its own: with ``initial="baselines"`` the
    zoo's layers of the space, in the zoo's order."""
    if initial not in INITIAL_POPULATIONS:
        raise ValueError(f"initial population must be 'random' or 'baselines', got {initial!r}")
    return deque(zoo_layers(space) if initial == "baselines" else ())


def _not_proposed(
    seeds: deque[tuple[str, LayerGraph]], history: list[Told]
) -> deque[tuple[str, LayerGraph]]:
    """The zoo's layers a resumed search has still to propose: by structure, not by count
    (a re-queued candidate is restored again once trained)."""
    seen = {past.graph.structural_hash() for past in history}
    return deque((n, g) for n, g in seeds if g.structural_hash() not in seen)


class RandomSearch(Strategy):
    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        architectures: Sequence[str],
        seed: int,
        *,
        initial: str = "random",
    ) -> None:
        super().__init__(space, architectures, seed)
        self._seeds = _zoo_first(space, initial)

    def ask(self) -> Proposal:
        if self._seeds:  # the same start as evolution's, for a comparison at equal cost
            name, graph = self._seeds.popleft()
            return self._proposal(graph, mutation=f"initial: baseline {name}")
        return self._proposal(random_graph(self.space, self.rng), mutation="random")

    def tell(self, proposal, candidate, scores) -> None:
        pass  # every proposal is independent of the others

    def restore(self, history) -> None:
        self._seeds = _not_proposed(self._seeds, list(history))


@dataclass(frozen=True)
class _Member:
    candidate: int
    graph: LayerGraph
    scores: tuple[float, ...]


class Evolution(Strategy):
    """Regularized evolution with Pareto tournaments (see the module docstring)."""

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        architectures: Sequence[str],
        seed: int,
        *,
        population: int | None = None,
        tournament: int | None = None,
        initial: str = "random",
        initial_mutants: float | None = None,
        start_after: int | None = None,
    ) -> None:
        super().__init__(space, architectures, seed)
        s = space.search
        self.size = population or s.population
        self.tournament = min(tournament or s.tournament, self.size)
        if self.size < 2 or self.tournament < 1:
            raise ValueError(
                f"population must be >= 2 and tournament >= 1, got {self.size} "
                f"and {self.tournament}"
            )
        self.initial_mutants = s.initial_mutants if initial_mutants is None else initial_mutants
        if not 0 <= self.initial_mutants <= 1:
            raise ValueError(f"initial_mutants must be in [0, 1], got {self.initial_mutants}")
        # Evolution needs a few trained members to select from, not a full population.
        self.start_after = min(start_after or s.start_after or 2 * self.tournament, self.size)
        self.population: deque[_Member] = deque(maxlen=self.size)
        self._seeds = _zoo_first(space, initial)

    @property
    def evolving(self) -> bool:
        return not self._seeds and len(self.population) >= self.start_after

    def ask(self) -> Proposal:
        if self._seeds:
            name, graph = self._seeds.popleft()
            return self._proposal(graph, mutation=f"initial: baseline {name}")
        if self.evolving:
            parent = self._select()
            child, description = mutate(parent.graph, self.space, self.rng)
            return self._proposal(child, parent=parent.candidate, mutation=description)
        if self.population and self.rng.random() < self.initial_mutants:
            parent = self.population[int(self.rng.integers(len(self.population)))]
            child, description = mutate(parent.graph, self.space, self.rng)
            return self._proposal(
                child, parent=parent.candidate, mutation=f"initial: {description}"
            )
        return self._proposal(random_graph(self.space, self.rng), mutation="initial: random")

    def _select(self) -> _Member:
        """A tournament: a uniform sample of the population, and a uniform pick from the
        sample's non-dominated members."""
        members = list(self.population)
        sample = self.rng.choice(
            len(members), size=min(self.tournament, len(members)), replace=False
        )
        points = np.array([members[i].scores for i in sample])
        front = non_dominated(points)
        return members[int(sample[front[int(self.rng.integers(len(front)))]])]

    def tell(self, proposal, candidate, scores) -> None:
        if scores is not None and candidate is not None:
            self.population.append(_Member(candidate, proposal.graph, tuple(self._vector(scores))))

    def restore(self, history) -> None:
        history = list(history)
        self._seeds = _not_proposed(self._seeds, history)
        for past in history:
            if past.scores is not None:
                vector = tuple(self._vector(past.scores))
                self.population.append(_Member(past.candidate, past.graph, vector))


class Zoo(Strategy):
    """The baseline zoo's layers of the space, each once (``mutation`` "baseline NAME"),
    so that baselines are screened, compiled and trained exactly like candidates."""

    name = "zoo"

    def __init__(self, space: SearchSpace, architectures: Sequence[str], seed: int) -> None:
        super().__init__(space, architectures, seed)
        self._layers = deque(zoo_layers(space))

    @property
    def exhausted(self) -> bool:  # type: ignore[override]
        return not self._layers

    def ask(self) -> Proposal:
        if not self._layers:
            raise RuntimeError("the baseline zoo is exhausted: the driver asks no more")
        name, graph = self._layers.popleft()
        return self._proposal(graph, mutation=f"baseline {name}")

    def tell(self, proposal, candidate, scores) -> None:
        pass  # each layer is proposed once, whatever its fate

    def restore(self, history) -> None:
        # By structure, not by count: a re-queued candidate is restored again once trained.
        seen = {past.graph.structural_hash() for past in history}
        self._layers = deque((n, g) for n, g in self._layers if g.structural_hash() not in seen)


class _OptunaStrategy(Strategy):
    """Optuna ask/tell over a fixed-length encoding of the genome."""

    def __init__(
        self,
        space: SearchSpace,
        architectures: Sequence[str],
        seed: int,
        population: int | None = None,
    ) -> None:
        import optuna

        super().__init__(space, architectures, seed)
        self.population = population  # how many candidates are sampled before it learns
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        limits = space.graph
        # Node labels (``sigmoid``, ``std_group``) -> (op, axis): one categorical choice each.
        self.choices = {op: (op, None) for op in limits.ops}
        self.choices |= {f"{s}_{a}": (s, a) for s in limits.statistics for a in limits.axes}
        self.labels = list(self.choices)
        self.max_nodes = limits.max_nodes
        self.study = optuna.create_study(
            directions=["maximize"] * len(self.architectures), sampler=self._sampler(seed)
        )
        self._trials: dict[int, Any] = {}
        self.asked = 0  # proposals made, over every sitting

    @abstractmethod
    def _sampler(self, seed: int) -> Any: ...

    def random_state(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def continue_from(self, state: Mapping[str, Any]) -> None:
        """Optuna's samplers keep their random state private: a resume gives the sampler a
        new stream, derived from the search's seed and the proposals made before (never
        the first sitting's stream again)."""
        asked = self.asked = int(state["asked"])
        derived = int(np.random.SeedSequence([self.seed, asked]).generate_state(1)[0])
        self.study.sampler = self._sampler(derived)

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, IntDistribution

        out: dict[str, Any] = {"size": IntDistribution(1, self.max_nodes)}
        for k in range(self.max_nodes):
            out[f"op{k}"] = CategoricalDistribution(self.labels)
            for slot in "ab":
                out[f"{slot}{k}"] = CategoricalDistribution(list(range(NUM_INITIAL + k)))
        return out

    def _decode(self, params: Mapping[str, Any]) -> LayerGraph | None:
        nodes = []
        for k in range(params["size"]):
            op, axis = self.choices[params[f"op{k}"]]
            inputs = tuple(params[f"{slot}{k}"] for slot in "ab"[: OPS[op].arity])
            nodes.append(Node(op, inputs, axis))
        try:
            graph = LayerGraph(tuple(nodes))
        except GraphError:
            return None
        return graph if graph.layer_problem() is None else None

    def _encode(self, graph: LayerGraph) -> dict[str, Any]:
        """Parameters that decode to ``graph``; positions past its size take the first
        choice (they are not read)."""
        params: dict[str, Any] = {"size": len(graph.nodes)}
        for k in range(self.max_nodes):
            node = graph.nodes[k] if k < len(graph.nodes) else None
            params[f"op{k}"] = node.label if node else self.labels[0]
            for position, slot in enumerate("ab"):
                inputs = node.inputs if node else ()
                params[f"{slot}{k}"] = inputs[position] if position < len(inputs) else 0
        return params

    def ask(self) -> Proposal:
        from optuna.trial import TrialState

        distributions = self._distributions()
        self.asked += 1
        for _ in range(MAX_ATTEMPTS):
            trial = self.study.ask(distributions)
            graph = self._decode(trial.params)
            if graph is not None:
                proposal = self._proposal(graph, mutation=self.name)
                self._trials[proposal.key] = trial
                return proposal
            self.study.tell(trial, state=TrialState.FAIL)
        raise GraphError(
            f"search space {self.space.name!r}: no valid layer in "
            f"{MAX_ATTEMPTS} {self.name} proposals"
        )

    def tell(self, proposal, candidate, scores) -> None:
        from optuna.trial import TrialState

        trial = self._trials.pop(proposal.key)
        if scores is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, self._vector(scores))

    def restore(self, history) -> None:
        from optuna.trial import TrialState, create_trial

        distributions = self._distributions()
        for past in history:
            nodes = past.graph.nodes
            if len(nodes) > self.max_nodes or any(n.label not in self.choices for n in nodes):
                continue  # not expressible in this encoding
            params = self._encode(past.graph)
            if past.scores is None:
                trial = create_trial(
                    params=params, distributions=distributions, state=TrialState.FAIL
                )
            else:
                trial = create_trial(
                    params=params, distributions=distributions, values=self._vector(past.scores)
                )
            self.study.add_trial(trial)


class TPE(_OptunaStrategy):
    name = "tpe"

    def _sampler(self, seed: int) -> Any:
        import warnings

        import optuna

        # The genome's parameters depend on each other (an input index means something only
        # with the op at that position): the multivariate TPE models them jointly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, n_startup_trials=self.population or 10
            )


class NSGA2(_OptunaStrategy):
    name = "nsga2"

    def _sampler(self, seed: int) -> Any:
        import optuna

        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=self.population or self.space.search.population
        )


_EVOLUTION_OPTIONS = ("population", "tournament", "initial", "initial_mutants", "start_after")
STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Evolution, RandomSearch, TPE, NSGA2)}


def make_strategy(
    name: str, space: SearchSpace, architectures: Sequence[str], seed: int, **options: Any
) -> Strategy:
    """The strategy ``name`` (evolution, random, tpe, nsga2; and ``zoo``, the baseline
    evaluation's, which is kept out of STRATEGIES, the user's choices).  ``options``:
    ``population`` (evolution's population, NSGA-II's generation, TPE's random start-up
    trials: how many candidates are sampled before a strategy learns from results), and
    evolution's ``tournament``, ``initial`` (evolution's and random search's) and the
    rest of evolution's; a strategy ignores the options it has no use for."""
    if name == Zoo.name:
        return Zoo(space, architectures, seed)
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    if name == "evolution":
        chosen = {k: v for k, v in options.items() if k in _EVOLUTION_OPTIONS}
        return Evolution(space, architectures, seed, **chosen)
    if name == "random":
        return RandomSearch(space, architectures, seed, initial=options.get("initial") or "random")
    return STRATEGIES[name](space, architectures, seed, population=options.get("population"))
