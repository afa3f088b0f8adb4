"""ResQ segmentation job: DDRNet-23-slim in float, then frame quantization vs ResQ vs Dynamic-ResQ.

    ray job submit --working-dir . -- python jobs/resq_segmentation.py [--data video-seg:ROOT]
                                                                      [--config FILE] [--set key=value ...]

Abati et al., "ResQ" (Sec. 4–5): the ``float`` stage trains the segmentation network on single
frames; its evaluation PTQ-calibrates a copy (c = 64 frames, r = 20 line-search points) and
scores the configured scheme (``resq.bits``, ``resq.scheme``, keyframe period ``resq.period``)
over every frame of the val videos with mIoU and BOPs. With ``--set resq.qat_epochs=N`` a
``qat`` stage fine-tunes ResQ at ``resq.bits`` with the straight-through estimator, scales
initialised by PTQ. The report compares frame quantization, ResQ and Dynamic-ResQ at
``resq.report_bits`` and saves Dynamic-ResQ's bit-width maps (Fig. 6) as a PNG. The model is
registered.

With no arguments it runs on the embedded synthetic segmentation scenes (see
``dynvid.methods.resq.presets``); ``--data video-seg:ROOT`` reads Cityscapes / CamVid style
folders. Sweep τ, T and the bit configurations over the checkpoint with ``search_spaces/resq.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from dynvid.engine.jobs import job_parser, run_training_job
from dynvid.methods.resq.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return job_parser(__doc__.splitlines()[0], "resq", "resq.bits=W4A4->W3A3",
                      "dataset: video-seg:/path (default: the embedded synthetic segmentation scenes); a real "
                      "dataset selects the paper configuration").parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_training_job("resq_segmentation", "resq", job_config, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
