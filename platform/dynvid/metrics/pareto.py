"""Pareto fronts and hypervolume of accuracy–efficiency trade-offs (sweep reports).

Every point is a vector of objective values with a direction per objective (``"max"`` for
accuracy, ``"min"`` for GFLOPs / BOPs). Internally everything is turned into minimisation
(a ``"max"`` objective is negated), so one definition serves all:

- a dominates b when a is no worse than b in every objective and strictly better in at
  least one (:func:`dominates`);
- the front is the set of points no other point dominates (:func:`pareto_front`).
  Duplicates do not dominate each other, so every copy of a non-dominated point is on
  the front; :func:`pareto_front` keeps them all and reports their indices, so a table can
  show which trials reached the same operating point;
- the hypervolume is the measure of the region dominated by the front and bounded by a
  reference point (:func:`hypervolume`): exact, by slicing along the first objective and
  recursing on the others (the "HSO" scheme). Sweeps have tens to hundreds of points and
  two or three objectives, for which this is instant.

A point that does not strictly improve on the reference point in every objective adds no
volume (the usual convention: the reference point bounds the region of interest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["dominates", "hypervolume", "pareto_front", "to_minimization"]

DIRECTIONS = ("min", "max")


def _check(points: Sequence[Sequence[float]], directions: Sequence[str]) -> None:
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"objective direction must be 'min' or 'max', got {d!r}")
    for i, p in enumerate(points):
        if len(p) != len(directions):
            raise ValueError(f"point {i} has {len(p)} values for {len(directions)} objectives")
        for v in p:
            if not isinstance(v, (int, float)) or math.isnan(float(v)):
                raise ValueError(f"point {i} has a non-numeric or NaN objective value: {list(p)}")


def to_minimization(point: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """The point with every ``"max"`` objective negated (all objectives minimised)."""
    return tuple(-float(v) if d == "max" else float(v) for v, d in zip(point, directions))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one."""
    _check([a, b], directions)
    ma, mb = to_minimization(a, directions), to_minimization(b, directions)
    return all(x <= y for x, y in zip(ma, mb)) and any(x < y for x, y in zip(ma, mb))


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order (duplicates all kept)."""
    _check(points, directions)
    mins = [to_minimization(p, directions) for p in points]
    front = []
    for i, p in enumerate(mins):
        if not any(all(x <= y for x, y in zip(q, p)) and any(x < y for x, y in zip(q, p))
                   for j, q in enumerate(mins) if j != i):
            front.append(i)
    return front


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """Measure of the objective space dominated by ``points`` and bounded by ``reference``.

    Args:
        points: objective vectors (any set: dominated points and duplicates add nothing).
        directions: ``"min"`` / ``"max"`` per objective.
        reference: the bounding point, worse than every point of interest in every
            objective (e.g. accuracy 0 and the static model's GFLOPs).
    """
    _check([*points, reference], directions)
    ref = to_minimization(reference, directions)
    inside = [to_minimization(p, directions) for p in points]
    inside = [p for p in inside if all(x < r for x, r in zip(p, ref))]
    return _hso(sorted(set(inside)), ref)


def _hso(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume (minimisation) of ``points``, all strictly better than ``ref``."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    points = sorted(points)  # by the first objective
    volume = 0.0
    for k, p in enumerate(points):
        upper = points[k + 1][0] if k + 1 < len(points) else ref[0]
        width = upper - p[0]
        if width > 0:  # the slab [p0, upper) is dominated by every point with first value <= p0
            volume += width * _hso([q[1:] for q in points[: k + 1]], ref[1:])
    return volume
