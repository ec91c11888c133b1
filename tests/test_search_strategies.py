"""Search strategies: regularized evolution with Pareto tournaments, random search, and
Optuna's TPE and NSGA-II over the genome encoding; restoring from a history."""

import json

import numpy as np
import pytest

from evonorm_search import baselines
from evonorm_search.search import STRATEGIES, Told, make_strategy
from evonorm_search.space import load_space

SPACE = load_space("evonorm_b")
ARCHS = ("resnet", "mobilenet")


def scores(a: float, b: float) -> dict[str, float]:
    return {"resnet": a, "mobilenet": b}


def drive(strategy, count: int, rng: np.random.Generator, reject: float = 0.0) -> list:
    """Ask and tell ``count`` times, with random scores (or a rejection)."""
    told = []
    for candidate in range(count):
        proposal = strategy.ask()
        result = None if rng.random() < reject else scores(*rng.random(2))
        strategy.tell(proposal, candidate, result)
        told.append((proposal, candidate, result))
    return told


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_proposes_layers_of_its_space_and_repeats_with_its_seed(name):
    runs = []
    for _ in range(2):
        strategy = make_strategy(name, SPACE, ARCHS, seed=3)
        told = drive(strategy, 40, np.random.default_rng(0), reject=0.3)
        for proposal, _, _ in told:
            assert proposal.graph.layer_problem() is None
            assert SPACE.violations(proposal.graph) == [], proposal.graph.formula()
        runs.append([p.graph.structural_hash() for p, _, _ in told])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 20  # it explores


def test_evolution_fills_its_population_then_mutates_tournament_winners():
    evolution = make_strategy("evolution", SPACE, ARCHS, seed=0, population=5, tournament=5)
    initial = [evolution.ask() for _ in range(5)]
    assert all(p.parent is None and p.mutation == "initial: random" for p in initial)
    for candidate, proposal in enumerate(initial):
        # candidate 2 dominates every other member on both architectures
        evolution.tell(
            proposal,
            candidate,
            scores(0.9, 0.8) if candidate == 2 else scores(0.1 * candidate, 0.5 - 0.1 * candidate),
        )
    children = [evolution.ask() for _ in range(10)]
    assert {c.parent for c in children} == {2}  # the tournament is the whole population
    assert all(
        c.mutation.split()[0] in ("change_op", "rewire", "resample", "insert", "delete")
        for c in children
    )


def test_evolution_tournament_winners_come_from_the_samples_front():
    evolution = make_strategy("evolution", SPACE, ARCHS, seed=1, population=8, tournament=3)
    points = [
        (0.1, 0.9),
        (0.9, 0.1),
        (0.5, 0.5),
        (0.2, 0.2),
        (0.3, 0.1),
        (0.4, 0.4),
        (0.05, 0.05),
        (0.6, 0.6),
    ]
    for candidate, point in enumerate(points):
        evolution.tell(evolution.ask(), candidate, scores(*point))
    picks = [evolution.ask().parent for _ in range(300)]
    # (0.6, 0.6) is dominated by none: it wins every sample it is drawn in.  (0.05, 0.05)
    # is dominated by every other point: it never wins.
    assert picks.count(7) >= 300 * 3 / 8 * 0.6
    assert 6 not in picks
    assert set(picks) <= set(range(8)) - {6}


def test_evolution_ages_out_the_oldest_and_ignores_rejections():
    evolution = make_strategy("evolution", SPACE, ARCHS, seed=0, population=4, tournament=2)
    rejected = evolution.ask()
    evolution.tell(rejected, 100, None)
    assert len(evolution.population) == 0
    drive(evolution, 10, np.random.default_rng(1))
    assert [m.candidate for m in evolution.population] == [6, 7, 8, 9]


def test_evolution_seeds_its_population_with_the_zoo():
    space = load_space("evonorm_s")  # no batch statistics: bn_relu, evonorm_b0 stay out
    evolution = make_strategy("evolution", space, ARCHS, seed=0, population=20, initial="baselines")
    proposals = [evolution.ask() for _ in range(20)]
    zoo = [n for n in baselines.names() if not space.violations(baselines.get(n))]
    assert "evonorm_s0" in zoo and "gn_relu" in zoo
    assert "bn_relu" not in zoo and "evonorm_b0" not in zoo
    assert [p.mutation for p in proposals[: len(zoo)]] == [f"initial: baseline {n}" for n in zoo]
    assert proposals[0].graph == baselines.get(zoo[0])
    assert all(p.mutation == "initial: random" for p in proposals[len(zoo) :])


