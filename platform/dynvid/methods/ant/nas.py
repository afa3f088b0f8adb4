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

__all__ = ["backbone_macs", "nas_search", "sample_within"]


def backbone_macs(ratios: Sequence[int], size: int, width_mult: float = 1.0) -> int:
    """MACs of the detector backbone of configuration ``ratios`` at ``size × size``."""
    return supernet_macs(ratios, size, size, width_mult=width_mult, head=False)


def sample_within(rng: random.Random, macs: Callable[[Sequence[int]], int], budget: float, lower: float = 0.9,
                  tries: int = 5000) -> tuple[int, ...]:
    """A random configuration with ``lower · budget <= macs(ratios) <= budget``."""
    for _ in range(tries):
        ratios = tuple(rng.choice(RATIOS) for _ in range(6))
        if lower * budget <= macs(ratios) <= budget:
            return ratios
    raise ValueError(f"no configuration within [{lower:g}, 1] × {budget / 1e9:.4f} GMACs after {tries} samples; "
                     "loosen the budget")


def nas_search(budgets: Sequence[float], candidates: int, macs: Callable[[Sequence[int]], int],
               score: Callable[[tuple[int, ...]], float], seed: int = 0, say=print) -> list[dict]:
    """Per budget fraction of the full backbone's MACs: the best of ``candidates`` sampled subnets
    by ``score`` (higher is better). Returns ``[{"budget", "ratios", "search_AP", "backbone_gmacs",
    "tried"}]``."""
    if candidates < 1:
        raise ValueError(f"ant.nas_candidates must be >= 1, got {candidates}")
    full = macs((max(RATIOS),) * 6)
    rng = random.Random(seed)
    out = []
    for budget in budgets:
        if not 0 < budget <= 1:
            raise ValueError(f"ant.nas_budgets are fractions of the full backbone's MACs in (0, 1], got {budget}")
        tried: dict[tuple[int, ...], float] = {}
        for _ in range(candidates):
            ratios = sample_within(rng, macs, budget * full)
            if ratios not in tried:
                tried[ratios] = score(ratios)
        best = max(tried, key=tried.get)
        say(f"[dynvid] NAS budget {budget:g}: best {best} AP {tried[best]:.4f} of {len(tried)} subnets")
        out.append({"budget": budget, "ratios": list(best), "search_AP": tried[best],
                    "backbone_gmacs": macs(best) / 1e9, "tried": len(tried)})
    return out
