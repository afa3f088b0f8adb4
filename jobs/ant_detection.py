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
import sys

from dynvid.engine.jobs import job_parser, run_training_job
from dynvid.methods.ant.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return job_parser(__doc__.splitlines()[0], "ant", "ant.key_threshold=0.3",
                      "dataset: coco-vid:/path (default: the embedded synthetic detection scenes); a real "
                      "dataset selects the paper configuration").parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_training_job("ant_detection", "ant", job_config, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