def test_random_search_can_start_from_the_zoo_as_evolution_does():
    """`--strategy random --initial baselines`: the zoo's layers first, in the zoo's order,
    then random graphs; restored mid-zoo, it proposes only the zoo layers not yet seen."""
    zoo = [n for n in baselines.names() if not SPACE.violations(baselines.get(n))]
    search = make_strategy("random", SPACE, ARCHS, seed=0, initial="baselines")
    proposals = [search.ask() for _ in range(len(zoo) + 3)]
    assert [p.graph for p in proposals[: len(zoo)]] == [baselines.get(n) for n in zoo]
    assert [p.mutation for p in proposals[len(zoo) :]] == ["random"] * 3
    plain = make_strategy("random", SPACE, ARCHS, seed=0)
    assert plain.ask().mutation == "random"
    resumed = make_strategy("random", SPACE, ARCHS, seed=0, initial="baselines")
    resumed.restore([Told(k, p.graph, None, initial=True) for k, p in enumerate(proposals[:2])])
    assert resumed.ask().graph == baselines.get(zoo[2])
    with pytest.raises(ValueError, match="'random' or 'baselines'"):
        make_strategy("random", SPACE, ARCHS, seed=0, initial="zoo")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_restore_continues_as_if_never_stopped(name):
    """A strategy restored from the history proposes what the uninterrupted one would
    (evolution, random) or at least knows every past trial (Optuna)."""
    rng = np.random.default_rng(0)
    first = make_strategy(name, SPACE, ARCHS, seed=5, population=6)
    told = drive(first, 15, rng, reject=0.2)
    history = [
        Told(c, p.graph, s, initial=(p.mutation or "").startswith("initial")) for p, c, s in told
    ]
    second = make_strategy(name, SPACE, ARCHS, seed=5, population=6)
    second.restore(history)
    if name == "evolution":
        assert [m.candidate for m in second.population] == [m.candidate for m in first.population]
    if name in ("tpe", "nsga2"):
        finished = [t for t in second.study.trials if t.values is not None]
        assert len(finished) == sum(s is not None for _, _, s in told)
        assert second.ask().graph.layer_problem() is None


def test_population_is_how_long_the_optuna_samplers_sample_at_random():
    tpe = make_strategy("tpe", SPACE, ARCHS, seed=0, population=4, tournament=3)
    assert tpe.study.sampler._n_startup_trials == 4
    nsga2 = make_strategy("nsga2", SPACE, ARCHS, seed=0, population=6)
    assert nsga2.study.sampler._population_size == 6
    assert make_strategy("nsga2", SPACE, ARCHS, seed=0).study.sampler._population_size == 32
    assert make_strategy("tpe", SPACE, ARCHS, seed=0).study.sampler._n_startup_trials == 10


