"""Named base configurations of the ResQ jobs (``jobs/resq_segmentation.py``, ``jobs/bench_resq.py``)
and of ``search_spaces/resq.yaml``.

- ``EMBEDDED``: the laptop-sized run on the embedded segmentation data: the synthetic scenes at
  160×160 with their object masks (7 classes), sprites 1.5× the default size (DDRNet predicts
  at 1/8 resolution, so the smallest distractors still cover a few output cells), at most two
  distractors, 24 frames per video. DDRNet-23-slim trains from scratch (no ImageNet weights
  here) with Adam, lr 0.002, batch 16, 30 epochs of 480 single frames. Evaluation: every frame
  of the 32 val videos, keyframe period T = 3 (Sec. 5.2), PTQ with c = 64 and r = 20 (Sec. 5).
- ``PAPER``: Sec. 5.2 on a Cityscapes-style folder dataset (``--data video-seg:ROOT``):
  SGD with momentum 0.9, weight decay 5e-4, lr 0.01 (DDRNet's recipe), batch 12, 1024-pixel
  crops, 484 epochs; QAT at lr 5e-4 when ``resq.qat_epochs`` is set. The paper quantizes a
  trained floating-point network: ``--set model.pretrained=CHECKPOINT`` (or ``--init-from``).
- ``SMOKE``: a tiny budget on top of any configuration.
"""

from __future__ import annotations

from dynvid.config import preset_job_config

__all__ = ["EMBEDDED", "PAPER", "PRESETS", "SMOKE", "job_config"]

EMBEDDED = [
    "data.dataset=synthetic:segmentation",
    "data.synthetic_height=160",
    "data.synthetic_width=160",
    "data.synthetic_frames=24",
    "data.synthetic_max_distractors=2",
    "data.synthetic_object_scale=1.5",
    "data.synthetic_train_videos=480",
    "data.synthetic_val_videos=32",
    "data.batch_size=16",
    "data.loader_workers=1",
    "optim.optimizer=adam",
    "optim.lr=0.002",
    "optim.weight_decay=0",
    "optim.warmup_epochs=0.5",
    "optim.epochs=30",
    "optim.grad_clip=10.0",
    "train.eval_every=30",
    "train.num_workers=1",
    "train.cpus_per_worker=2",
]

PAPER = [
    "resq.crop_size=1024",
    "data.batch_size=12",
    "optim.optimizer=sgd",
    "optim.lr=0.01",
    "optim.momentum=0.9",
    "optim.weight_decay=5e-4",
    "optim.epochs=484",
]

SMOKE = [
    "data.synthetic_train_videos=8",
    "data.synthetic_val_videos=2",
    "data.synthetic_frames=6",
    "data.synthetic_height=64",
    "data.synthetic_width=64",
    "data.batch_size=4",
    "data.loader_workers=0",
    "resq.calib_samples=6",
    "resq.calib_candidates=4",
    "resq.map_frames=3",
    "optim.epochs=1",
    "train.eval_every=1",
    "train.cpus_per_worker=1",
]


def job_config(data: str | None, smoke_test: bool, config_file: str | None, overrides: list[str],
               extra: list[str] = ()):
    """The config of the ResQ jobs: ``EMBEDDED`` (or ``PAPER`` on ``data``), ``extra``, the smoke
    budget, then the YAML file and ``--set`` overrides."""

    return preset_job_config(EMBEDDED, PAPER, SMOKE, data, smoke_test, config_file, overrides, extra)


#: ``preset:`` names of a sweep spec
PRESETS = {"embedded": EMBEDDED, "smoke": EMBEDDED + SMOKE}
