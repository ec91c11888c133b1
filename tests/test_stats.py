"""Intervals and Holm-corrected paired comparisons against numbers worked out by hand.

With 2 degrees of freedom Student's t has a closed form, P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2,
so every expected figure below follows from arithmetic on the scores."""

import math

import pytest

from evonorm_search.stats import compare_paired, holm, mean_interval


def t2_quantile(level: float) -> float:
    """The two-sided ``level`` quantile of t with 2 degrees of freedom, by hand."""
    c = level  # t / sqrt(t^2 + 2) = level for the two-sided quantile
    return c * math.sqrt(2 / (1 - c * c))


def test_the_t_interval_of_three_seeds():
    interval = mean_interval([0.70, 0.72, 0.74])
    se = 0.02 / math.sqrt(3)  # sample sd 0.02
    assert t2_quantile(0.95) == pytest.approx(4.302653, abs=1e-6)
    assert interval.mean == pytest.approx(0.72)
    assert interval.low == pytest.approx(0.72 - 4.302653 * se, abs=1e-6)
    assert interval.high == pytest.approx(0.72 + 0.049683, abs=1e-6)
    assert interval.n == 3 and interval.level == 0.95
    single = mean_interval([0.5])
    assert single.mean == 0.5 and single.low is None and single.half_width is None
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_holm_steps_down_and_stays_monotone():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_paired_comparisons_match_a_hand_computation():
    comparator = {1: 0.70, 2: 0.72, 3: 0.71}
    candidates = {
        "a": {1: 0.74, 2: 0.75, 3: 0.76},  # differences .04 .03 .05: mean .04, sd .01
        "b": {1: 0.69, 2: 0.73, 3: 0.70},  # differences -.01 .01 -.01: mean -1/300, sd .011547
        "c": {1: 0.80, 4: 0.90},  # one shared seed: no test
    }
    a, b, c = compare_paired(comparator, candidates)
    # a: t = .04 / (.01 / sqrt 3) = sqrt 48; p = 1 - sqrt(48) / sqrt(50)
    p_a = 1 - math.sqrt(48 / 50)
    # b: t = -0.5; p = 1 - 0.5 / sqrt(2.25) = 2/3
    p_b = 2 / 3
    assert a.p == pytest.approx(p_a, abs=1e-9) and b.p == pytest.approx(p_b, abs=1e-9)
    # Holm over the two testable comparisons: 2 p_a, then max(2 p_a, p_b).
    assert a.p_holm == pytest.approx(2 * p_a) and b.p_holm == pytest.approx(p_b)
    assert a.verdict == "better" and b.verdict == "no difference"
    se_a = 0.01 / math.sqrt(3)
    assert a.difference.mean == pytest.approx(0.04)
    assert a.difference.low == pytest.approx(0.04 - t2_quantile(0.95) * se_a)
    # m = 3 compared: the simultaneous interval is at 1 - 0.05 / 3.
    assert a.simultaneous.high == pytest.approx(0.04 + t2_quantile(1 - 0.05 / 3) * se_a)
    assert a.seeds == (1, 2, 3) and c.seeds == (1,)
    assert c.p is None and c.p_holm is None and c.verdict == "no difference"
    assert c.difference.mean == pytest.approx(0.10) and c.difference.low is None


def test_a_significant_loss_and_degenerate_pairs():
    comparator = {0: 0.8, 1: 0.8, 2: 0.8}
    [worse, same] = compare_paired(
        comparator, {"worse": {0: 0.5, 1: 0.5, 2: 0.5}, "same": dict(comparator)}
    )
    assert worse.p == 0.0 and worse.verdict == "worse"  # identical differences, no spread
    assert same.p == 1.0 and same.verdict == "no difference"
    with pytest.raises(ValueError, match="shares no seed"):
        compare_paired(comparator, {"x": {7: 0.1}})
