"""Looking Fast and Slow, detector job: the memory-guided interleaved detector on Ray Train.

    ray job submit --working-dir . -- python jobs/lfs_interleaved.py [--data coco-vid:ROOT]
                                                                   [--config FILE] [--set key=value ...]

Trains f0 (MobileNetV2 1.4), f1 (MobileNetV2 0.35, last stride removed), the grouped
conv-LSTM memory and the SSDLite head together, the LSTM unrolled 6 steps with a random
extractor per step (Liu et al., Sec. 3.3). Each evaluation runs the fixed policy τ
(``lfs.tau``, 9) over every frame of the validation videos (mAP@0.5, fraction of f0 runs,
amortized GFLOPs per frame). The report prints the mAP-vs-τ curve (Fig. 6) and the
synchronous vs asynchronous per-frame latency (Sec. 3.5), and the model is registered.

With no arguments it runs on the embedded synthetic detection scenes (see
``dynvid.methods.lfs.presets``); ``--data coco-vid:ROOT`` takes the paper's configuration
on a COCO-style video dataset (``ROOT/annotations/{train,val}.json``). The adaptive
policy is trained afterwards on the checkpoint with ``jobs/lfs_policy_dqn.py``.
"""

from __future__ import annotations

import argparse
import json
import sys

from dynvid.config import ConfigError, ExperimentConfig
from dynvid.data.errors import DatasetError
from dynvid.methods.lfs.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (sections: data, model, optim, train, lfs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lfs.tau=4 (repeatable)")
    p.add_argument("--data", metavar="SPEC", help="dataset: coco-vid:/path (default: the embedded synthetic "
                   "detection scenes); a real dataset selects the paper configuration")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the job end to end")
    p.add_argument("--out", help="write the final metrics and report as JSON to this file")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    return job_config(args.data, args.smoke_test, args.config, overrides, [f"train.num_workers={args.num_workers}"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dynvid.engine.storage import StorageError
    from dynvid.engine.tracking import TrackingError
    from dynvid.engine.trainer import fit  # imports Ray

    try:
        cfg = build_config(args)
        result = fit(cfg, method="lfs")
    except (ConfigError, StorageError, TrackingError, DatasetError, ValueError) as exc:  # bad input: one line
        print(f"lfs_interleaved: error: {exc}", file=sys.stderr)
        return 2
    report = result.report or {}
    print(f"\n[dynvid] run {result.run_name} finished; results under {result.storage_path}")
    for stage in result.stages:
        print(f"[dynvid] stage {stage.stage}: checkpoint {stage.checkpoint_path}")
    if result.registered:
        print(f"[dynvid] registered model: models:/{result.registered['name']}@candidate "
              f"(version {result.registered['version']})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run_name": result.run_name, "metrics": result.metrics, "registered": result.registered,
                       "report": {k: v for k, v in report.items() if k != "table"},
                       "checkpoints": {s.stage: s.checkpoint_path for s in result.stages}}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
