"""SARQ priors and truncation against hand-computed self-information."""

import math

import numpy as np
import pytest

from indexer.sarq import PathPriors, SARQConfig, truncate
from sidcore.errors import DataError

# Four head items on a (2, 3, 2) codebook tree.
CODES = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 1]])
SIZES = (2, 3, 2)


def test_prefix_information_matches_hand_computation():
    a = 0.5
    priors = PathPriors.fit(CODES, SIZES, smoothing=a)
    # Item [0, 0, 1]: P(c1=0) = (3 + a) / (4 + 2a); P(c2=0 | 0) = (2 + a) / (3 + 3a);
    # P(c3=1 | 0,0) = (1 + a) / (2 + 2a).
    p1 = (3 + a) / (4 + 2 * a)
    p2 = (2 + a) / (3 + 3 * a)
    p3 = (1 + a) / (2 + 2 * a)
    expected = [-math.log(p1), -math.log(p1 * p2), -math.log(p1 * p2 * p3)]
    info = priors.prefix_information(np.array([[0, 0, 1]]))
    np.testing.assert_allclose(info[0], expected, rtol=1e-12)
    # An unseen path falls back to the smoothing mass: P(c1=1) = (1 + a)/(4 + 2a), P(c2=0 | 1) = a/(1 + 3a),
    # and under the never-seen prefix (1, 0) the last layer is uniform: a / (0 + 2a).
    q = [(1 + a) / (4 + 2 * a), a / (1 + 3 * a), 0.5]
    info = priors.prefix_information(np.array([[1, 0, 1]]))
    np.testing.assert_allclose(info[0], -np.log(np.cumprod(q)), rtol=1e-12)


def test_truncation_stops_at_first_layer_over_budget():
    info = np.array(
        [
            [0.5, 1.0, 1.1, 2.0],  # never over 1.2 at lengths 2..3 -> full depth 4
            [0.5, 1.3, 1.5, 2.0],  # over at length 2
            [0.5, 1.1, 1.4, 9.0],  # over at length 3
            [5.0, 5.0, 5.0, 5.0],  # over at length 1, but min_length is 2
        ]
    )
    cfg = SARQConfig(budget=1.2)
    lengths = truncate(info, cfg.budgets(4, info), cfg)
    assert lengths.tolist() == [4, 2, 3, 2]
    flipped = SARQConfig(budget=1.2, direction="dense-shorter")
    assert truncate(info, flipped.budgets(4, info), flipped).tolist() == [2, 4, 2, 4]
    per_layer = SARQConfig(budget=(1.0, 1.45))
    assert truncate(info, per_layer.budgets(4, info), per_layer).tolist() == [4, 2, 2, 2]
    one = SARQConfig(budget=0.6, min_length=1)
    assert truncate(info, one.budgets(4, info), one).tolist() == [2, 2, 2, 1]


def test_auto_budget_and_validation():
    head_info = np.array([[1.0, 2.0, 9.0, 9.0], [1.0, 4.0, 5.0, 9.0], [1.0, 6.0, 7.0, 9.0], [1.0, 8.0, 3.0, 9.0]])
    # Default: per checked layer (lengths 2 and 3), the quantile of the head paths' information.
    np.testing.assert_allclose(SARQConfig().budgets(4, head_info), [5.0, 6.0])
    np.testing.assert_allclose(SARQConfig(auto_quantile=0.25).budgets(4, head_info), [3.5, 4.5])
    with pytest.raises(DataError, match="2 budgets given but 1 layers"):
        SARQConfig(budget=(1.0, 2.0)).budgets(3, head_info)
    with pytest.raises(DataError, match="budget"):
        SARQConfig(budget=float("nan"))
    with pytest.raises(DataError, match="direction"):
        SARQConfig(direction="sideways")


def test_priors_state_round_trip():
    priors = PathPriors.fit(CODES, SIZES, smoothing=0.1)
    again = PathPriors.from_state(priors.state())
    probe = np.array([[0, 1, 1], [1, 2, 1], [1, 1, 1]])
    np.testing.assert_array_equal(priors.prefix_information(probe), again.prefix_information(probe))


def test_prefix_counts_count_paths_through_each_prefix():
    counts = PathPriors.fit(CODES, SIZES, smoothing=0.1).prefix_counts(np.array([[0, 0, 1], [1, 2, 1], [1, 0, 0]]))
    assert counts.tolist() == [[3, 2, 1], [1, 1, 1], [1, 0, 0]]


def test_max_group_keeps_crowded_prefixes_from_being_stopping_points():
    info = np.array([[0.5, 1.3, 1.5, 2.0]] * 3 + [[0.5, 1.1, 1.4, 9.0]])  # all over budget 1.2 by length 3
    through = np.array([[9, 5, 2, 1]] * 3 + [[9, 1, 1, 1]])  # catalog items through each prefix
    unbounded = SARQConfig(budget=1.2)
    assert truncate(info, unbounded.budgets(4, info), unbounded, through).tolist() == [2, 2, 2, 3]
    bounded = SARQConfig(budget=1.2, max_group=2)
    # The first three share a length-2 prefix that 5 items pass through: they stop at 3 instead,
    # where 2 pass; the fourth's length-2 prefix has room, but its information is under budget there.
    assert truncate(info, bounded.budgets(4, info), bounded, through).tolist() == [3, 3, 3, 3]
    assert truncate(info, bounded.budgets(4, info), SARQConfig(budget=1.2, max_group=1), through).tolist() == [4, 4, 4, 3]
    with pytest.raises(DataError, match="max_group"):
        SARQConfig(max_group=0)
