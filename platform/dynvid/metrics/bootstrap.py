"""Paired bootstrap confidence intervals of an accuracy difference.

Two models scored on the *same* clips give paired outcomes ``(a_i, b_i)``. The difference of
their accuracies, ``mean(a) - mean(b)``, varies less than two independent accuracies would
(the clips that are easy or hard for both cancel), so its interval is taken by resampling
clips, not models: each bootstrap replicate draws ``n`` clip indices with replacement and
recomputes the difference on them; the interval is the replicates' percentile interval
(Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, Ch. 13). Used by the VA-RED²
benchmark (``jobs/bench_vared.py``) for its "at most 1 point lower" target.

A statistic that is not a mean over samples (mAP: precision and recall pool the detections of
every frame) is resampled the same way by :func:`cluster_bootstrap_ci`: a replicate draws ``n``
clusters (videos) with replacement and recomputes the statistic on the drawn multiset, given
as how often each cluster was drawn. Looking Fast and Slow's benchmark uses it for the mAP
gain of a learned policy over the fixed ones at the same fraction of f0 runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["PairedInterval", "cluster_bootstrap_ci", "paired_bootstrap_ci"]


@dataclass(frozen=True)
class PairedInterval:
    """``mean(a) - mean(b)`` on the same samples and its bootstrap percentile interval."""

    diff: float
    """The observed difference of the means."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    confidence: float
    """Coverage of the interval, e.g. 0.95."""
    resamples: int
    """Bootstrap replicates drawn."""
    samples: int
    """Paired samples ``n``."""

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap_ci(a: torch.Tensor, b: torch.Tensor, confidence: float = 0.95, resamples: int = 10000,
                        seed: int = 0, chunk: int = 1000) -> PairedInterval:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` over paired samples.

    Args:
        a: per-sample scores of the first model, shape ``(n,)`` (e.g. 0/1 correctness per clip).
        b: the second model's scores on the same samples, in the same order.
        confidence: coverage of the two-sided interval, in (0, 1).
        resamples: bootstrap replicates (each draws ``n`` sample indices with replacement).
        seed: seed of the resampling, so the interval is reproducible.
        chunk: replicates drawn at once (bounds memory at ``chunk × n`` indices).
    """
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.numel()} and {b.numel()}")
    n = a.numel()
    if n == 0:
        raise ValueError("paired_bootstrap_ci needs at least one sample")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    d = a - b  # pairing: a replicate resamples clips, each carrying both models' outcomes
    g = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, resamples, chunk):
        idx = torch.randint(0, n, (min(chunk, resamples - start), n), generator=g)
        means.append(d[idx].mean(1))
    means = torch.cat(means)
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return PairedInterval(diff=float(d.mean()), low=low, high=high, confidence=confidence, resamples=resamples,
                          samples=n)


def cluster_bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, confidence: float = 0.95,
                         resamples: int = 500, seed: int = 0) -> PairedInterval:
    """Percentile bootstrap interval of ``statistic`` over ``n`` clusters (e.g. videos).

    ``statistic(counts)`` gets how often each cluster was drawn (``(n,)`` integers summing to
    ``n``; all ones is the observed data) and returns the value on that multiset, e.g. a
    difference of two models' mAP on the same drawn videos (pairing: both models see the same
    replicate). Returns the observed value as ``diff`` and the interval."""
    if n < 1:
        raise ValueError("cluster_bootstrap_ci needs at least one cluster")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    observed = float(statistic(np.ones(n, dtype=np.int64)))
    values = np.array([statistic(np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(resamples)])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return PairedInterval(diff=observed, low=float(low), high=float(high), confidence=confidence,
                          resamples=resamples, samples=n)
