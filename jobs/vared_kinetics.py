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
import functools
import sys

from dynvid.engine.jobs import job_parser, run_training_job
from dynvid.methods.vared.presets import job_config, paper_config

__all__ = ["job_config", "main", "paper_config", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = job_parser(__doc__.splitlines()[0], "vared", "optim.epochs=20",
                   "dataset: kinetics:/path, kinetics:s3://bucket/k400 (default: the embedded synthetic "
                   "dataset); a real dataset selects the paper configuration of --backbone")
    p.add_argument("--backbone", default="r2plus1d_18", help="r2plus1d_18 (default), i3d or x3d_m")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the thesis' lr is per batch of 1,152 clips: it scales with the workers
    config = functools.partial(job_config, backbone=args.backbone, num_workers=args.num_workers)
    return run_training_job("vared_kinetics", "vared", config, args)


if __name__ == "__main__":
    sys.exit(main())
