"""Tests of dynvid.metrics.bootstrap: the paired bootstrap interval against expectations
computed independently (a constructed difference, the normal-theory width of a mean of paired
differences, the coverage over repeated experiments)."""

import math

import numpy as np

import pytest
import torch

from dynvid.metrics.bootstrap import cluster_bootstrap_ci, paired_bootstrap_ci

Z95 = 1.959964  # standard normal 97.5% quantile


def test_constructed_difference_is_the_observed_one_and_covered() -> None:
    # 2000 clips: both right on 1200, both wrong on 700, a alone right on 70, b alone on 30
    a = torch.tensor([1] * 1200 + [0] * 700 + [1] * 70 + [0] * 30)
    b = torch.tensor([1] * 1200 + [0] * 700 + [0] * 70 + [1] * 30)
    ci = paired_bootstrap_ci(a, b, resamples=4000)
    assert ci.diff == pytest.approx(40 / 2000)
    assert ci.low < 40 / 2000 < ci.high
    assert ci.low > 0  # 70 against 30 discordant clips: a is better beyond doubt at 95%
    assert (ci.samples, ci.resamples, ci.confidence) == (2000, 4000, 0.95)


def test_identical_models_have_a_zero_width_interval() -> None:
    a = torch.randint(0, 2, (500,), generator=torch.Generator().manual_seed(1))
    ci = paired_bootstrap_ci(a, a.clone(), resamples=500)
    assert (ci.diff, ci.low, ci.high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("flip", [None, 0.05])
def test_width_matches_the_normal_theory_of_a_mean_of_paired_differences(flip) -> None:
    """Large n: the bootstrap distribution of mean(d) is close to normal with variance
    var(d) / n, so the 95% interval is 2 · 1.96 · sd(d) / sqrt(n) wide. Independent models
    (flip=None): var(d) = p_a(1-p_a) + p_b(1-p_b). Paired models that disagree on a fraction
    f of the clips, b = a flipped there: d = ±1 on those clips, var(d) ≈ f (a far narrower
    interval than two independent accuracies would give)."""
    n, g = 20000, torch.Generator().manual_seed(7)
    a = (torch.rand(n, generator=g) < 0.6).long()
    if flip is None:
        b = (torch.rand(n, generator=g) < 0.55).long()
        var_d = 0.6 * 0.4 + 0.55 * 0.45
    else:
        b = torch.where(torch.rand(n, generator=g) < flip, 1 - a, a)
        var_d = flip - (flip * (0.6 - 0.4)) ** 2  # P(d != 0) - E[d]^2, E[d] = f·(P(a=1) - P(a=0))
    ci = paired_bootstrap_ci(a, b, resamples=4000, seed=3)
    expected = 2 * Z95 * math.sqrt(var_d / n)
    assert ci.high - ci.low == pytest.approx(expected, rel=0.06)
    assert ci.low < ci.diff < ci.high
    assert abs((ci.low + ci.high) / 2 - ci.diff) < 0.1 * expected  # symmetric at large n


def test_coverage_over_repeated_experiments() -> None:
    """The interval covers the true difference in about 95% of repeated experiments."""
    g = torch.Generator().manual_seed(11)
    true_diff, covered, trials, n = 0.7 - 0.65, 0, 200, 400
    for t in range(trials):
        a = (torch.rand(n, generator=g) < 0.7).long()
        b = (torch.rand(n, generator=g) < 0.65).long()
        ci = paired_bootstrap_ci(a, b, resamples=1000, seed=t)
        covered += ci.low <= true_diff <= ci.high
    assert 0.90 <= covered / trials <= 0.99


def test_reproducible_and_checked() -> None:
    a = torch.randint(0, 2, (300,), generator=torch.Generator().manual_seed(2))
    b = torch.randint(0, 2, (300,), generator=torch.Generator().manual_seed(3))
    assert paired_bootstrap_ci(a, b, seed=5, resamples=800) == paired_bootstrap_ci(a, b, seed=5, resamples=800)
    assert paired_bootstrap_ci(a, b, resamples=800, confidence=0.8).as_dict()["confidence"] == 0.8
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci(a, b[:-1])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_ci(a, b, confidence=1.0)
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap_ci(a[:0], b[:0])


def test_cluster_bootstrap_of_a_mean_matches_normal_theory_and_sees_the_draws() -> None:
    x = np.random.default_rng(3).normal(0.5, 1.0, 400)
    seen = []

    def mean(counts: np.ndarray) -> float:
        seen.append(counts.copy())
        return float((counts * x).sum() / counts.sum())

    ci = cluster_bootstrap_ci(mean, len(x), resamples=400, seed=1)
    assert ci.diff == pytest.approx(x.mean()) and (seen[0] == 1).all()  # the observed data first
    assert all(c.sum() == len(x) and (c >= 0).all() for c in seen[1:]) and len(seen) == 401
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.2)
    assert ci.low < x.mean() < ci.high
    again = cluster_bootstrap_ci(mean, len(x), resamples=400, seed=1)
    assert (again.low, again.high) == (ci.low, ci.high)
    with pytest.raises(ValueError, match="confidence"):
        cluster_bootstrap_ci(mean, 3, confidence=1.0)
    with pytest.raises(ValueError, match="at least one"):
        cluster_bootstrap_ci(mean, 0)
