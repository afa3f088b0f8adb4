"""How predictable the next frame's loss gap is from the policy's observation (issue 23)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dynvid.methods.lfs.analysis import collect_gaps, gap_predictability, rank_auc
from dynvid.methods.lfs.env import InterleavingEnv


def test_rank_auc_is_the_pairwise_win_rate_with_ties_halved():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    assert rank_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    assert np.isnan(rank_auc(scores, np.zeros(60, bool)))


def _data(gap_from, n_videos=40, steps=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_videos * steps
    features = rng.normal(size=(n, 6))
    since = np.tile(np.arange(steps) % 7, n_videos)
    gap = gap_from(features, since) + rng.normal(scale=0.3, size=n)
    return {"features": features, "since": since, "gap": gap, "video": np.repeat(np.arange(n_videos), steps)}


def test_a_gap_driven_by_the_observation_is_found_and_one_driven_by_the_schedule_is_not_credited_to_it():
    observed = gap_predictability(_data(lambda f, s: f[:, 0]), thresholds=(0.0, 0.5))
    for row in observed["rows"]:
        assert row["auc_observation"] > 0.85 and abs(row["auc_schedule"] - 0.5) < 0.08
    scheduled = gap_predictability(_data(lambda f, s: s - 3.0))
    row, = scheduled["rows"]
    assert row["auc_schedule"] > 0.85 and abs(row["auc_observation"] - row["auc_schedule"]) < 0.03
    noise = gap_predictability(_data(lambda f, s: 0 * s))["rows"][0]
    assert abs(noise["auc_schedule"] - 0.5) < 0.08 and abs(noise["auc_observation"] - 0.5) < 0.08
    assert observed["videos"] == 40 and observed["steps"] == 40 * 60
    few = gap_predictability(_data(lambda f, s: s - 3.0, n_videos=5), folds=4)  # 2 folds of >= 2 videos
    assert few["folds"] == 2 and few["rows"][0]["auc_schedule"] > 0.85
    one_class = gap_predictability(_data(lambda f, s: 0 * s), thresholds=(10.0,))["rows"][0]
    assert one_class["folds_scored"] == 0 and one_class["auc_schedule"] is None
    with pytest.raises(ValueError, match="at least 4 videos"):
        gap_predictability(_data(lambda f, s: s, n_videos=3))


def test_collect_gaps_records_each_steps_observation_distance_and_next_frame_gap(env_parts):
    model, videos = env_parts
    env = InterleavingEnv({"detector": model, "videos": videos, "episode_len": 6, "seed": 0})
    data = collect_gaps(env, episodes=3, f0_prob=0.5, seed=1)
    assert data["features"].shape == (15, 4 * 8 + 2 * 8 + 20)  # 5 steps per episode; pooled maps + |changes| + η
    assert data["video"].tolist() == [0] * 5 + [1] * 5 + [0] * 5  # the videos in turn
    since = data["since"].reshape(3, 5)
    assert (since[:, 0] == 0).all()  # frame 0 ran f0 in reset
    for row in since:  # each step is 0 (f0 just ran) or one more than the step before
        assert all(b in (0, a + 1) for a, b in zip(row, row[1:]))
    eta = data["features"][:, -20:].reshape(3, 5, 20)
    np.testing.assert_array_equal(eta[:, 1:, 0] == 1, since[:, 1:] > 0)  # η says whether f1 ran just before
    with pytest.raises(ValueError, match="f0_prob"):
        collect_gaps(env, episodes=1, f0_prob=1.0)
