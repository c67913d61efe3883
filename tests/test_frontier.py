"""Non-dominated sort, dominance, hypervolume and the reference point: against the pure-Python
definitions saliq had before moocore (tests/frontier_reference.py), Optuna's WFG, hand-computed
values and a Monte Carlo estimate."""

from __future__ import annotations

import math

import frontier_reference as reference
import numpy as np
import pytest

from saliq.frontier import dominates, hypervolume, non_dominated, reference_point


def _random_set(rng, size: int, dims: int) -> tuple[list[list[float]], list[str]]:
    """Mixed directions; few distinct values, so ties and duplicates are common."""
    directions = [("max", "min")[int(b)] for b in rng.integers(0, 2, dims)]
    points = rng.integers(0, 6, (size, dims)).astype(float).tolist()
    return points + points[:3], directions


@pytest.mark.parametrize("seed", range(12))
def test_non_dominated_matches_the_pure_python_definition(seed):
    rng = np.random.default_rng(seed)
    points, directions = _random_set(rng, 40, 1 + seed % 4)
    assert non_dominated(points, directions) == reference.non_dominated(points, directions)


@pytest.mark.parametrize("seed", range(12))
def test_hypervolume_matches_the_pure_python_slicing(seed):
    rng = np.random.default_rng(seed)
    points, directions = _random_set(rng, 30, 2 + seed % 3)
    points += [[math.nan] * len(directions), [math.inf] * len(directions)]
    ref = reference_point(points[:-2], directions)
    expected = reference.hypervolume(points, directions, ref)
    assert hypervolume(points, directions, ref) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_matches_optunas_wfg(seed):
    from optuna._hypervolume import compute_hypervolume  # private API: an oracle, test-only

    rng = np.random.default_rng(100 + seed)
    dims = 2 + seed % 3
    directions = [("max", "min")[int(b)] for b in rng.integers(0, 2, dims)]
    points = rng.random((150, dims))
    points[:5] = points[5:10]  # duplicates
    ref = np.where([d == "max" for d in directions], -0.1, 1.1)
    losses = np.where([d == "max" for d in directions], -points, points)
    oracle = compute_hypervolume(losses, np.where([d == "max" for d in directions], -ref, ref))
    value = hypervolume(points.tolist(), directions, ref.tolist())
    assert value == pytest.approx(oracle, rel=1e-12)


def test_a_point_with_a_nan_is_on_no_frontier_and_dominates_nothing():
    points = [(0.9, math.nan), (0.8, 20), (math.nan, math.nan), (0.7, 30)]
    assert non_dominated(points, ["max", "min"]) == [1]
    assert non_dominated([(math.nan, 1.0)], ["max", "min"]) == []


def test_points_must_have_one_value_per_objective():
    with pytest.raises(ValueError, match="2 values, one per objective"):
        non_dominated([(1, 2, 3)], ["max", "min"])


def test_non_dominated_keeps_duplicates_and_input_order():
    points = [(0.9, 10), (0.8, 20), (0.9, 10), (0.95, 30), (0.5, 5)]
    assert non_dominated(points, ["max", "min"]) == [0, 2, 3, 4]
    assert non_dominated([], ["max"]) == []


def test_dominates_with_mixed_directions():
    d = ["max", "min"]
    assert dominates((0.9, 10), (0.8, 20), d)
    assert dominates((0.9, 10), (0.9, 20), d)
    assert not dominates((0.8, 20), (0.9, 10), d)
    assert not dominates((0.9, 10), (0.9, 10), d)  # equal: not better in any
    assert not dominates((0.9, 20), (0.8, 10), d) and not dominates((0.8, 10), (0.9, 20), d)
    assert dominates((1, 1), (2, 2), ["min", "min"]) and dominates((2, 2), (1, 1), ["max", "max"])
    with pytest.raises(ValueError):
        dominates((1, 2), (1, 2, 3), d)


def test_hypervolume_hand_computed_2d():
    staircase = [(1, 3), (2, 2), (3, 1)]
    assert hypervolume(staircase, ["min", "min"], (4, 4)) == 6.0
    assert hypervolume(staircase + [(3, 3), (4, 0)], ["min", "min"], (4, 4)) == 6.0
    # accuracy max, bits min: boxes 0.9*100 and 0.8*150 overlapping in 0.8*100
    value = hypervolume([(0.9, 100), (0.8, 50)], ["max", "min"], (0.0, 200))
    assert value == pytest.approx(130.0, abs=1e-12)
    assert hypervolume([], ["min", "min"], (1, 1)) == 0.0
    assert hypervolume([(1, 1), (math.nan, 0)], ["min", "min"], (2, 2)) == 1.0


def test_hypervolume_hand_computed_3d():
    assert hypervolume([(0, 0, 0)], ["min"] * 3, (1, 2, 3)) == 6.0
    # boxes 2*2*1 and 1*1*2 that share the unit cube [1,2]^3
    assert hypervolume([(0, 0, 1), (1, 1, 0)], ["min"] * 3, (2, 2, 2)) == 5.0
    assert hypervolume([(1, 1, 1)], ["max"] * 3, (0, 0, 0)) == 1.0
    assert hypervolume([(0.5, 1.0, 2.0)], ["max", "max", "min"], (0.0, 0.0, 4.0)) == 1.0


def test_hypervolume_equals_monte_carlo_in_3d():
    rng = np.random.default_rng(0)
    points = rng.random((12, 3))
    ref = np.ones(3)
    exact = hypervolume(points.tolist(), ["min"] * 3, ref.tolist())
    samples = rng.random((400_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for p in points:
        covered |= np.all(samples >= p, axis=1)
    estimate = covered.mean()  # the box [0, 1]^3 has volume 1
    sigma = math.sqrt(estimate * (1 - estimate) / len(samples))
    assert abs(exact - estimate) < 4 * sigma
    # the same points, as maximisation of (1 - x)
    assert hypervolume((1 - points).tolist(), ["max"] * 3, [0, 0, 0]) == pytest.approx(exact)


def test_reference_point():
    points = [(0.9, 100, 0.3), (0.8, 50, -0.2)]
    assert reference_point(points, ["max", "min", "max"]) == [0.0, 100, -0.2]


