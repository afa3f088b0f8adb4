"""Pareto front and hypervolume on hand-made point sets."""

import itertools
import random

import pytest

from dynvid.metrics.pareto import dominates, hypervolume, pareto_front

ACC_COST = ("max", "min")  # (clip-1, GFLOPs)


def test_dominance_respects_directions():
    assert dominates((0.9, 1.0), (0.8, 1.0), ACC_COST)
    assert dominates((0.8, 0.5), (0.8, 1.0), ACC_COST)
    assert not dominates((0.9, 2.0), (0.8, 1.0), ACC_COST)  # a trade-off
    assert not dominates((0.8, 1.0), (0.8, 1.0), ACC_COST)  # equal points do not dominate
    assert dominates((1.0, 1.0), (2.0, 2.0), ("min", "min"))
    assert dominates((2.0, 2.0), (1.0, 1.0), ("max", "max"))


def test_front_of_a_hand_made_set():
    points = [(0.90, 4.0), (0.85, 2.0), (0.70, 1.0), (0.80, 3.0), (0.60, 1.5), (0.90, 5.0)]
    # (0.80, 3.0) is dominated by (0.85, 2.0); (0.60, 1.5) by (0.70, 1.0); (0.90, 5.0) by (0.90, 4.0)
    assert pareto_front(points, ACC_COST) == [0, 1, 2]


def test_ties_and_duplicates():
    points = [(0.8, 2.0), (0.8, 2.0), (0.8, 3.0), (0.7, 2.0), (0.9, 2.5)]
    # both copies of (0.8, 2.0) stay; a tie on one objective with a worse other one is dominated
    assert pareto_front(points, ACC_COST) == [0, 1, 4]
    assert pareto_front([(1.0, 1.0)] * 3, ACC_COST) == [0, 1, 2]
    assert pareto_front([], ACC_COST) == []


def test_hypervolume_two_objectives_by_hand():
    # accuracy max, GFLOPs min, reference (0, 4): rectangles [0,0.5]x[1,4] ∪ [0,0.8]x[2,4] ∪ [0,0.9]x[3,4]
    points = [(0.5, 1.0), (0.8, 2.0), (0.9, 3.0)]
    expected = 0.5 * 3 + (0.8 - 0.5) * 2 + (0.9 - 0.8) * 1
    assert hypervolume(points, ACC_COST, (0.0, 4.0)) == pytest.approx(expected)
    # dominated points and duplicates add nothing
    assert hypervolume(points + [(0.4, 3.5), (0.8, 2.0)], ACC_COST, (0.0, 4.0)) == pytest.approx(expected)
    # a point outside the reference box adds nothing
    assert hypervolume(points + [(0.95, 4.5)], ACC_COST, (0.0, 4.0)) == pytest.approx(expected)
    assert hypervolume([], ACC_COST, (0.0, 4.0)) == 0.0


def test_hypervolume_three_objectives_against_a_grid_count():
    rng = random.Random(0)
    points = [tuple(rng.randint(0, 9) for _ in range(3)) for _ in range(12)]
    ref = (10, 10, 10)
    # count the unit cells [x, x+1)^3 dominated by some point (minimisation)
    cells = sum(1 for c in itertools.product(range(10), repeat=3)
                if any(all(p[k] <= c[k] for k in range(3)) for p in points))
    assert hypervolume(points, ("min",) * 3, ref) == pytest.approx(cells)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="direction"):
        pareto_front([(1, 2)], ("max", "smaller"))
    with pytest.raises(ValueError, match="point 1 has 1 values for 2 objectives"):
        pareto_front([(1, 2), (3,)], ACC_COST)
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([(float("nan"), 1.0)], ACC_COST, (0, 2))
