"""Static NAS baselines over the trained supernet (Sec. 4.2 "Comparison with static NAS models",
Fig. 4; the procedure of BigNAS [36]).

For each cost budget — a fraction of the full backbone's MACs — :func:`nas_search` samples
subnets whose backbone MACs lie within ``[lower · budget, budget]`` (the cheap end of the
space is dominated, as BigNAS's coarse-to-fine search keeps candidates near the constraint),
recalibrates each one's BatchNorm statistics on training frames
(:func:`~.modules.recalibrate_bn`), scores it by AP@[.5:.95] on *search* videos taken from
the training split (the val videos are never used to choose), and keeps the best. The
winners are then evaluated like any static network.

Two searches (``ant.nas_search``), both scoring at most ``nas_candidates`` subnets per budget
in full:

- ``"random"``: the best of ``nas_candidates`` configurations sampled under the constraint
  (:func:`best_within`).
- ``"sensitivity"`` (the default since issue 23): first the full network and each stage alone
  narrowed to each smaller ratio are scored, 1 + 6 × 5 = 31 subnets shared by every budget
  (:func:`stage_sensitivity`); every configuration within the budget is then ranked by the
  sum of its stages' AP drops, and the ``nas_candidates`` best ranked are scored in full
  (:func:`sensitivity_within`). This is the coarse-to-fine idea of BigNAS (coarse: a cheap
  estimate over the whole space; fine: exact scores near its best) with a per-stage
  sensitivity table as the coarse step, as NetAdapt and AMC prune layer by layer. Why: with
  6⁶ configurations, 12 random samples rarely hit the narrow region where the stages whose
  width buys no AP are cut and the others kept; stop 33's random search left the NAS rows,
  and the gate prior that uses the same search, on the cheap side of what the weights allow.

Choices: the backbone MACs (:func:`~dynvid.backbones.efficientnet.supernet_macs` without the
head conv) are the NAS rows' constraint, since the neck and head do not change with the
ratios; the gate prior searches under stage 2's cost table (``ANTTask.set_gate_prior``).
The drops are assumed additive over stages only to rank; the winner is chosen by its own score.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Sequence

from dynvid.backbones.efficientnet import RATIOS, supernet_macs

__all__ = ["BUDGET_FLOOR", "SEARCHES", "backbone_macs", "best_within", "nas_search", "sample_within", "search_within",
           "sensitivity_within", "stage_sensitivity", "subnet_cost", "within_budget"]

SEARCHES = ("random", "sensitivity")
"""The values of ``ant.nas_search``."""

BUDGET_FLOOR = 0.9
"""A budget's search window is ``[BUDGET_FLOOR, 1] × budget``: subnets that use most of it."""

LOOSEN = "loosen the budget (ant.nas_budgets for the NAS rows, ant.cost_target for the gate prior)"


def backbone_macs(ratios: Sequence[int], size: int, width_mult: float = 1.0) -> int:
    """MACs of the detector backbone of configuration ``ratios`` at ``size × size``."""
    return supernet_macs(ratios, size, size, width_mult=width_mult, head=False)


def sample_within(rng: random.Random, macs: Callable[[Sequence[int]], float], budget: float, lower: float = BUDGET_FLOOR,
                  tries: int = 5000) -> tuple[int, ...]:
    """A random configuration with ``lower · budget <= macs(ratios) <= budget`` (``macs``: any
    cost of a configuration)."""
    for _ in range(tries):
        ratios = tuple(rng.choice(RATIOS) for _ in range(6))
        if lower * budget <= macs(ratios) <= budget:
            return ratios
    raise ValueError(f"no configuration with cost within [{lower:g}, 1] × {budget:.4g} after {tries} samples; "
                     f"{LOOSEN}")


def nas_search(budgets: Sequence[float], candidates: int, macs: Callable[[Sequence[int]], int],
               score: Callable[[tuple[int, ...]], float], seed: int = 0, say=print,
               search: str = "random") -> list[dict]:
    """Per budget fraction of the full backbone's MACs: the best subnet by ``score`` (higher is
    better) that ``search`` finds (see the module docstring; ``"sensitivity"`` scores its
    per-stage table once for every budget; the function keeps ``"random"`` as its default, the
    search of its earlier callers, while ``ant.nas_search`` defaults to ``"sensitivity"``).
    Returns ``[{"budget", "ratios", "search_AP", "backbone_gmacs", "tried"}]`` (``tried``: the
    candidates scored in full for that budget, the shared table not counted)."""
    if search not in SEARCHES:
        raise ValueError(f"ant.nas_search must be one of {SEARCHES}, got {search!r}")
    if candidates < 1:
        raise ValueError(f"ant.nas_candidates must be >= 1, got {candidates}")
    for budget in budgets:
        if not 0 < budget <= 1:
            raise ValueError(f"ant.nas_budgets are fractions of the full backbone's MACs in (0, 1], got {budget}")
    macs = functools.lru_cache(maxsize=None)(macs)  # the sensitivity search costs all 6^6 subnets per budget
    full = macs((max(RATIOS),) * 6)
    rng = random.Random(seed)
    table = None
    if search == "sensitivity" and budgets:
        for budget in budgets:  # an empty budget fails before the table's 31 evaluations
            within_budget(macs, budget * full)
        table = stage_sensitivity(score, say)
    out = []
    for budget in budgets:
        best, best_score, tried = search_within(search, rng, macs, budget * full, candidates, score, table=table)
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


