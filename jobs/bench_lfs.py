"""Benchmark: Looking Fast and Slow — fixed vs learned interleave policies, sync vs async latency.

    python jobs/bench_lfs.py [--smoke-test] [--out FILE.json] [--detector CKPT] [--gamma 1.5 1.0 0.4]
                             [--seeds 3] [--oracle 0 0.05 0.1 0.2 0.4 0.8] [--resamples 500]
                             [--predictability 200] [--trigger 0.9 0.95 0.98] [--trigger-tau N]
                             [--set key=value ...]

On the embedded synthetic detection scenes with fixed seeds and the detector job's laptop
configuration (``jobs/lfs_interleaved.py``; pass ``--detector`` or that job's
``train.storage_path`` with ``--set`` to measure a finished detector, which is then found
done and not retrained): mAP@0.5 and fraction of f0 runs over every val frame for f0 only,
fixed τ ∈ {1, …, 7, 9, 11, 14, 19, 23} and f1 only (Fig. 6; every spacing up to 8 frames,
where the learned policies land, so that the matched-fraction reference interpolates
between neighbouring schedules rather than across a bend of the curve; on the 48-frame
videos 11 and 14 both run f0 on 0.083 of the frames and 23 adds 0.042),
then one DQN policy per γ and seed (``--seeds``: ``train.seed``, +1, …) trained with RLlib
on the frozen detector and evaluated the same way (Fig. 7), the oracle reference
(``OraclePolicy``: f0 where its true detection loss, looked up one frame ahead, is more than
θ below f1's, for each θ of ``--oracle`` and each γ; with ``lfs.reward_horizon`` H > 1 the
mean over that frame and the H − 1 after it, as the policies' reward: a greedy,
label-reading heuristic, not a bound), and the per-frame latency of the synchronous and
asynchronous detector at τ = 9 over ``lfs.latency_videos`` val videos × 3, frames arriving at
``lfs.latency_fps`` (Sec. 3.5; one intra-op thread per inference thread; each video run's
first frame left out).

With ``--set lfs.min_f0_gap=m`` the policies train and run with f0 refused on the m − 1
frames after each f0 run (ours; the fixed, oracle and trigger rows are unchanged).

The detector and the policies are trained into ``train.storage_path``, a temporary folder
unless ``--set`` names one: then a rerun finds each of them finished for the same experiment
and reuses it (``engine.rl.train_policy``: a policy folder's record of its config, data and
detector weights), so a benchmark stopped part way resumes after its last finished policy.

Targets (issues "Looking Fast and Slow", "ANT and LFS fairness"): for each γ, the learned
policies' mAP@0.5, averaged over the seeds, is at least the fixed policies' mAP at the same
fraction of f0 runs (linear between the neighbouring τ; the best τ where two share a
fraction), reported with a 95% bootstrap interval over the val videos (``--resamples``
replicates; each redraws the videos and recomputes every policy's mAP and f0 fraction:
``adaptive.matched_gain_interval``); the oracle's mAP at the learned policies' fractions is
reported beside it (how much a per-frame choice that sees each frame's true loss gains on
these scenes; its curve runs from f1 only to f0 only); asynchronous worst-case and p99
latency below synchronous.

Beside them, the label-free change trigger (``methods/lfs/trigger.py``, ours: f0 after an
abrupt change of the memory output between two f1 frames) for each quantile of ``--trigger``,
its threshold fitted on the policy environment's videos (``lfs.policy_split``,
``lfs.policy_videos``: not the scored ones), with its gain over the fixed curve at its own f0
fraction and the interval; reported, not a target (it is not the paper's policy).

Before the policies train, ``--predictability`` episodes of random interleaving on the
policy's environment measure whether the next frame's loss gap (Eq. 2's reward; with
``lfs.reward_horizon`` H > 1 the gap of the H-frame means the reward uses) can be told
from the observation before it, beyond the frames since the last f0 that a fixed schedule
knows (``lfs.analysis``): a learned policy can only beat the fixed one by that margin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from dynvid.engine.jobs import bench_config, bench_parser, bench_run_config, exit_on_bad_input, print_targets
from dynvid.engine.preflight import resolve_local_paths
from dynvid.engine.rl import train_policies
from dynvid.config import apply_overrides
from dynvid.methods.lfs import LFSTask
from dynvid.methods.lfs.adaptive import matched_gain_interval
from dynvid.methods.lfs.analysis import policy_env_predictability
from dynvid.methods.lfs.evaluation import LearnedPolicy, OraclePolicy, evaluate_policies
from dynvid.methods.lfs.policy import load_policy
from dynvid.methods.lfs.presets import EMBEDDED, POLICY_SMOKE, SMOKE
from dynvid.methods.lfs.report import (curve_table, fit_triggers, fixed_policies, latency_rows, latency_table,
                                       latency_videos, load_detector, pace_label, postprocess_settings)
from dynvid.tables import format_table

BENCH = ["train.mlflow_tracking_uri=null", "train.log_every=20", "lfs.taus=[1, 2, 3, 4, 5, 6, 7, 9, 11, 14, 19, 23]"]


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--detector", metavar="CKPT", help="a trained detector checkpoint (default: train it)")
    p.add_argument("--gamma", type=float, nargs="+", default=[1.5, 1.0, 0.4],
                   help="speed rewards γ (Eq. 2; default: three of the paper's values, 0.1–1.5; on the embedded "
                        "scenes f1's loss is on average ~0.5 above f0's; γ = 1 ran f0 on 29-41%% of the frames)")
    p.add_argument("--seeds", type=int, default=3, help="DQN policies per γ, seeded train.seed, +1, … (default 3)")
    p.add_argument("--oracle", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.4, 0.8],
                   help="thresholds θ of the oracle reference (each γ is added)")
    p.add_argument("--resamples", type=int, default=500, help="bootstrap replicates over the val videos")
    p.add_argument("--predictability", type=int, default=200, metavar="EPISODES",
                   help="random-interleaving episodes of the policy's environment for the gap-predictability "
                        "check (0: skip)")
    p.add_argument("--trigger", type=float, nargs="*", default=[0.9, 0.95, 0.98], metavar="Q",
                   help="quantiles of the memory output's change on the policy videos that set the change "
                        "trigger's thresholds (dynvid.methods.lfs.trigger; none given: no trigger rows)")
    p.add_argument("--trigger-tau", type=int, default=None, metavar="N",
                   help="the trigger's fixed-schedule floor: f0 at the latest N+1 frames after the last "
                        "(default: none)")
    args = p.parse_args(argv)
    if any(not 0 < q < 1 for q in args.trigger):
        p.error(f"--trigger quantiles must lie in (0, 1), got {args.trigger}")
    if len(set(args.trigger)) < len(args.trigger):  # one row per policy name: a repeat would merge two rows
        p.error(f"--trigger quantiles must differ, got {args.trigger}")
    if args.trigger_tau is not None and args.trigger_tau < 0:
        p.error(f"--trigger-tau must be >= 0, got {args.trigger_tau}")
    if args.seeds < 1 or args.resamples < 1:
        p.error("--seeds and --resamples must be >= 1")
    if args.predictability < 0:
        p.error(f"--predictability must be >= 0, got {args.predictability}")
    # bad input (config, dataset, storage) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("bench_lfs", lambda: run(args))


def learned_name(gamma: float, seed: int) -> str:
    """A learned policy's row name."""
    return f"learned γ={gamma:g} seed {seed}"


