"""Looking Fast and Slow's adaptive interleaving policy (Sec. 3.4, 4.3): what the method
supplies to the engine's RLlib runner (:mod:`dynvid.engine.rl`), and how a policy is judged.

Algorithm 1 on Ray is the engine's: it trains RLlib's Double DQN with experience replay and
an ε schedule on the env runners and exports the Q-network to a plain torch file. This module
says what to train (:func:`policy_spec`: the frozen detector in
:class:`~.env.InterleavingEnv`, the :class:`~.policy.QNetwork`, the ``lfs.dqn_*`` settings)
and evaluates the exported policy (:func:`evaluate_policy`) on the validation videos next to
the fixed policies, compared at a matched fraction of f0 runs (Fig. 7): :func:`fixed_at`
interpolates the fixed policies' mAP linearly in the fraction of f0 runs between the two
neighbouring τ. :func:`matched_gain_interval` puts a bootstrap interval over videos on that
gain (issue 23): each replicate redraws the validation videos, recomputes every policy's
mAP@0.5 and fraction of f0 runs on the drawn videos from pycocotools' per-image matching (no
re-matching), and compares at the learned policies' fractions there. No Ray is imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from dynvid.config import ExperimentConfig, to_dict
from dynvid.metrics.bootstrap import PairedInterval, cluster_bootstrap_ci
from dynvid.metrics.detection import ap50_from_matches, match_detections
from dynvid.methods.lfs.env import InterleavingEnv
from dynvid.methods.lfs.evaluation import LearnedPolicy, evaluate_policies
from dynvid.methods.lfs.policy import EXPORT_FORMAT, load_policy
from dynvid.methods.lfs.report import fixed_policies, load_detector, load_detector_model
from dynvid.task import PolicySpec

__all__ = ["evaluate_policy", "fixed_at", "matched_gain_interval", "policy_spec"]


def fixed_at(curve: list[tuple[float, float]], f0_fraction: float) -> float:
    """The fixed policies' mAP at ``f0_fraction``, linear between the neighbouring points of
    ``curve`` (``(f0 fraction, mAP)`` pairs), clamped to the ends. Schedules that run f0 on the
    same fraction (τ = 15 and 19 on 48-frame videos) count with the best of their mAPs: the
    reference is the strongest fixed schedule."""
    best: dict[float, float] = {}
    for x, y in curve:
        best[x] = max(y, best.get(x, y))
    pts = sorted(best.items())
    if not pts:
        raise ValueError("empty curve")
    if f0_fraction <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if f0_fraction <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (f0_fraction - x0) / (x1 - x0)
    return pts[-1][1]


def matched_gain_interval(gt, per_video: dict, learned: Sequence[str], reference: Sequence[str],
                          confidence: float = 0.95, resamples: int = 500, seed: int = 0,
                          tables: dict | None = None) -> PairedInterval:
    """The mean over ``learned`` policies (e.g. one per seed) of their mAP@0.5 minus the
    ``reference`` curve's (the fixed policies, or the oracle's thresholds) at the same fraction
    of f0 runs (:func:`fixed_at`), with its percentile bootstrap interval over videos
    (:func:`~dynvid.metrics.bootstrap.cluster_bootstrap_ci`). ``per_video``:
    :func:`~.evaluation.evaluate_policies`'s per-video record of all these policies; ``tables``:
    a dict that caches each policy's matching across calls."""
    videos = per_video["image_ids"]
    names = [*learned, *reference]
    missing = [n for n in names if n not in per_video]
    if missing or not learned or not reference:
        raise ValueError(f"matched_gain_interval needs learned and reference policies evaluated with per_video; "
                         f"missing: {missing or 'a learned or reference policy'}")
    tables = {} if tables is None else tables
    for n in names:
        if n not in tables:
            tables[n] = match_detections(gt, per_video[n]["rows"])
    index = {i: k for k, i in enumerate(tables[names[0]].image_ids)}
    video_of = np.full(len(index), -1, dtype=np.int64)
    for v, ids in enumerate(videos):
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise ValueError(f"video {v}'s image ids {unknown[:5]} are not in the ground truth")
        rows = [index[i] for i in ids]
        if (video_of[rows] >= 0).any():
            raise ValueError(f"video {v} shares image ids with an earlier video: a bootstrap draws whole videos")
        video_of[rows] = v
    if (video_of < 0).any():
        raise ValueError(f"{int((video_of < 0).sum())} ground-truth images belong to no evaluated video")
    f0 = {n: np.asarray(per_video[n]["f0"], dtype=np.int64) for n in names}
    frames = {n: np.asarray(per_video[n]["frames"], dtype=np.int64) for n in names}

    def gain(counts: np.ndarray) -> float:
        weights = counts[video_of]

        def fraction(n: str) -> float:
            return float((counts * f0[n]).sum() / max(int((counts * frames[n]).sum()), 1))

        curve = [(fraction(n), ap50_from_matches(tables[n], weights)) for n in reference]
        return float(np.mean([ap50_from_matches(tables[n], weights) - fixed_at(curve, fraction(n)) for n in learned]))

    return cluster_bootstrap_ci(gain, len(videos), confidence, resamples, seed)


