"""Named base configurations of the LiteEval job (``jobs/liteeval.py``), shared by the job,
its benchmark and the sweeps (``preset: embedded`` in ``search_spaces/liteeval.yaml``).

- ``EMBEDDED``: the laptop-sized run on the embedded synthetic actions. The synthetic
  classes are defined by motion, which a single frame cannot show, so a time step is an
  8-frame snippet and both CNNs are 3-D, as LiteEval's SlowFast setting (Sec. 4.2.2): the
  fine CNN is R(2+1)D-18 at width 1/4 on 8×48×48 snippets, the coarse one the same network
  at width 1/8 on the snippet downsampled to 32×32 (11.5% of the fine cost per step). 8
  steps of 8 frames at stride 4 cover a 256-frame video. Measured on the way: 4-frame
  snippets at stride 2 left both CNNs at chance after 8 epochs; with 8×4 snippets a
  width-1/8 coarse CNN at 24×24 was still at chance after 12 epochs while the fine one
  reached clip-1 0.21; 20 epochs, as these 3-D networks trained from scratch rise late.
  The coarse CNN was width 1/4 at 24×24 before (26% of the fine cost): after 20 epochs its
  per-step top-1 was 0.16-0.18 (chance 0.08) and LiteEval restricted to its coarse stream
  reached 0.25, so LiteEval had little to go on between fine reads while watching every
  step cost as much as two fine reads (the paper's MobileNetV2 at 112 costs 1% of
  ResNet-101 at 224, Sec. 4.1). Width 1/8 at 32×32: per-step top-1 0.29-0.31 and the
  coarse stream alone 0.45, at less than half the cost (README, LiteEval).
- ``PAPER``: Sec. 4.1 — MobileNetV2 at 112 and ResNet-101 at 224 on 25 frames at 1 fps,
  D^c = 512, D^f = 2,048, Adam at 1e-4, γ = 0.05, λ = 2. The clip pipeline takes the 25
  steps as 25 consecutive seconds from the video's centre (for evaluation); a video shorter
  than 25 s (a 10 s Kinetics clip) repeats frames, where the paper's UNIFORM spreads 25
  frames over the whole video: set ``liteeval.steps`` / ``data.target_fps`` to the videos'
  length for short clips. The paper's CNNs start from ImageNet: add
  ``--set liteeval.coarse_pretrained=MobileNet_V2_Weights.IMAGENET1K_V2 --set
  liteeval.fine_pretrained=ResNet101_Weights.IMAGENET1K_V2`` (README, Pretrained weights).
- ``SMOKE``: a tiny budget on top of any configuration.
"""

from __future__ import annotations

from dynvid.config import ExperimentConfig, apply_overrides, load_config
from dynvid.data.datasets import LAPTOP_SCENES

__all__ = ["EMBEDDED", "PAPER", "PRESETS", "SMOKE", "job_config"]

EMBEDDED = [
    "liteeval.fine_backbone=r2plus1d_18",
    "liteeval.fine_width=0.25",
    "liteeval.coarse_backbone=r2plus1d_18",
    "liteeval.coarse_width=0.125",
    "liteeval.coarse_size=32",
    "liteeval.steps=8",
    "liteeval.snippet_len=8",
    "liteeval.coarse_hidden=128",
    "liteeval.fine_hidden=256",
    "data.clip_len=64",
    "data.stride=4",
    *LAPTOP_SCENES,
    "data.synthetic_frames=256",
    "data.synthetic_val_videos=480",
    "data.cpus_per_decoder=2",
    # the CNN stage: Adam as in the VA-RED² embedded run (SGD at these batch sizes stays at chance)
    "optim.optimizer=adam",
    "optim.lr=0.002",
    "optim.weight_decay=0",
    "optim.warmup_epochs=0.5",
    "liteeval.cnn_epochs=20",
    # the RNN stages: Adam at the paper's fixed 1e-4 is slow for a few hundred steps; 1e-3
    "liteeval.rnn_epochs=40",
    "liteeval.rnn_lr=0.001",
    "liteeval.rnn_batch_size=64",
    "liteeval.budgets=[1, 2, 3, 4, 6]",
    "train.eval_every=2",
    "train.num_workers=1",
    "train.cpus_per_worker=2",
]

PAPER = [
    "liteeval.fine_backbone=resnet101",
    "liteeval.coarse_backbone=mobilenet_v2",
    "liteeval.coarse_size=112",
    "liteeval.steps=25",
    "liteeval.snippet_len=1",
    "liteeval.coarse_hidden=512",
    "liteeval.fine_hidden=2048",
    "liteeval.rnn_lr=0.0001",
    "liteeval.rnn_batch_size=256",
    "data.clip_len=25",
    "data.stride=1",
    "data.target_fps=1",
    "data.crop_size=224",
    "data.train_short_side=256",
    "data.test_short_side=224",
]

SMOKE = [
    "data.synthetic_train_videos=24",
    "data.synthetic_val_videos=12",
    "data.batch_size=8",
    "liteeval.cnn_epochs=1",
    "liteeval.rnn_epochs=2",
    "liteeval.rnn_batch_size=8",
    "liteeval.budgets=[1, 2]",
    "train.cpus_per_worker=1",
    "data.cpus_per_decoder=1",
    "data.loader_workers=0",
]


def job_config(data: str | None, smoke_test: bool, config_file: str | None, overrides: list[str],
               extra: list[str] = ()) -> ExperimentConfig:
    """The config of the LiteEval job: ``EMBEDDED`` (or ``PAPER`` alone on ``data``: it sets
    the networks and the input from scratch), ``extra``, the smoke budget, then the YAML file
    and the ``--set`` overrides."""
    defaults = PAPER + [f"data.dataset={data}"] if data else list(EMBEDDED)
    defaults += list(extra) + (SMOKE if smoke_test else [])
    return load_config(ExperimentConfig, config_file, overrides, base=apply_overrides(ExperimentConfig(), defaults))


#: ``preset:`` names of a sweep spec
PRESETS = {"embedded": EMBEDDED, "smoke": EMBEDDED + SMOKE}
