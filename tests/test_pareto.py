"""The non-dominated filter against the definition."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evonorm_search.pareto import non_dominated

from store_data import brute_force_front


@given(
    st.integers(1, 4).flatmap(
        lambda d: arrays(
            np.float64,
            st.tuples(st.integers(0, 1200), st.just(d)),
            elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, -1e-300, 1e-300]),
        )
    )
)
def test_matches_the_definition_with_ties_and_duplicates(points):
    """Few distinct values: many ties and exact duplicates, crossing the chunk size."""
    expected = brute_force_front({i: list(p) for i, p in enumerate(points)})
    assert set(non_dominated(points).tolist()) == expected


def test_large_random_fronts_match_the_definition():
    rng = np.random.default_rng(0)
    points = rng.random((3000, 3)).round(2)
    found = non_dominated(points)
    assert list(found) == sorted(brute_force_front({i: list(p) for i, p in enumerate(points)}))
    assert 10 < len(found) < 300


def test_equal_sums_do_not_hide_a_dominator():
    """Rounding can give a dominator the same float sum (1e16 + 1 == 1e16) as the many
    points it dominates, which then must not be visited before it."""
    points = np.array([[1e16, 0.0]] * 600 + [[1e16, 1.0]])
    assert list(non_dominated(points)) == [600]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        non_dominated(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        non_dominated(np.zeros(3))
