"""Benchmark: Looking Fast and Slow — fixed vs learned interleave policies, sync vs async latency.

    python jobs/bench_lfs.py [--smoke-test] [--out FILE.json] [--detector CKPT] [--gamma 0.4 0.2 0.1]
                             [--set key=value ...]

On the embedded synthetic detection scenes with fixed seeds and the detector job's laptop
configuration (``jobs/lfs_interleaved.py``; pass ``--detector`` or that job's
``train.storage_path`` with ``--set`` to measure a finished detector, which is then found
done and not retrained): mAP@0.5 and fraction of f0 runs over every val frame for f0 only,
fixed τ ∈ {1, 4, 9, 19} and f1 only (Fig. 6), then one DQN policy per γ trained with RLlib
on the frozen detector and evaluated the same way (Fig. 7), and the per-frame latency of
the synchronous and asynchronous detector at τ = 9 over ``lfs.latency_videos`` val videos × 3,
frames arriving at ``lfs.latency_fps`` (Sec. 3.5; one intra-op thread per inference thread;
each video run's first frame left out).

Targets (issue "Looking Fast and Slow"): for each γ, the learned policy's mAP@0.5 is at
least the fixed policies' mAP at the same fraction of f0 runs (linear between the
neighbouring τ); asynchronous worst-case and p99 latency below synchronous.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from dynvid.engine.jobs import bench_config, bench_parser, exit_on_bad_input, print_targets
from dynvid.engine.preflight import resolve_local_paths
from dynvid.engine.rl import train_policies
from dynvid.methods.lfs import LFSTask
from dynvid.methods.lfs.evaluation import evaluate_policies
from dynvid.methods.lfs.presets import EMBEDDED, POLICY_SMOKE, SMOKE
from dynvid.methods.lfs.report import (curve_table, fixed_policies, latency_rows, latency_table, latency_videos,
                                       load_detector, pace_label, postprocess_settings)
from dynvid.tables import format_table

BENCH = ["train.mlflow_tracking_uri=null", "train.log_every=20", "lfs.taus=[1, 4, 9, 19]"]


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--detector", metavar="CKPT", help="a trained detector checkpoint (default: train it)")
    p.add_argument("--gamma", type=float, nargs="+", default=[0.4, 0.2, 0.1], help="speed rewards γ (Eq. 2)")
    args = p.parse_args(argv)
    # bad input (config, dataset, storage) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("bench_lfs", lambda: run(args))


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
        fixed = evaluate_policies(model, loader, task.val_gt, fixed_policies(c.taus), **post)
        print(f"\nfixed policies\n{curve_table(fixed)}", flush=True)
        policies = train_policies(cfg, "lfs", detector, "lfs.gamma", args.gamma, tmp, shared={"fixed": fixed})
        learned, rows = policies["shared"]["learned"], policies["rows"]
        for m in rows:
            m["policy"] = os.path.basename(m["policy"])
        videos = latency_videos(val, c)
        latency = latency_rows(model, videos, c.tau, c.latency_fps, repeats=1 if args.smoke_test else 3,
                               post=postprocess_settings(c))
        costs = {k: v / 1e9 for k, v in model.component_macs().items()}

    print(f"\nLooking Fast and Slow benchmark: f0 MobileNetV2 {c.f0_width:g}@{c.f0_size}, f1 {c.f1_width:g}@{c.f1_size}, "
          f"{int(next(iter(fixed.values()))['videos'])} val videos, every frame")
    print(curve_table({**fixed, **learned}))
    print(f"\nper-frame latency at τ={c.tau}, {len(videos)} val videos × {1 if args.smoke_test else 3}, "
          f"frames at {pace_label(c.latency_fps)}, "
          f"each run's first frame left out")
    print(format_table(*latency_table(latency)))
    targets = []
    for m in rows:
        targets.append({"name": f"AP50_learned_minus_fixed_gamma{m['gamma']:g}", "value": m["AP50_gain_vs_fixed"],
                        "target": 0.0, "direction": "max", "met": m["AP50_gain_vs_fixed"] >= 0.0})
        print(f"γ={m['gamma']:g}: learned {m['val_AP50']:.4f} vs fixed {m['fixed_AP50_at_f0']:.4f} at "
              f"{m['val_f0_fraction']:.3f} f0 runs -> {'met' if m['AP50_gain_vs_fixed'] >= 0 else 'MISSED'}")
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
                   "episode_len": c.episode_len, "seed": cfg.train.seed, "smoke_test": args.smoke_test,
                   "latency_fps": c.latency_fps, "latency_videos": len(videos),
                   "detector": str(detector) if args.detector else "trained by the benchmark"},
        "results": {"fixed": fixed, "learned": rows, "latency_ms": latency, "component_gmacs": costs},
        "targets": targets,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
