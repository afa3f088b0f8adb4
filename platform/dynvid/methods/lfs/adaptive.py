"""Training and judging Looking Fast and Slow's adaptive interleaving policy (Sec. 3.4, 4.3).

:func:`train_adaptive_policy` is the whole of Algorithm 1 on Ray: the frozen detector in
:class:`~.env.InterleavingEnv` on the env runners, RLlib's Double DQN with experience
replay and an ε schedule (:func:`~.policy.dqn_config`), a checkpoint, and the Q-network
exported to a plain torch file that the detector uses without RLlib
(:class:`~.evaluation.LearnedPolicy`). The learned policy is then evaluated on the
validation videos next to the fixed policies, and compared at a matched fraction of f0
runs (Fig. 7): :func:`fixed_at` interpolates the fixed policies' mAP linearly in the
fraction of f0 runs between the two neighbouring τ.
"""

from __future__ import annotations

import json
import os

import torch

from dynvid.config import ExperimentConfig, apply_overrides, to_dict
from dynvid.methods.lfs.evaluation import LearnedPolicy, evaluate_policies
from dynvid.methods.lfs.report import fixed_policies, load_detector

__all__ = ["fixed_at", "train_adaptive_policy", "train_policies"]


def fixed_at(curve: list[tuple[float, float]], f0_fraction: float) -> float:
    """The fixed policies' mAP at ``f0_fraction``, linear between the neighbouring points of
    ``curve`` (``(f0 fraction, mAP)`` pairs), clamped to the ends."""
    pts = sorted(curve)
    if not pts:
        raise ValueError("empty curve")
    if f0_fraction <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if f0_fraction <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (f0_fraction - x0) / (x1 - x0)
    return pts[-1][1]


def _local_checkpoint(uri: str) -> str:
    from dynvid.engine.storage import fetch_checkpoint

    return str(fetch_checkpoint(uri))


def train_adaptive_policy(task, cfg: ExperimentConfig, detector: str, out_dir: str, progress=print,
                          fixed_rows: dict | None = None) -> dict:
    """Train the DQN policy with ``cfg.lfs.gamma`` on the detector checkpoint ``detector``,
    export it to ``out_dir/policy.pt`` and evaluate it on the validation videos.

    Returns metrics: ``val_AP50``, ``val_AP``, ``val_f0_fraction``, ``val_gflops_avg`` of the
    learned policy, ``fixed_AP50_at_f0`` (the fixed policies at the same fraction of f0
    runs) and ``AP50_gain_vs_fixed``, the DQN's returns, and ``policy`` (the exported file).
    ``fixed_rows`` (from an earlier call on the same detector) saves re-evaluating the
    fixed policies; they come back as ``fixed_rows``, and the learned policy's table row as
    ``row``.
    """
    import ray

    from dynvid.methods.lfs.env import InterleavingEnv
    from dynvid.methods.lfs.policy import dqn_config, export_policy, load_policy, train_policy

    c = cfg.lfs
    os.makedirs(out_dir, exist_ok=True)
    local = _local_checkpoint(detector)
    model, val = load_detector(task, cfg, local)
    from dynvid.engine.storage import is_remote

    # env runners on other nodes read an s3:// detector themselves; a local path serves one node
    env_config = {"checkpoint": detector if is_remote(detector) else local, "experiment": to_dict(cfg), "gamma": c.gamma, "episode_len": c.episode_len,
                  "history": c.history, "num_videos": c.policy_videos, "cache_size": c.policy_videos or 64,
                  "seed": cfg.train.seed}
    if not ray.is_initialized():
        from dynvid.engine.trainer import init_ray

        init_ray()
    config = dqn_config(
        InterleavingEnv, env_config, state_channels=model.memory.state_channels, grid=model.grid, history=c.history,
        num_env_runners=c.dqn_env_runners, num_cpus_per_env_runner=c.dqn_cpus_per_runner,
        num_gpus_per_learner=c.dqn_learner_gpus, lr=c.dqn_lr,
        gamma=c.dqn_discount, epsilon=((0, 1.0), (c.dqn_epsilon_steps, 0.05)), replay_capacity=c.dqn_replay_capacity,
        train_batch_size=c.dqn_batch_size, target_network_update_freq=c.dqn_target_update,
        num_steps_sampled_before_learning_starts=c.dqn_learning_starts,
        min_sample_timesteps_per_iteration=c.dqn_steps_per_iteration, seed=cfg.train.seed)
    progress(f"[dynvid] lfs policy: DQN with γ={c.gamma:g} on {local}, {c.dqn_iterations} iterations × "
             f"≥{c.dqn_steps_per_iteration} env steps, {c.dqn_env_runners} env runners")
    summary = train_policy(config, c.dqn_iterations, os.path.join(out_dir, "rllib"), progress=progress)
    path = export_policy(summary["module_checkpoint"], os.path.join(out_dir, "policy.pt"))

    # judge it: the learned policy next to the fixed ones, on every validation frame
    loader = torch.utils.data.DataLoader(val, batch_size=max(1, cfg.data.batch_size), collate_fn=val.collate_fn)
    post = dict(score_threshold=c.score_threshold, nms_iou=c.nms_iou, max_detections=c.max_detections)
    learned = LearnedPolicy(load_policy(path), name=f"learned γ={c.gamma:g}")
    policies = [learned] + ([] if fixed_rows else fixed_policies(c.taus))
    rows = evaluate_policies(model, loader, task.val_gt, policies, **post)
    fixed = fixed_rows or {k: v for k, v in rows.items() if k != learned.name}
    mine = rows[learned.name]
    matched = fixed_at([(r["f0_fraction"], r["AP50"]) for r in fixed.values()], mine["f0_fraction"])
    metrics = {
        "val_AP50": mine["AP50"], "val_AP": mine["AP"], "val_f0_fraction": mine["f0_fraction"],
        "val_gflops_avg": mine["gmacs_per_frame"], "fixed_AP50_at_f0": matched,
        "AP50_gain_vs_fixed": mine["AP50"] - matched, "gamma": c.gamma,
        "dqn_final_return": summary["final_return_mean"], "dqn_env_steps": float(summary["env_steps_sampled"]),
        "policy": path,
    }
    with open(os.path.join(out_dir, "policy_report.json"), "w") as f:
        json.dump({"metrics": metrics, "learned": mine, "fixed": fixed, "dqn": summary, "detector": detector},
                  f, indent=2, default=str)
    progress(f"[dynvid] lfs policy γ={c.gamma:g}: mAP@0.5 {mine['AP50']:.4f} at {mine['f0_fraction']:.3f} f0 runs "
             f"({mine['gmacs_per_frame']:.4f} GMACs/frame); fixed policies at that fraction {matched:.4f}")
    return {**metrics, "fixed_rows": fixed, "row": mine}