def within_budget(cost: Callable[[Sequence[int]], float], budget: float, lower: float = BUDGET_FLOOR) -> list[tuple[int, ...]]:
    """Every configuration with ``lower · budget <= cost(ratios) <= budget`` (all 6⁶ costed);
    a ``ValueError`` naming the settings to loosen if there is none."""
    within = [r for r in itertools.product(RATIOS, repeat=6) if lower * budget <= cost(r) <= budget]
    if not within:
        raise ValueError(f"no configuration with cost within [{lower:g}, 1] × {budget:.4g}; {LOOSEN}")
    return within


def stage_sensitivity(score: Callable[[tuple[int, ...]], float], say=None) -> tuple[float, dict, dict]:
    """The coarse step of the ``"sensitivity"`` search: ``score`` of the full configuration and,
    for each stage and each smaller ratio, how much it drops with that stage alone narrowed
    (1 + 6 × (len(RATIOS) − 1) subnets). Returns ``(full score, {(stage, ratio): drop},
    {ratios: score} of those subnets)``; the last lets the fine step reuse a score."""
    top = max(RATIOS)
    full = score((top,) * 6)
    scores = {(top,) * 6: full}
    drops = {}
    for stage in range(6):
        for r in RATIOS:
            if r != top:
                ratios = tuple(r if s == stage else top for s in range(6))
                scores[ratios] = score(ratios)
                drops[stage, r] = full - scores[ratios]
        if say is not None:
            row = " ".join(f"{r}:{drops[stage, r]:+.3f}" for r in RATIOS if r != top)
            say(f"[dynvid] NAS sensitivity, stage {stage + 1} alone narrowed (AP drop by ratio): {row}")
    return full, drops, scores


def sensitivity_within(table: tuple[float, dict, dict], cost: Callable[[Sequence[int]], float], budget: float,
                       candidates: int, score: Callable[[tuple[int, ...]], float],
                       lower: float = BUDGET_FLOOR) -> tuple[tuple[int, ...], float, int]:
    """The fine step of the ``"sensitivity"`` search: every configuration with ``lower · budget
    <= cost(ratios) <= budget`` ranked by its predicted score (the full score less the sum of
    its stages' drops in ``table``, :func:`stage_sensitivity`), the ``candidates`` best ranked
    scored by ``score`` (a subnet of the table is not scored again). Returns ``(ratios, score,
    candidates scored in full)``, as :func:`best_within`."""
    if candidates < 1:
        raise ValueError(f"ant.nas_candidates must be >= 1, got {candidates}")
    full, drops, known = table
    top = max(RATIOS)
    within = within_budget(cost, budget, lower)
    predicted = {r: full - sum(drops[s, x] for s, x in enumerate(r) if x != top) for r in within}
    ranked = sorted(within, key=lambda r: (-predicted[r], r))[:candidates]
    scored = {r: known[r] if r in known else score(r) for r in ranked}
    best = max(scored, key=scored.get)
    return best, scored[best], len(scored)


def search_within(search: str, rng: random.Random, cost: Callable[[Sequence[int]], float], budget: float,
                  candidates: int, score: Callable[[tuple[int, ...]], float], say=None,
                  table: tuple[float, dict, dict] | None = None) -> tuple[tuple[int, ...], float, int]:
    """One budget's best subnet by ``search`` (``"random"``: :func:`best_within`;
    ``"sensitivity"``: :func:`sensitivity_within` on ``table``, or on a
    :func:`stage_sensitivity` table scored here and printed with ``say`` when none is given)."""
    if search not in SEARCHES:
        raise ValueError(f"ant.nas_search must be one of {SEARCHES}, got {search!r}")
    if candidates < 1:
        raise ValueError(f"ant.nas_candidates must be >= 1, got {candidates}")
    if search == "random":
        return best_within(rng, cost, budget, candidates, score)
    if table is None:
        within_budget(cost, budget)  # an empty budget fails before the table's 31 evaluations
        table = stage_sensitivity(score, say)
    return sensitivity_within(table, cost, budget, candidates, score)
