"""LiteEval job: coarse-to-fine recognition with a conditional gate, on Ray Train.

    ray job submit --working-dir . -- python jobs/liteeval.py [--data SPEC] [--features cache|pixels]
                                                            [--config FILE] [--set key=value ...]

Three stages on the engine (Wu et al., Sec. 4.1): the coarse and fine CNNs finetuned as step
classifiers, the LSTM baseline, and LiteEval (cRNN + fRNN + Gumbel gate, Eq. 7). Between the
stages the driver extracts both CNNs' features once with Ray Data into a Parquet cache (local
or S3) and the RNN stages train on it (``--features pixels``: from frames, CNNs frozen). At
the end it prints the offline table (UNIFORM, UNIFORM+CF, LSTM, LiteEval: top-1, GFLOPs per
video mean ± std, fine features read) and the online table per budget K (LiteEval vs
UNIFORM-K and SEQ-K), writes the plots of Fig. 2 and Fig. 4, and registers the model.

With no arguments it runs on the embedded synthetic actions (3-D snippet CNNs, see
``dynvid.methods.liteeval.presets``). With ``--data kinetics:/path`` (or ``s3://…``) it takes
the paper's configuration: MobileNetV2 at 112 and ResNet-101 at 224 on 25 frames at 1 fps.
"""

from __future__ import annotations

import argparse
import json
import sys

from dynvid.config import ExperimentConfig, apply_overrides, load_config
from dynvid.engine.jobs import exit_on_bad_input
from dynvid.methods.liteeval.presets import EMBEDDED, PAPER, SMOKE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (sections: data, model, optim, train, liteeval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set liteeval.gamma=0.1 (repeatable)")
    p.add_argument("--data", metavar="SPEC", help="dataset: kinetics:/path or kinetics:s3://bucket/prefix "
                   "(default: the embedded synthetic dataset); a real dataset selects the paper configuration")
    p.add_argument("--features", choices=("cache", "pixels"), default="cache",
                   help="train the RNN stages on a Ray Data feature cache (default) or from frames")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the job end to end")
    p.add_argument("--out", help="write the final metrics and report as JSON to this file")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    defaults = PAPER + [f"data.dataset={args.data}"] if args.data else list(EMBEDDED)
    defaults += [f"train.num_workers={args.num_workers}", f"liteeval.features={args.features}"]
    defaults += SMOKE if args.smoke_test else []
    base = apply_overrides(ExperimentConfig(), defaults)
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    return load_config(ExperimentConfig, args.config, overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # bad input (config, dataset, storage, tracking) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("liteeval", lambda: train(args))


def train(args: argparse.Namespace) -> int:
    from dynvid.engine.trainer import fit  # imports Ray

    result = fit(build_config(args), method="liteeval")
    report = result.report or {}
    print(f"\n[dynvid] run {result.run_name} finished; results under {result.storage_path}")
    for stage in result.stages:
        print(f"[dynvid] stage {stage.stage}: checkpoint {stage.checkpoint_path}")
    if result.registered:
        print(f"[dynvid] registered model: models:/{result.registered['name']}@candidate "
              f"(version {result.registered['version']})")
    if report.get("table"):
        print(f"\n[dynvid] {report['table']}")
        print(f"[dynvid] plots and liteeval_report.json in {report.get('dir')}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run_name": result.run_name, "metrics": result.metrics, "registered": result.registered,
                       "report": {k: v for k, v in report.items() if k != "table"},
                       "stages": {s.stage: s.metrics for s in result.stages},
                       "checkpoints": {s.stage: s.checkpoint_path for s in result.stages}}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
