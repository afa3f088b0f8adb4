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
import sys

from dynvid.engine.jobs import job_parser, run_training_job
from dynvid.methods.lfs.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return job_parser(__doc__.splitlines()[0], "lfs", "lfs.tau=4",
                      "dataset: coco-vid:/path (default: the embedded synthetic detection scenes); a real "
                      "dataset selects the paper configuration").parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_training_job("lfs_interleaved", "lfs", job_config, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
