"""Can a policy that does not see the next frame tell where f0 pays? (issue 23)

Eq. 2 rewards the choice for frame ``t+1`` by that frame's loss gap ``L(f1) − L(f0)``, and the
policy (Sec. 3.4) chooses it from the state after frame ``t``. The oracle row of ``bench_lfs``
looks at frame ``t+1`` itself; a policy can gain over the fixed interleaving only as far as
the gap is predictable from what it observes. This module measures that, on the policy's own
environment:

- :func:`collect_gaps` rolls out random interleavings (f0 with probability ``f0_prob``, so
  every distance since the last f0 occurs) and records, per step, the observation before the
  choice (pooled per channel: the mean of each of Eq. 1's four maps over the grid, and the
  mean absolute change of ``c`` and ``h``, plus ``η``), the frames since the last f0, the
  next frame's gap and the video (with the environment's reward horizon H > 1, the gap of
  the two branches' means over that frame and the H − 1 after it: what the reward ranks).
- :func:`gap_predictability` scores, by cross-validation over videos (each video's steps
  scored by predictors fitted on other videos), how well each predictor ranks "gap > θ"
  (ROC AUC; 0.5 is chance): (a) the frames since the last f0
  alone — all a fixed schedule knows; (b) a ridge regression on the pooled observation and
  (a). (b) − (a) is what the observation adds over a schedule: near 0, no learned policy
  can place f0 better than a fixed one on this data, however it is trained.

Choices: the observation is pooled (a ridge on the ``4·S·g·g`` raw values overfits a few
thousand steps); the ridge's regularisation is picked on the training videos' own split, not
on the scored ones; folds over videos, because the gap's mean differs much between videos
and a split by step would credit the observation with recognising a video it was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dynvid.methods.lfs.adaptive import policy_spec
from dynvid.methods.lfs.env import InterleavingEnv
from dynvid.methods.lfs.model import F0, F1
from dynvid.methods.lfs.policy import split_observation

__all__ = ["collect_gaps", "gap_predictability", "policy_env_predictability", "rank_auc", "ridge_fit"]


def _pooled(obs: np.ndarray, state_channels: int, grid: int, history: int) -> np.ndarray:
    maps, eta = split_observation(torch.from_numpy(obs[None]), state_channels, grid, history)
    per_map = maps[0].view(4, state_channels, grid * grid)
    return np.concatenate([per_map.mean(-1).flatten().numpy(), per_map[2:].abs().mean(-1).flatten().numpy(),
                           eta[0].numpy()])


@torch.no_grad()
def collect_gaps(env, episodes: int, f0_prob: float = 0.3, seed: int = 0, progress=None) -> dict[str, np.ndarray]:
    """Roll out ``episodes`` episodes of ``env`` (an :class:`~.env.InterleavingEnv`), over its
    videos in turn, choosing f0 with probability ``f0_prob``; returns ``{"features" (N, D), "since" (N,), "gap" (N,),
    "video" (N,)}``, one row per step: the pooled observation before the choice, the frames
    since the last f0, the next frame's ``L(f1) − L(f0)`` (the env's ``loss_f1 − loss_f0``: with a
    reward horizon, the branches' means over it) and the episode's video."""
    if episodes < 1 or not 0 < f0_prob < 1:
        raise ValueError(f"need episodes >= 1 and 0 < f0_prob < 1, got {episodes}, {f0_prob}")
    rng = np.random.default_rng(seed)
    S, g, H = env.model.memory.state_channels, env.model.grid, env.history
    features, since, gap, video = [], [], [], []
    for e in range(episodes):  # the videos in turn (each as often), each episode's start at random
        obs, info = env.reset(seed=seed if e == 0 else None, options={"video": e % len(env.videos)})
        last, done = 0, False  # reset ran f0 on frame 0
        while not done:
            action = F0 if rng.random() < f0_prob else F1
            next_obs, _, terminated, truncated, step = env.step(action)
            features.append(_pooled(obs, S, g, H))
            since.append(last)
            gap.append(step["loss_f1"] - step["loss_f0"])
            video.append(info["video"])
            last = 0 if action == F0 else last + 1
            obs, done = next_obs, terminated or truncated
        if progress is not None and (e + 1) % max(1, episodes // 5) == 0:
            progress(f"[dynvid] gap predictability: {e + 1}/{episodes} episodes, {len(gap)} steps")
    return {"features": np.stack(features), "since": np.asarray(since), "gap": np.asarray(gap, np.float64),
            "video": np.asarray(video)}


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (ties share their mean rank); NaN if one class
    is absent."""
    labels = np.asarray(labels, bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over ties
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1
            start = end
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float):
    """A ridge regression on standardised columns: returns ``predict(x_new)``."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda x_new: ((x_new - mu) / sd) @ w + y.mean()


def _schedule_scores(since_train: np.ndarray, y_train: np.ndarray, since_test: np.ndarray, cap: int) -> np.ndarray:
    since_train, since_test = np.minimum(since_train, cap), np.minimum(since_test, cap)
    means = {k: y_train[since_train == k].mean() for k in np.unique(since_train)}
    return np.array([means.get(k, y_train.mean()) for k in since_test])


def gap_predictability(data: dict[str, np.ndarray], thresholds: Sequence[float] = (0.0,), folds: int = 4,
                       lams: Sequence[float] = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6), cap: int = 20) -> dict:
    """Cross-validated AUC of "gap > θ" per threshold, for the schedule (frames since f0,
    capped at ``cap``) and for the ridge on the pooled observation + schedule (module
    docstring). The videos are dealt into ``folds`` folds (every ``folds``-th video); each
    fold's steps are scored by predictors fitted on the other folds, and the folds' AUCs are
    averaged, weighted by their steps (each fold's ridge has its own scale: one AUC over the
    pooled scores would mix them). The ridge's ``lam`` is chosen per fold by an inner split of
    its training videos (their own every-second video), never by the scored fold. Fewer than 2
    videos per fold reduce ``folds``; a fold whose steps hold one class only is not scored
    (``folds_scored``; None when no fold is)."""
    videos = np.unique(data["video"])
    folds = min(folds, len(videos) // 2)  # at least 2 videos per fold
    if folds < 2:
        raise ValueError(f"need steps from at least 4 videos (2 folds of 2), got {len(videos)}")
    fold_of = {v: k % folds for k, v in enumerate(videos)}
    fold = np.array([fold_of[v] for v in data["video"]])
    onehot = np.eye(cap + 1)[np.minimum(data["since"], cap)]
    x = np.hstack([data["features"], onehot])
    rows = []
    for th in thresholds:
        label = (data["gap"] > th).astype(np.float64)
        schedule, observed, weights, chosen = [], [], [], []
        for k in range(folds):
            fit, test = fold != k, fold == k
            truth = label[test] > 0
            schedule.append(rank_auc(_schedule_scores(data["since"][fit], label[fit], data["since"][test], cap), truth))
            fit_videos = np.unique(data["video"][fit])
            inner_val = fit & np.isin(data["video"], fit_videos[1::2])
            inner_fit = fit & ~inner_val
            def inner_auc(lam):
                auc = rank_auc(ridge_fit(x[inner_fit], label[inner_fit], lam)(x[inner_val]), label[inner_val] > 0)
                return -np.inf if np.isnan(auc) else auc

            lam = max(lams, key=inner_auc)
            observed.append(rank_auc(ridge_fit(x[fit], label[fit], lam)(x[test]), truth))
            weights.append(int(test.sum()))
            chosen.append(float(lam))
        scored = [k for k in range(folds) if not np.isnan(schedule[k])]  # a fold needs both classes
        if scored:
            w = [weights[k] for k in scored]
            auc_schedule = float(np.average([schedule[k] for k in scored], weights=w))
            auc_observed = float(np.average([observed[k] for k in scored], weights=w))
        else:
            auc_schedule = auc_observed = None
        rows.append({"threshold": float(th), "positive_rate": float(label.mean()), "folds_scored": len(scored),
                     "auc_schedule": auc_schedule, "auc_observation": auc_observed,
                     "auc_schedule_folds": [None if np.isnan(v) else v for v in schedule],
                     "auc_observation_folds": [None if np.isnan(v) else v for v in observed],
                     "ridge_lambdas": chosen})
    gap = data["gap"]
    per_video = np.array([gap[data["video"] == v].mean() for v in videos])
    return {"steps": int(len(gap)), "videos": int(len(videos)), "folds": folds, "gap_mean": float(gap.mean()),
            "gap_std": float(gap.std()), "gap_video_mean_std": float(per_video.std()), "rows": rows}


def policy_env_predictability(task, cfg, detector: str, episodes: int, thresholds: Sequence[float],
                              progress=print) -> dict:
    """:func:`gap_predictability` on the environment the DQN trains in (the same detector,
    videos, split, episode length and history: :func:`~.adaptive.policy_spec`), ``episodes``
    random-interleaving episodes from ``cfg.train.seed``. The environment runs on one intra-op
    thread; the caller's thread count is restored."""
    threads = torch.get_num_threads()
    try:
        env = InterleavingEnv(policy_spec(task, cfg, detector, detector).env_config)
        data = collect_gaps(env, episodes, seed=cfg.train.seed, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return gap_predictability(data, thresholds)