def test_optuna_encoding_round_trips_every_graph_of_the_space():
    from evonorm_search.mutation import random_graph

    tpe = make_strategy("tpe", SPACE, ARCHS, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        graph = random_graph(SPACE, rng)
        assert tpe._decode(tpe._encode(graph)) == graph


def test_unknown_strategy_and_bad_population():
    with pytest.raises(ValueError, match=r"unknown strategy 'cmaes' \(choose from evolution"):
        make_strategy("cmaes", SPACE, ARCHS, seed=0)
    with pytest.raises(ValueError, match="population must be >= 2"):
        make_strategy("evolution", SPACE, ARCHS, seed=0, population=1)
    with pytest.raises(ValueError, match="initial population must be 'random' or 'baselines'"):
        make_strategy("evolution", SPACE, ARCHS, seed=0, initial="zoo")


def test_evolution_with_more_trials_in_flight_than_members_keeps_proposing():
    evolution = make_strategy("evolution", SPACE, ARCHS, seed=0, population=2, tournament=2)
    in_flight = [evolution.ask() for _ in range(5)]  # e.g. five workers, none finished
    assert all(p.mutation == "initial: random" for p in in_flight)
    evolution.tell(in_flight[0], 0, scores(0.5, 0.5))
    assert evolution.ask().parent == 0  # the first member is the tournament's only choice


def test_evolution_starts_once_twice_the_tournament_is_trained_from_the_zoo_and_mutants():
    """With the zoo as its start, evolution proposes the zoo's layers, then a mix of mutants
    of trained members (the space's share) and random graphs, and evolves (tournaments)
    once 2 x tournament candidates are trained, not when the population is full."""
    evolution = make_strategy(
        "evolution",
        SPACE,
        ARCHS,
        seed=0,
        population=32,
        tournament=4,
        initial="baselines",
        initial_mutants=0.5,
    )
    assert evolution.start_after == 8
    rng = np.random.default_rng(0)
    zoo = [evolution.ask() for _ in range(len(evolution._seeds))]
    assert all(p.mutation.startswith("initial: baseline ") for p in zoo)
    for candidate, proposal in enumerate(zoo[:3]):  # three of the zoo trained
        evolution.tell(proposal, candidate, scores(*rng.random(2)))
    fill = [evolution.ask() for _ in range(200)]
    mutants = [p for p in fill if p.parent is not None]
    assert all(p.mutation.startswith("initial: ") for p in fill)
    assert {p.parent for p in mutants} == {0, 1, 2}  # uniformly drawn trained members
    assert 0.4 < len(mutants) / len(fill) < 0.6
    assert not evolution.evolving
    for candidate, proposal in enumerate(fill[:5], start=100):  # 8 trained now
        evolution.tell(proposal, candidate, scores(*rng.random(2)))
    assert evolution.evolving
    child = evolution.ask()
    assert child.parent is not None and not child.mutation.startswith("initial")


def test_start_after_and_initial_mutants_reproduce_the_old_initial_population():
    """``initial_mutants=0`` and ``start_after=population``: random graphs until the
    population is full (the configuration the yield benchmark compares against)."""
    evolution = make_strategy(
        "evolution",
        SPACE,
        ARCHS,
        seed=0,
        population=6,
        tournament=2,
        initial_mutants=0.0,
        start_after=6,
    )
    rng = np.random.default_rng(0)
    for candidate in range(5):
        proposal = evolution.ask()
        assert proposal.mutation == "initial: random"
        evolution.tell(proposal, candidate, scores(*rng.random(2)))
    assert evolution.ask().mutation == "initial: random"
    evolution.tell(evolution.ask(), 5, scores(0.5, 0.5))
    assert evolution.ask().parent is not None


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_a_restored_strategy_continues_its_random_stream(name):
    """Restored from the history and its saved random state, a strategy proposes exactly
    what the uninterrupted one would next; re-seeded alone, it would replay the first
    sitting's proposals (what a resume did before)."""
    rng = np.random.default_rng(0)
    first = make_strategy(name, SPACE, ARCHS, seed=3, population=6, tournament=2)
    told = drive(first, 12, rng, reject=0.3)
    state = first.random_state()
    json.dumps(state)  # JSON-able, as the store keeps it
    history = [Told(c, p.graph, s) for p, c, s in told]
    ahead = drive(first, 6, np.random.default_rng(1))
    second = make_strategy(name, SPACE, ARCHS, seed=3, population=6, tournament=2)
    second.restore(history)
    second.continue_from(state)
    assert [p.graph for p, _, _ in drive(second, 6, np.random.default_rng(1))] == [
        p.graph for p, _, _ in ahead
    ]
    replayed = make_strategy(name, SPACE, ARCHS, seed=3, population=6, tournament=2)
    assert replayed.ask().graph == told[0][0].graph


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_a_restored_optuna_strategy_draws_a_new_stream(name):
    rng = np.random.default_rng(0)
    first = make_strategy(name, SPACE, ARCHS, seed=3, population=4)
    told = drive(first, 6, rng)
    state = first.random_state()
    assert state == {"asked": 6}
    second = make_strategy(name, SPACE, ARCHS, seed=3, population=4)
    second.restore([Told(c, p.graph, s) for p, c, s in told])
    second.continue_from(state)
    proposed = [second.ask().graph for _ in range(4)]
    assert not {g.structural_hash() for g in proposed} & {
        p.graph.structural_hash() for p, _, _ in told[:4]
    }
    assert second.random_state() == {"asked": 10}