def train_policies(cfg: ExperimentConfig, detector: str, gammas, out_root: str, progress=print,
                   fixed: dict | None = None) -> dict:
    """One DQN policy per γ in ``gammas`` on the detector checkpoint ``detector``, each in
    ``out_root/<run name>-policy-gamma<γ>`` and, when ``train.mlflow_tracking_uri`` is set,
    an MLflow run with its policy file. The fixed policies are evaluated with the first γ
    (or given as ``fixed``). Returns ``{"fixed": rows by name, "learned": rows by name,
    "rows": [metrics of each γ]}``."""
    from dynvid.engine import tracking
    from dynvid.methods.lfs import LFSTask

    t = cfg.train
    uri = tracking.resolve_tracking_uri(t.mlflow_tracking_uri) if t.mlflow_tracking_uri else None
    rows, learned = [], {}
    for gamma in gammas:
        g_cfg = apply_overrides(cfg, [f"lfs.gamma={gamma}"])
        task = LFSTask(g_cfg)
        name = f"{g_cfg.run_name('lfs', label=task.run_label(g_cfg))}-policy-gamma{gamma:g}"
        out_dir = os.path.join(out_root, name)
        m = train_adaptive_policy(task, g_cfg, detector, out_dir, progress=progress, fixed_rows=fixed)
        fixed = m.pop("fixed_rows")
        learned[f"learned γ={gamma:g}"] = m.pop("row")
        rows.append(m)
        if uri:
            run_id = tracking.start_job_run(uri, t.mlflow_experiment, name,
                                            {"method": "lfs", "stage": "policy", "detector": detector, **to_dict(g_cfg)})
            tracking.finish_job_run(uri, run_id, {k: v for k, v in m.items() if isinstance(v, (int, float))},
                                    artifacts=[m["policy"], os.path.join(out_dir, "policy_report.json")])
    return {"fixed": fixed, "learned": learned, "rows": rows}
