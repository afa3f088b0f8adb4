"""ANT detection job: EfficientDet-D0 with a width supernet, fusion and gates on Ray Train.

    ray job submit --working-dir . -- python jobs/ant_detection.py [--data coco-vid:ROOT]
                                                                 [--config FILE] [--set key=value ...]

Three stages (Liu et al., "ANT", Sec. 3–4): ``static`` trains the standalone network;
``supernet`` turns its six MBConv6 stages into a weight-sharing width supernet (sandwich
rule + in-place distillation); ``gates`` adds the fusion modules and dynamic gates (stem
frozen, one key frame in three, Gumbel-softmax, KD to the golden features). Evaluations
score AP@[.5:.95] and amortized GMACs over every frame of the validation videos; the last
one runs adaptive key frames at ``ant.key_threshold``. The report is Table 1: the
standalone network vs ANT with AP, GMACs, parameters and single-core latency. The model is
registered.

With no arguments it runs on the embedded synthetic detection scenes (see
``dynvid.methods.ant.presets``); ``--data coco-vid:ROOT`` takes the paper's configuration on
a COCO-style video dataset (``ROOT/annotations/{train,val}.json``). ``--set
ant.width_mult=1.1`` is D0+; ``--set ant.temporal=false`` trains the non-temporal baseline.
Sweep the key-frame threshold over the checkpoint with ``search_spaces/ant.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys

from dynvid.config import ConfigError, ExperimentConfig
from dynvid.data.errors import DatasetError
from dynvid.methods.ant.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (sections: data, model, optim, train, ant)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set ant.key_threshold=0.2 (repeatable)")
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
        result = fit(cfg, method="ant")
    except (ConfigError, StorageError, TrackingError, DatasetError, ValueError) as exc:  # bad input: one line
        print(f"ant_detection: error: {exc}", file=sys.stderr)
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
