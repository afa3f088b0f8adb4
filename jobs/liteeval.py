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
import sys

from dynvid.engine.jobs import job_parser, run_training_job
from dynvid.methods.liteeval.presets import job_config

__all__ = ["job_config", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = job_parser(__doc__.splitlines()[0], "liteeval", "liteeval.gamma=0.1",
                   "dataset: kinetics:/path or kinetics:s3://bucket/prefix (default: the embedded synthetic "
                   "dataset); a real dataset selects the paper configuration")
    p.add_argument("--features", choices=("cache", "pixels"), default="cache",
                   help="train the RNN stages on a Ray Data feature cache (default) or from frames")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_training_job("liteeval", "liteeval", job_config, args, [f"liteeval.features={args.features}"])


if __name__ == "__main__":
    sys.exit(main())