def run(args: argparse.Namespace) -> int:
    from dynvid.engine.trainer import fit  # imports Ray

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-lfs-") as tmp:
        cfg = bench_config(EMBEDDED + BENCH, SMOKE + POLICY_SMOKE + ["lfs.taus=[1, 4]"], args, tmp)
        cfg, detector = resolve_local_paths(cfg, args.detector)  # RLlib's env runners read it in other folders
        if detector is None:
            result = fit(cfg, method="lfs", register=False, report=False)
            detector = result.stages[-1].checkpoint_path
        task = LFSTask(cfg)
        model, val = load_detector(task, cfg, detector)
        c = cfg.lfs
        post = dict(score_threshold=c.score_threshold, nms_iou=c.nms_iou, max_detections=c.max_detections)
        loader = torch.utils.data.DataLoader(val, batch_size=cfg.data.batch_size, collate_fn=val.collate_fn)
        per_video: dict = {}  # what the bootstrap over videos needs, filled by both evaluations below
        fixed = evaluate_policies(model, loader, task.val_gt, fixed_policies(c.taus), per_video=per_video, **post)
        print(f"\nfixed policies\n{curve_table(fixed)}", flush=True)
        episodes = min(args.predictability, 16) if args.smoke_test else args.predictability
        predictability = (policy_env_predictability(task, cfg, detector, episodes, [0.0, *args.gamma])
                          if episodes else None)
        rows, exported = [], {}
        for k in range(1 if args.smoke_test else args.seeds):
            seed = cfg.train.seed + k
            seeded = apply_overrides(cfg, [f"train.seed={seed}"] + (  # a named run: one policy folder per seed
                [f"train.name={cfg.train.name}-seed{seed}"] if cfg.train.name else []))
            # in the storage: one given with --set keeps the policies, and a rerun reuses the finished ones
            policies = train_policies(seeded, "lfs", detector, "lfs.gamma", args.gamma, cfg.train.storage_path,
                                      shared={"fixed": fixed})
            for m in policies["rows"]:
                exported[(m["gamma"], seed)] = m["policy"]
                rows.append({**m, "seed": seed, "policy": os.path.relpath(m["policy"], cfg.train.storage_path)})
        triggers = list(zip(fit_triggers(model, cfg, args.trigger, args.trigger_tau), args.trigger)) \
            if args.trigger else []
        # the learned, trigger and oracle policies on every val frame, keeping per-video records as the fixed ones did
        thresholds = sorted(set(args.oracle) | set(args.gamma))
        learned = {key: LearnedPolicy(load_policy(path), name=learned_name(*key), min_gap=c.min_f0_gap)
                   for key, path in exported.items()}
        oracles = [OraclePolicy(th, focal=c.focal, horizon=c.reward_horizon) for th in thresholds]
        print(f"\n[bench_lfs] learned, {len(triggers)} trigger and {len(oracles)} oracle policies on every val frame, "
              "per video", flush=True)
        more: dict = {}
        everything = {**fixed, **evaluate_policies(model, loader, task.val_gt,
                                                   list(learned.values()) + [t for t, _ in triggers] + oracles,
                                                   per_video=more, **post)}
        if more.pop("image_ids") != per_video["image_ids"]:
            raise RuntimeError("the val loader gave other frames in the second evaluation: the bootstrap needs the same")
        per_video.update(more)
        # the oracle's curve runs from f1 only to f0 only (θ = +∞ and −∞): no clamping between them
        fixed_names, oracle_names = list(fixed), [o.name for o in oracles] + ["f0 only", "f1 only"]
        gains, tables = {}, {}
        for g in args.gamma:
            mine = [p.name for (gg, _), p in learned.items() if gg == g]
            vs_fixed = matched_gain_interval(task.val_gt, per_video, mine, fixed_names, resamples=args.resamples,
                                             seed=cfg.train.seed, tables=tables)
            vs_oracle = matched_gain_interval(task.val_gt, per_video, mine, oracle_names, resamples=args.resamples,
                                              seed=cfg.train.seed, tables=tables)
            ap = sum(everything[n]["AP50"] for n in mine) / len(mine)
            gains[g] = {"policies": mine, "AP50": ap,
                        "f0_fraction": sum(everything[n]["f0_fraction"] for n in mine) / len(mine),
                        "gain_vs_fixed": vs_fixed.as_dict(), "gain_vs_oracle": vs_oracle.as_dict(),
                        "fixed_AP50_at_f0": ap - vs_fixed.diff, "oracle_AP50_at_f0": ap - vs_oracle.diff}
        trigger_rows = {}
        for policy, q in triggers:
            vs_fixed = matched_gain_interval(task.val_gt, per_video, [policy.name], fixed_names,
                                             resamples=args.resamples, seed=cfg.train.seed, tables=tables)
            trigger_rows[policy.name] = {"quantile": q, "threshold": policy.threshold, "tau": policy.tau,
                                         **everything[policy.name], "gain_vs_fixed": vs_fixed.as_dict()}
        videos = latency_videos(val, c)
        latency = latency_rows(model, videos, c.tau, c.latency_fps, repeats=1 if args.smoke_test else 3,
                               post=postprocess_settings(c))
        costs = {k: v / 1e9 for k, v in model.component_macs().items()}

    print(f"\nLooking Fast and Slow benchmark: f0 MobileNetV2 {c.f0_width:g}@{c.f0_size}, "
          f"f1 {c.f1_width:g}@{c.f1_size}, "
          f"{int(next(iter(fixed.values()))['videos'])} val videos, every frame")
    print(curve_table(everything))
    print(f"\nper-frame latency at τ={c.tau}, {len(videos)} val videos × {1 if args.smoke_test else 3}, "
          f"frames at {pace_label(c.latency_fps)}, "
          f"each run's first frame left out")
    print(format_table(*latency_table(latency)))
    print(f"\nlearned − fixed at the learned policies' fraction of f0 runs, mean over {len(rows) // len(args.gamma)} "
          f"seed(s), 95% bootstrap interval over {len(per_video['image_ids'])} val videos ({args.resamples} "
          "replicates); the oracle at the same fraction")
    print(format_table(["γ", "f0 runs", "learned", "fixed", "learned − fixed", "interval", "oracle"],
                       [[f"{g:g}", f"{r['f0_fraction']:.3f}", f"{r['AP50']:.4f}", f"{r['fixed_AP50_at_f0']:.4f}",
                         f"{r['gain_vs_fixed']['diff']:+.4f}",
                         f"[{r['gain_vs_fixed']['low']:+.4f}, {r['gain_vs_fixed']['high']:+.4f}]",
                         f"{r['oracle_AP50_at_f0']:.4f}"] for g, r in gains.items()]))
    if trigger_rows:
        print(f"\nchange trigger (ours, label-free; thresholds fitted on {cfg.lfs.policy_videos or 'all'} "
              f"{cfg.lfs.policy_split or cfg.data.train_split}-split videos) − fixed at its fraction of f0 runs, "
              "same interval")
        print(format_table(["trigger", "quantile", "threshold", "f0 runs", "mAP@0.5", "fixed", "trigger − fixed",
                            "interval"],
                           [[n, f"{r['quantile']:g}", f"{r['threshold']:.4g}", f"{r['f0_fraction']:.3f}",
                             f"{r['AP50']:.4f}", f"{r['AP50'] - r['gain_vs_fixed']['diff']:.4f}",
                             f"{r['gain_vs_fixed']['diff']:+.4f}",
                             f"[{r['gain_vs_fixed']['low']:+.4f}, {r['gain_vs_fixed']['high']:+.4f}]"]
                            for n, r in trigger_rows.items()]))
    if predictability is not None:
        p = predictability
        gap = "loss gap L(f1) − L(f0)" + (f" (means over {c.reward_horizon} frames)" if c.reward_horizon > 1 else "")
        print(f"\nis the next frame's {gap} predictable before it is seen? {p['steps']} steps of "
              f"random interleaving on the policy's environment over {p['videos']} videos, AUC of \"gap > θ\" "
              f"cross-validated over the videos ({p['folds']} folds; 0.5: chance); gap {p['gap_mean']:+.3f} ± "
              f"{p['gap_std']:.3f}, per-video means ± {p['gap_video_mean_std']:.3f}")
        print(format_table(["θ", "gap > θ", "frames since f0", "observation + frames since f0"],
                           [[f"{r['threshold']:g}", f"{r['positive_rate']:.2f}"]
                            + ([f"{r['auc_schedule']:.3f}", f"{r['auc_observation']:.3f}"] if r["folds_scored"]
                               else ["n/a (one class)"] * 2) for r in p["rows"]]))
    targets = []
    for g, r in gains.items():
        gain = r["gain_vs_fixed"]["diff"]
        targets.append({"name": f"AP50_learned_minus_fixed_gamma{g:g}", "value": gain, "target": 0.0,
                        "direction": "max", "met": gain >= 0.0,
                        "interval": [r["gain_vs_fixed"]["low"], r["gain_vs_fixed"]["high"]]})
    for stat in ("worst", "p99"):
        ratio = latency["async"][f"{stat}_ms"] / latency["sync"][f"{stat}_ms"]
        targets.append({"name": f"async_over_sync_{stat}_latency", "value": ratio, "target": 1.0, "direction": "min",
                        "met": ratio < 1.0})
    print_targets(targets)
    out = {
        "benchmark": "lfs",
        "config": {"f0": [c.f0_width, c.f0_size], "f1": [c.f1_width, c.f1_size], "memory_input": c.memory_input,
                   "state_channels": c.state_channels, "groups": c.groups, "taus": list(c.taus), "gammas": args.gamma,
                   "dqn_iterations": c.dqn_iterations, "dqn_steps_per_iteration": c.dqn_steps_per_iteration,
                   "dqn_training_intensity": c.dqn_training_intensity, "policy_split": c.policy_split,
                   "seeds": sorted({m["seed"] for m in rows}), "oracle_thresholds": thresholds,
                   "resamples": args.resamples, "trigger_quantiles": args.trigger, "trigger_tau": args.trigger_tau,
                   "episode_len": c.episode_len, "seed": cfg.train.seed, **bench_run_config(args),
                   "latency_fps": c.latency_fps, "latency_videos": len(videos),
                   "detector": str(detector) if args.detector else "trained by the benchmark"},
        "results": {"policies": everything, "learned": rows, "gains": {f"{g:g}": r for g, r in gains.items()},
                    "latency_ms": latency, "component_gmacs": costs,
                    "trigger": trigger_rows, "gap_predictability": predictability},
        "targets": targets,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
