"""Static NAS baselines over the trained supernet (Sec. 4.2 "Comparison with static NAS models",
Fig. 4; the procedure of BigNAS [36]).

For each cost budget — a fraction of the full backbone's MACs — :func:`nas_search` samples
subnets whose backbone MACs lie within ``[lower · budget, budget]`` (the cheap end of the
space is dominated, as BigNAS's coarse-to-fine search keeps candidates near the constraint),
recalibrates each one's BatchNorm statistics on training frames
(:func:`~.modules.recalibrate_bn`), scores it by AP@[.5:.95] on *search* videos taken from
the training split (the val videos are never used to choose), and keeps the best. The
winners are then evaluated like any static network.

Choices: the search is random sampling under the constraint, not BigNAS's coarse-to-fine
grid: with ``nas_candidates`` samples per budget on two cores that is the whole budget; the
backbone MACs (:func:`~dynvid.backbones.efficientnet.supernet_macs` without the head conv)
are the constraint, since the neck and head do not change with the ratios.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from dynvid.backbones.efficientnet import RATIOS, supernet_macs

__all__ = ["backbone_macs", "best_within", "nas_search", "sample_within", "subnet_cost"]


def backbone_macs(ratios: Sequence[int], size: int, width_mult: float = 1.0) -> int:
    """MACs of the detector backbone of configuration ``ratios`` at ``size × size``."""
    return supernet_macs(ratios, size, size, width_mult=width_mult, head=False)


def sample_within(rng: random.Random, macs: Callable[[Sequence[int]], float], budget: float, lower: float = 0.9,
                  tries: int = 5000) -> tuple[int, ...]:
    """A random configuration with ``lower · budget <= macs(ratios) <= budget`` (``macs``: any
    cost of a configuration)."""
    for _ in range(tries):
        ratios = tuple(rng.choice(RATIOS) for _ in range(6))
        if lower * budget <= macs(ratios) <= budget:
            return ratios
    raise ValueError(f"no configuration with cost within [{lower:g}, 1] × {budget:.4g} after {tries} samples; "
                     "loosen the budget")


def nas_search(budgets: Sequence[float], candidates: int, macs: Callable[[Sequence[int]], int],
               score: Callable[[tuple[int, ...]], float], seed: int = 0, say=print) -> list[dict]:
    """Per budget fraction of the full backbone's MACs: the best of ``candidates`` sampled subnets
    by ``score`` (higher is better). Returns ``[{"budget", "ratios", "search_AP", "backbone_gmacs",
    "tried"}]``."""
    full = macs((max(RATIOS),) * 6)
    rng = random.Random(seed)
    out = []
    for budget in budgets:
        if not 0 < budget <= 1:
            raise ValueError(f"ant.nas_budgets are fractions of the full backbone's MACs in (0, 1], got {budget}")
        best, best_score, tried = best_within(rng, macs, budget * full, candidates, score)
        say(f"[dynvid] NAS budget {budget:g}: best {best} AP {best_score:.4f} of {tried} subnets")
        out.append({"budget": budget, "ratios": list(best), "search_AP": best_score,
                    "backbone_gmacs": macs(best) / 1e9, "tried": tried})
    return out


def best_within(rng: random.Random, cost: Callable[[Sequence[int]], float], budget: float, candidates: int,
                score: Callable[[tuple[int, ...]], float]) -> tuple[tuple[int, ...], float, int]:
    """The best by ``score`` of ``candidates`` configurations sampled with
    ``0.9 · budget <= cost(ratios) <= budget`` (:func:`sample_within`; a configuration drawn
    twice is scored once): ``(ratios, score, distinct subnets scored)``."""
    if candidates < 1:
        raise ValueError(f"ant.nas_candidates must be >= 1, got {candidates}")
    tried: dict[tuple[int, ...], float] = {}
    for _ in range(candidates):
        ratios = sample_within(rng, cost, budget)
        if ratios not in tried:
            tried[ratios] = score(ratios)
    best = max(tried, key=tried.get)
    return best, tried[best], len(tried)


def subnet_cost(table, ratios: Sequence[int]) -> float:
    """A configuration's cost from a per-stage table ``(6, len(RATIOS))``
    (:func:`~.training.stage_costs`): the sum of its stages' entries."""
    return float(sum(table[s][RATIOS.index(r)] for s, r in enumerate(ratios)))
