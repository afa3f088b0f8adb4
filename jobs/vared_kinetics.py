"""Main job: VA-RED² on Kinetics-style data (default: the embedded synthetic dataset) with Ray Train.

    ray job submit --working-dir . -- python jobs/vared_kinetics.py [--data SPEC] [--backbone NAME]
                                                                  [--config FILE] [--set key=value ...]

Three stages on the engine (thesis Sec. 4.3, App. A.2): the static base model, the dynamic
model initialised from it, and the efficiency-loss finetune. At the end it prints the
paper-style table (static vs dynamic: GFLOPs avg/max/min per clip measured on the executed
path, clips/s, clip-1, video-1, video-5), writes the policy heatmap and cost histogram, and
registers the dynamic model in MLflow.

With no arguments it runs a laptop-sized configuration on the embedded synthetic dataset
(R(2+1)D-18 at width 0.25 on 8×48×48 clips of 54×72 scenes, Adam) that finishes in about
twelve minutes on 2 cores. With ``--data kinetics:/path`` (or ``s3://…``) it switches to the
paper configuration of the chosen ``--backbone``: full width, 16 frames, 112 crops for
R(2+1)D-18 and 224 for I3D / X3D-M, SGD with Nesterov momentum and cosine decay, base lr
0.18 (R(2+1)D) or 1.8 (I3D, X3D) scaled to the batch, K = 10 test clips × 3 crops.

Bad input (a config value, the dataset folder and its annotations, storage, tracking) is found
on the driver before Ray starts (``dynvid.engine.preflight``) and printed as one line, exit
status 2. A rerun with the same config and data resumes the run; other settings or data are a
new run (``dynvid.engine.identity``).
"""

from __future__ import annotations

import argparse
import json
import sys

from dynvid.config import ExperimentConfig, apply_overrides, load_config
from dynvid.engine.jobs import exit_on_bad_input
from dynvid.methods.vared.presets import EMBEDDED, SMOKE, paper_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (sections: data, model, optim, train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.epochs=20 (repeatable)")
    p.add_argument("--data", metavar="SPEC",
                   help="dataset: kinetics:/path, kinetics:s3://bucket/k400 (default: the embedded synthetic "
                        "dataset); a real dataset selects the paper configuration of --backbone")
    p.add_argument("--backbone", default="r2plus1d_18", help="r2plus1d_18 (default), i3d or x3d_m")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (the lr scales with them)")
    p.add_argument("--init-from", metavar="URI", help="start the first stage from this checkpoint (directory or s3://)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: sqlite:///runs/mlflow.db; http://host:5000 for a server)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the job end to end")
    p.add_argument("--out", help="write the final metrics as JSON to this file")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """The paper configuration of ``--backbone`` on ``--data`` (or the embedded one), then the
    YAML file and the ``--set`` overrides."""
    if args.data:
        defaults = paper_config(args.backbone, args.data, args.num_workers)
    else:
        defaults = EMBEDDED + [f"model.backbone={args.backbone}"]
    defaults += [f"train.num_workers={args.num_workers}"] + (SMOKE if args.smoke_test else [])
    base = apply_overrides(ExperimentConfig(), defaults)
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    return load_config(ExperimentConfig, args.config, overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # bad input (config, dataset, storage, tracking) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("vared_kinetics", lambda: train(args))


def train(args: argparse.Namespace) -> int:
    from dynvid.engine.trainer import fit  # imports Ray

    result = fit(build_config(args), method="vared", init_from=args.init_from)
    m = result.metrics
    chance = 1.0 / m["num_classes"] if m.get("num_classes") else float("nan")
    print(f"\n[dynvid] run {result.run_name} finished; results under {result.storage_path}")
    print(f"[dynvid] clip-1 accuracy {m.get('val_clip_top1', float('nan')):.4f} "
          f"(chance {chance:.4f}), video-1 {m.get('test_video_top1', float('nan')):.4f}, "
          f"GFLOPs/clip {m.get('val_gflops_avg', float('nan')):.3f}")
    for stage in result.stages:
        print(f"[dynvid] stage {stage.stage}: checkpoint {stage.checkpoint_path}")
    if result.registered:
        print(f"[dynvid] registered model: models:/{result.registered['name']}@candidate "
              f"(version {result.registered['version']})")
    report = result.report or {}
    if report.get("table"):
        print(f"\n[dynvid] {report['table']}")
        print(f"[dynvid] policy heatmap, cost histogram and vared_report.json in {report.get('dir')}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run_name": result.run_name, "metrics": m, "registered": result.registered,
                       "report": {k: v for k, v in report.items() if k != "table"},
                       "stages": {s.stage: s.metrics for s in result.stages},
                       "checkpoints": [s.checkpoint_path for s in result.stages]}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