def policy_spec(task, cfg: ExperimentConfig, detector: str, local: str) -> PolicySpec:
    """The DQN of Sec. 3.4 with ``cfg.lfs.gamma`` on the frozen detector: env runners read
    ``detector`` (a local folder or an ``s3://`` URI), its shape comes from ``local``."""
    c = cfg.lfs
    model = load_detector_model(task, cfg, local)
    env_config = {"checkpoint": detector, "experiment": to_dict(cfg), "gamma": c.gamma, "reward": c.reward,
                  "horizon": c.reward_horizon, "min_f0_gap": c.min_f0_gap, "episode_len": c.episode_len,
                  "history": c.history,
                  "num_videos": c.policy_videos, "cache_size": c.policy_videos or 64,
                  "split": c.policy_split or cfg.data.train_split, "seed": cfg.train.seed}
    dqn = dict(num_env_runners=c.dqn_env_runners, num_cpus_per_env_runner=c.dqn_cpus_per_runner,
               num_gpus_per_learner=c.dqn_learner_gpus, lr=c.dqn_lr, gamma=c.dqn_discount,
               epsilon=((0, 1.0), (c.dqn_epsilon_steps, 0.05)), replay_capacity=c.dqn_replay_capacity,
               train_batch_size=c.dqn_batch_size, target_network_update_freq=c.dqn_target_update,
               num_steps_sampled_before_learning_starts=c.dqn_learning_starts,
               training_intensity=c.dqn_training_intensity,
               min_sample_timesteps_per_iteration=c.dqn_steps_per_iteration, seed=cfg.train.seed)
    return PolicySpec(
        env=InterleavingEnv, env_config=env_config, q_network="dynvid.methods.lfs.policy:QNetwork",
        q_kwargs=dict(state_channels=model.memory.state_channels, grid=model.grid, history=c.history),
        dqn=dqn, iterations=c.dqn_iterations, export_format=EXPORT_FORMAT, label="lfs-dqn",
        metadata={"paper": "Looking Fast and Slow (Liu et al., 2019), Sec. 3.4", "gamma": c.gamma, "reward": c.reward,
                  "reward_horizon": c.reward_horizon, "min_f0_gap": c.min_f0_gap},
        description=(f"DQN with γ={c.gamma:g} ({c.reward} reward"
                     f"{f', horizon {c.reward_horizon}' if c.reward_horizon > 1 else ''}"
                     f"{f', f0 at least {c.min_f0_gap} frames apart' if c.min_f0_gap > 1 else ''}) on {local}, "
                     f"{c.dqn_iterations} iterations × ≥{c.dqn_steps_per_iteration} env steps, "
                     f"{c.dqn_env_runners} env runners"))


def evaluate_policy(task, cfg: ExperimentConfig, detector: str, policy: str, out_dir: str, training: dict,
                    shared: dict, progress: Callable[[str], Any] = print) -> dict:
    """The learned ``policy`` next to the fixed ones on every validation frame of the local
    ``detector`` checkpoint.

    Returns ``val_AP50``, ``val_AP``, ``val_f0_fraction``, ``val_gflops_avg`` of the learned
    policy, ``fixed_AP50_at_f0`` (the fixed policies at the same fraction of f0 runs),
    ``AP50_gain_vs_fixed``, ``gamma`` and ``artifacts`` (``policy_report.json``, which also
    names ``lfs.reward``). The fixed policies are evaluated once per ``shared``
    (``shared["fixed"]``: rows by name, given or filled here); the learned policy's table row
    goes to ``shared["learned"]`` by name."""
    c = cfg.lfs
    model, val = load_detector(task, cfg, detector)
    loader = torch.utils.data.DataLoader(val, batch_size=max(1, cfg.data.batch_size), collate_fn=val.collate_fn)
    post = dict(score_threshold=c.score_threshold, nms_iou=c.nms_iou, max_detections=c.max_detections)
    learned = LearnedPolicy(load_policy(policy), name=f"learned γ={c.gamma:g}", min_gap=c.min_f0_gap)
    fixed = shared.get("fixed")
    rows = evaluate_policies(model, loader, task.val_gt, [learned] + ([] if fixed else fixed_policies(c.taus)), **post)
    if not fixed:
        fixed = shared["fixed"] = {k: v for k, v in rows.items() if k != learned.name}
    mine = shared.setdefault("learned", {})[learned.name] = rows[learned.name]
    matched = fixed_at([(r["f0_fraction"], r["AP50"]) for r in fixed.values()], mine["f0_fraction"])
    metrics = {
        "val_AP50": mine["AP50"], "val_AP": mine["AP"], "val_f0_fraction": mine["f0_fraction"],
        "val_gflops_avg": mine["gmacs_per_frame"], "fixed_AP50_at_f0": matched,
        "AP50_gain_vs_fixed": mine["AP50"] - matched, "gamma": c.gamma,
    }
    report = os.path.join(out_dir, "policy_report.json")
    with open(report, "w") as f:
        json.dump({"metrics": {**metrics, "dqn_final_return": training["final_return_mean"], "reward": c.reward,
                               "dqn_env_steps": float(training["env_steps_sampled"]), "policy": policy},
                   "learned": mine, "fixed": fixed, "dqn": training, "detector": training.get("model", detector)},
                  f, indent=2, default=str)
    progress(f"[dynvid] lfs policy γ={c.gamma:g}: mAP@0.5 {mine['AP50']:.4f} at {mine['f0_fraction']:.3f} f0 runs "
             f"({mine['gmacs_per_frame']:.4f} GMACs/frame); fixed policies at that fraction {matched:.4f}")
    return {**metrics, "artifacts": [report]}
