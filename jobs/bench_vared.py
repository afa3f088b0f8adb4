"""Benchmark: VA-RED² dynamic R(2+1)D-18 against the static one trained with the same budget.

    python jobs/bench_vared.py [--smoke-test] [--out FILE.json] [--set key=value ...]

On the embedded synthetic data, with fixed seeds and the main job's laptop configuration
(``jobs/vared_kinetics.py``):

  dynamic: the three VA-RED² stages (base E1 epochs → dynamic E2 → efficiency finetune E3);
  static:  the static network trained for E1 + E2 + E3 epochs, the same budget.

Both are measured on the same ``val`` clips: GFLOPs avg/min/max per clip from the cost
meter (the executed path), clip-1, video-1 (K-LeftCenterRight), and inference clips/s on
CPU (one clip per forward, best of 3 interleaved rounds).

Targets (issue "VA-RED²"): average GFLOPs at least 25% below the static model's, with
clip-1 at most 1 point lower; measured speed-up at least 0.8 × the GFLOPs ratio (the
fraction of the theoretical saving that becomes wall-clock).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.jobs import bench_config, bench_parser, exit_on_bad_input

from dynvid.methods.vared.presets import EMBEDDED, SMOKE  # the main job's configuration

TARGET_GFLOPS_REDUCTION = 0.25
TARGET_CLIP1_DROP = 0.01
TARGET_SPEED_FRACTION = 0.8
BENCH = ["train.mlflow_tracking_uri=null", "data.synthetic_val_videos=480", "train.test_videos=120",
         "train.log_every=40"]


def measure(cfg: ExperimentConfig, checkpoints: dict[str, tuple[str, str, str]]) -> dict:
    """GFLOPs, clip-1 and clips/s of each ``name -> (method, stage, checkpoint)`` on the same clips."""
    from dynvid.data.datasets import build_clip_dataset
    from dynvid.engine.checkpoint import load_checkpoint
    from dynvid.engine.task import get_task
    from dynvid.methods.vared.analysis import compare_throughput, policy_stats

    val = build_clip_dataset(cfg.data, cfg.data.val_split, "val", seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(val, batch_size=cfg.data.batch_size)
    models = {}
    for name, (method, stage_name, path) in checkpoints.items():
        task = get_task(method, cfg)
        stage = next(s for s in task.stages if s.name == stage_name)
        model = task.build_model(stage.config(cfg), val.num_classes, stage)
        model.load_state_dict(load_checkpoint(path)["model"])
        models[name] = model.eval()
    clips = torch.stack([val[i][0] for i in range(min(32, len(val)))])
    speed = compare_throughput(models, clips)
    out = {}
    for name, model in models.items():
        stats = policy_stats(model, loader)
        gflops = stats["macs"] / 1e9
        out[name] = {"gflops_avg": float(gflops.mean()), "gflops_min": float(gflops.min()),
                     "gflops_max": float(gflops.max()), "clip_top1": float(stats["correct"].float().mean()),
                     "clips_per_s": speed[name], "num_clips": len(gflops)}
    return out


def scale_check(smoke: bool) -> dict:
    """Wall-clock of the hard path where convolutions dominate: untrained full-width R(2+1)D-18
    on 8×112² clips, static against the dynamic network forced to each choice, so that the
    fraction of the saving that reaches the clock is measured apart from what a policy learned."""
    from dynvid.backbones import build_backbone
    from dynvid.config import VaredConfig
    from dynvid.methods.vared import force_policy, make_dynamic
    from dynvid.methods.vared.analysis import compare_throughput
    from dynvid.metrics.cost import CostMeter

    width, size = (0.25, 48) if smoke else (1.0, 112)
    torch.manual_seed(0)
    static = build_backbone("r2plus1d_18", width_mult=width, num_classes=400).eval()
    dynamic = make_dynamic(build_backbone("r2plus1d_18", width_mult=width, num_classes=400), "r2plus1d_18",
                           VaredConfig(search_space=3), (3, 8, size, size)).eval()
    dynamic.load_state_dict(static.state_dict(), strict=False)
    clips = torch.randn(4, 3, 8, size, size)
    out = {"backbone": f"r2plus1d_18 w{width:g}", "clip": [8, size, size], "policies": {}}
    for policy, label in (("all", "r=1, R=1"), (1, "r=1/2, R=2"), (2, "r=1/4, R=4")):
        with torch.no_grad(), force_policy(dynamic, policy):
            with CostMeter(dynamic) as meter:
                dynamic(clips[:1])
            speed = compare_throughput({"static": static, "dynamic": dynamic}, clips, rounds=2,
                                       min_time_s=0.5 if smoke else 2.0)
        gflops = meter.per_sample_macs.item() / 1e9
        out["policies"][label] = {"gflops": gflops, "static_clips_per_s": speed["static"],
                                  "dynamic_clips_per_s": speed["dynamic"]}
    base = out["policies"]["r=1, R=1"]["gflops"]
    for row in out["policies"].values():
        row["gflops_ratio"] = base / row["gflops"]
        row["speedup"] = row["dynamic_clips_per_s"] / row["static_clips_per_s"]
        row["speed_fraction"] = row["speedup"] / row["gflops_ratio"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    # bad input (config, dataset, storage) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("bench_vared", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    from dynvid.engine.task import get_task
    from dynvid.engine.trainer import fit
    from dynvid.methods.vared.analysis import comparison_table
    from dynvid.tables import format_table

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-vared-") as tmp:
        cfg = bench_config(EMBEDDED + BENCH, SMOKE + ["data.synthetic_val_videos=16", "train.test_videos=4"], args, tmp)
        task_stages = [s.config(cfg).optim.epochs for s in get_task("vared", cfg).stages]
        budget = sum(task_stages)
        dyn = fit(cfg, method="vared", register=False)
        static_cfg = apply_overrides(cfg, [f"optim.epochs={budget}"])
        static = fit(static_cfg, method="static", register=False)
        stages = {s.stage: s for s in dyn.stages}
        measured = measure(cfg, {
            "static": ("static", "base", static.stages[0].checkpoint_path),
            "dynamic": ("vared", "finetune", stages["finetune"].checkpoint_path),
            "dynamic_no_eff_loss": ("vared", "dynamic", stages["dynamic"].checkpoint_path),
        })
    measured["static"]["video_top1"] = static.metrics.get("test_video_top1")
    measured["dynamic"]["video_top1"] = stages["finetune"].metrics.get("test_video_top1")
    measured["dynamic_no_eff_loss"]["video_top1"] = stages["dynamic"].metrics.get("test_video_top1")
    s, d = measured["static"], measured["dynamic"]
    reduction = 1 - d["gflops_avg"] / s["gflops_avg"]
    clip_drop = s["clip_top1"] - d["clip_top1"]
    speedup = d["clips_per_s"] / s["clips_per_s"]
    theoretical = s["gflops_avg"] / d["gflops_avg"]
    # fraction of the theoretical saving realised: (speed-up) / (GFLOPs ratio)
    speed_fraction = speedup / theoretical
    rows = [{"model": f"static ({budget} epochs)", **s},
            {"model": f"dynamic ({'+'.join(map(str, task_stages))} epochs)", **d},
            {"model": "dynamic, before eff. loss", **measured["dynamic_no_eff_loss"]}]
    print(f"\nVA-RED² benchmark: {cfg.model.backbone} w{cfg.model.width_mult:g}, "
          f"{cfg.data.clip_len}x{cfg.data.crop_size}², {s['num_clips']} val clips, clips/s at 1 clip/forward, 2 threads")
    print(comparison_table(rows))
    print(f"GFLOPs reduction {reduction:.1%} (target ≥ {TARGET_GFLOPS_REDUCTION:.0%}), clip-1 change "
          f"{-clip_drop:+.4f} (target ≥ -{TARGET_CLIP1_DROP}), speed-up {speedup:.2f}× of a theoretical "
          f"{theoretical:.2f}× = {speed_fraction:.2f} (target ≥ {TARGET_SPEED_FRACTION})")
    report = {
        "benchmark": "vared",
        "config": {"backbone": cfg.model.backbone, "width_mult": cfg.model.width_mult,
                   "clip": [cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size],
                   "epochs": {"static": budget, "vared_stages": task_stages},
                   "search_space": cfg.vared.search_space, "efficiency_weight": cfg.vared.efficiency_weight,
                   "seed": cfg.train.seed, "smoke_test": args.smoke_test, "threads": torch.get_num_threads()},
        "results": {"rows": rows, "gflops_reduction": reduction, "clip1_drop": clip_drop, "speedup": speedup,
                    "gflops_ratio": theoretical, "speed_fraction": speed_fraction},
        "targets": [
            {"name": "gflops_reduction", "value": reduction, "target": TARGET_GFLOPS_REDUCTION,
             "direction": "max", "met": reduction >= TARGET_GFLOPS_REDUCTION},
            {"name": "clip1_drop", "value": clip_drop, "target": TARGET_CLIP1_DROP,
             "direction": "min", "met": clip_drop <= TARGET_CLIP1_DROP},
            {"name": "speedup_over_gflops_ratio", "value": speed_fraction, "target": TARGET_SPEED_FRACTION,
             "direction": "max", "met": speed_fraction >= TARGET_SPEED_FRACTION},
        ],
    }
    scale = scale_check(args.smoke_test)
    report["results"]["scale_check"] = scale
    print(f"\nHard path at {scale['backbone']}, {'x'.join(map(str, scale['clip']))} (untrained, forced choices, "
          f"1 clip per forward):")
    print(format_table(["choice", "GFLOPs", "GFLOPs ratio", "static clips/s", "dynamic clips/s", "speed-up",
                        "fraction"],
                       [[k, f"{v['gflops']:.2f}", f"{v['gflops_ratio']:.2f}", f"{v['static_clips_per_s']:.2f}",
                         f"{v['dynamic_clips_per_s']:.2f}", f"{v['speedup']:.2f}", f"{v['speed_fraction']:.2f}"]
                        for k, v in scale["policies"].items()]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
