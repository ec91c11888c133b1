import pytest
import torch

from evonorm_search import LayerGraph, baselines
from evonorm_search.graph import Node
from evonorm_search.hashing import CachedFitness, FunctionalCache, functional_hash
from evonorm_search.rejection import (
    REASONS,
    STAGES,
    Funnel,
    _flush_denormals,
    check_stability,
    stability_ratios,
)
from evonorm_search.space import load_space

SPACE = load_space("evonorm_b")
TOO_LARGE = LayerGraph(tuple(Node("sigmoid", (i,)) for i in range(11)))  # 11 > 10 nodes

# (candidate, stage, reason): one candidate for every way the funnel can stop one.
REJECTIONS = [
    ("x ** 2", "static", "malformed"),
    (
        '{"format": "evonorm-graph/1", "nodes": [{"op": "cos", "inputs": [0]}]}',
        "static",
        "malformed",
    ),
    (TOO_LARGE, "static", "too_large"),
    ("mean_batch(x)", "static", "wrong_shape_class"),
    ("mean_channel(v1) * v1", "static", "independent_of_x"),
    ("x / v0", "numeric", "non_finite"),  # v0 = 0 at initialisation
    ("x * 0 + v1", "numeric", "constant_output"),
    ("exp(x)", "numeric", "exploding_output"),  # e^50 on the probe's x5 batch
    ("x * square(x)", "stability", "unstable"),
    ("sqrt(v0) + x", "stability", "non_finite_gradient"),  # sqrt'(0) is NaN, v0 starts at 0
]


@pytest.mark.parametrize(("candidate", "stage", "reason"), REJECTIONS)
def test_each_candidate_stops_where_expected(candidate, stage, reason):
    result = Funnel(SPACE).screen(candidate)
    assert (result.fate.stage, result.fate.passed, result.fate.reason) == (stage, False, reason)
    assert result.fate.detail
    assert [v.stage for v in result.verdicts] == list(STAGES[: STAGES.index(stage) + 1])


def test_every_reason_is_reachable():
    """Screen candidates and collect the (stage, reason) fates actually reached."""

    def fates(funnel: Funnel, candidates) -> set[tuple[str, str | None]]:
        return {(r.fate.stage, r.fate.reason) for r in map(funnel.screen, candidates)}

    reached = set()
    for candidate, _, _ in REJECTIONS:
        reached |= fates(Funnel(SPACE), [candidate])
    reached |= fates(Funnel(load_space("evonorm_s")), [baselines.get("evonorm_b0")])
    # A survivor, the same canonical form again, then a functional twin of it.
    reached |= fates(
        Funnel(SPACE, stability=False), ["x * v1 + v0", "v1 * x + v0", "x * v1 + v0 + 0"]
    )
    reached.discard(("numeric", None))  # the survivor's fate
    assert reached == {(stage, r) for stage, reasons in REASONS.items() for r in reasons}


def test_outside_the_space():
    result = Funnel(load_space("evonorm_s")).screen(baselines.get("evonorm_b0"))
    assert (result.fate.reason, result.fate.detail) == (
        "outside_space",
        "node 4: axis 'batch' is not in this space",
    )


def test_a_good_layer_passes_every_stage_with_its_figures():
    result = Funnel(SPACE).screen(baselines.get("evonorm_b0"))
    assert result.passed and [v.stage for v in result.verdicts] == list(STAGES)
    assert result.structural_hash == baselines.get("evonorm_b0").structural_hash()
    assert result.functional_hash == functional_hash(baselines.get("evonorm_b0"))
    numeric, stability = result.verdicts[3].values, result.verdicts[4].values
    assert 0 < numeric["scale"] < 10 and numeric["spread"] > 0.1
    assert 0 < stability["max_ratio"] < SPACE.rejection.stability and stability["steps"] == 5
    assert set(result.seconds) == set(STAGES) and all(t > 0 for t in result.seconds.values())


def test_structural_duplicates_and_resuming_with_seen_hashes():
    funnel = Funnel(SPACE, stability=False)
    assert funnel.screen("x * sigmoid(v1 * x) / std_group(x)").passed
    again = funnel.screen("sigmoid(x * v1) * x / std_group(x)")  # same canonical form
    assert again.fate.reason == "structural_duplicate"
    resumed = Funnel(SPACE, seen=set(funnel.seen), stability=False)
    assert resumed.screen(baselines.get("evonorm_s0")).fate.reason == "structural_duplicate"


def test_fec_hit_reuses_the_stored_fitness():
    cache = FunctionalCache()
    funnel = Funnel(SPACE, cache=cache, stability=False)
    trained = funnel.screen("abs(x) * v1 + v0")
    fitness = CachedFitness("candidate-17", {"resnet": 0.31})
    cache.put(trained.functional_hash, funnel.proxy_key, fitness)
    twin = funnel.screen("sqrt(square(x)) * v1 + v0")  # another structure, same function
    assert twin.fate.reason == "functional_duplicate"
    assert twin.fitness == fitness and twin.fate.values["candidate"] == "candidate-17"
    # Another proxy task means another key: no hit.
    other = Funnel(load_space("sequence"), cache=cache, stability=False)
    assert other.screen("abs(x) * v1 + v0").fate.stage != "functional"


def test_functional_duplicates_reuse_numeric_and_stability_verdicts():
    funnel = Funnel(SPACE)
    first = funnel.screen("x * square(x)")
    assert first.fate.reason == "unstable" and "stability" in first.seconds
    twin = funnel.screen("square(x) * x + 0")  # no FEC entry: rejected, not trained
    assert twin.fate == first.fate and "stability" not in twin.seconds


@pytest.mark.parametrize("name", baselines.names())
def test_every_baseline_passes_stability_in_its_space(name):
    space = load_space("sequence" if baselines.describe(name).tensor == "sequence" else "evonorm_b")
    verdict = check_stability(baselines.get(name), space)
    assert verdict.passed, verdict.values
    assert verdict.values["max_ratio"] < 1e3  # far below the 1e8 threshold


def test_stability_is_deterministic_and_leaves_the_callers_random_state_alone():
    g = baselines.get("evonorm_s0")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = stability_ratios(g, SPACE)
    assert torch.equal(torch.rand(3), expected)
    assert stability_ratios(g, SPACE) == first


def test_a_nan_ratio_is_the_recorded_worst():
    verdict = check_stability(LayerGraph.parse("sqrt(v0) + x"), SPACE)
    assert verdict.reason == "non_finite_gradient" and verdict.values["max_ratio"] is None


def test_flush_denormals_restores_the_previous_mode():
    def flushing():
        return bool(torch.tensor([1e-40]) * 1.0 == 0)

    assert not flushing()
    with _flush_denormals():
        assert flushing()
    assert not flushing()
    torch.set_flush_denormal(True)
    try:
        with _flush_denormals():
            pass
        assert flushing()  # a mode that was on stays on
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_stage_5_runs_where_the_caller_disabled_gradients(mode):
    with mode():
        result = Funnel(SPACE).screen(baselines.get("gn_relu"))
    assert result.passed and result.fate.stage == "stability"


def test_in_flight_survivors_stop_their_twins_until_released():
    funnel = Funnel(SPACE, stability=False)
    first = funnel.screen("abs(x) * v1 + v0", candidate_id="c-1")
    assert first.passed
    twin = funnel.screen("sqrt(square(x)) * v1 + v0")  # not trained yet: no FEC entry
    assert twin.fate.reason == "functional_duplicate" and twin.fitness is None
    assert twin.fate.values["candidate"] == "c-1" and "in flight" in twin.fate.detail
    funnel.release(first.functional_hash)  # e.g. its training crashed
    assert funnel.screen("abs(-x) * v1 + v0").passed


def test_verdict_values_are_read_only_and_json_safe():
    import json

    result = Funnel(SPACE).screen("x / v0")
    with pytest.raises(TypeError):
        result.fate.values["scale"] = 1.0
    assert json.loads(json.dumps(dict(result.fate.values))) == {"spread": None, "scale": None}
