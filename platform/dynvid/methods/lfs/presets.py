"""Named base configurations of the Looking Fast and Slow jobs (``jobs/lfs_interleaved.py``,
``jobs/lfs_policy_dqn.py``, ``jobs/bench_lfs.py``) and of ``search_spaces/lfs.yaml``.

- ``EMBEDDED``: the laptop-sized run on the embedded synthetic detection scenes (square
  160×160 frames, the sprites' six shapes as classes, sprites 1.5× the default size and at
  most one distractor: at the 5×5 grid of f0 at 160 the default scenes' median object,
  19 px, has no anchor with IoU ≥ 0.5; the paper's 10×10 grid at 320 sees its objects at
  the scale these larger sprites have here). The scenes vary within a video (issue 23): the
  actor changes speed ~3 times and ~2 objects enter the view per video (about half of them
  leave again before it ends), content whose redundancy changes over time, which an
  adaptive policy can follow (on the scenes without them the next frame's loss gap is
  barely more predictable from the policy's observation than from the schedule). The
  architecture is the paper's (MobileNetV2 1.4 and 0.35, f1 without its last stride, grouped
  LSTM with G = 4, SSDLite with 256-channel levels) at half the resolution (f0 at 160, f1 at
  80, a 5×5 grid), with a smaller memory (256-channel projections, 128-channel state) so
  that training fits two cores. No ImageNet pretraining exists here, so the whole detector trains from
  scratch with Adam, 16 epochs, and RetinaNet's focal loss over all anchors: the first
  embedded run (default sprites, 10 epochs, SSD's sigmoid loss with hard-negative mining)
  reached only 0.045 mAP@0.5 with f0 on every frame. The DQN policy (issue 23) trains on the
  held-out ``test`` split (``lfs.policy_split``), not on the detector's own training videos,
  with 24 replayed per sampled env step (``lfs.dqn_training_intensity``: ~6× the updates of
  one per sampling round). Measured with 3 seeds per γ (README, Looking Fast and Slow): the
  policies differ a lot between seeds, and on average they do not beat the fixed schedule.
- ``PAPER``: Sec. 3.1–3.3 — f0 at 320, f1 at 160, 1024-channel projections, 320-channel
  state, batch 12, learning rate 0.002 with cosine decay, on a COCO-style video dataset
  given with ``--data coco-vid:ROOT``. The paper's extractors start from ImageNet
  MobileNetV2s (Sec. 3.3): ``lfs.f0_pretrained`` / ``lfs.f1_pretrained`` take weights at
  their widths (torchvision publishes width 1.0 only; README, Pretrained weights).
- ``SMOKE``: a tiny budget on top of any configuration.
"""

from __future__ import annotations

from dynvid.config import preset_job_config

__all__ = ["EMBEDDED", "PAPER", "POLICY_SMOKE", "PRESETS", "SMOKE", "job_config"]

EMBEDDED = [
    "data.dataset=synthetic:detection",
    "data.synthetic_height=160",
    "data.synthetic_width=160",
    "data.synthetic_frames=48",
    "data.synthetic_max_distractors=1",
    "data.synthetic_object_scale=1.5",
    "data.synthetic_speed_changes=3",
    "data.synthetic_transients=2",
    "data.synthetic_train_videos=320",
    "data.synthetic_val_videos=48",
    "data.batch_size=8",
    "data.loader_workers=1",
    "lfs.f0_size=160",
    "lfs.f1_size=80",
    "lfs.memory_input=256",
    "lfs.state_channels=128",
    "lfs.focal=true",
    "lfs.policy_split=test",
    "lfs.dqn_training_intensity=24",
    "optim.optimizer=adam",
    "optim.lr=0.002",
    "optim.weight_decay=0",
    "optim.warmup_epochs=0.5",
    "optim.epochs=16",
    "optim.grad_clip=10.0",
    "train.eval_every=8",
    "train.num_workers=1",
    "train.cpus_per_worker=2",
]

PAPER = [
    "lfs.f0_size=320",
    "lfs.f1_size=160",
    "lfs.memory_input=1024",
    "lfs.state_channels=320",
    "data.batch_size=12",
    "optim.optimizer=sgd",
    "optim.lr=0.002",
    "optim.momentum=0.9",
    "optim.weight_decay=4e-5",
]

SMOKE = [
    "data.synthetic_train_videos=8",
    "data.synthetic_val_videos=4",
    "data.synthetic_frames=12",
    "data.batch_size=4",
    "data.loader_workers=0",
    "optim.epochs=1",
    "lfs.taus=[1, 4]",
    "lfs.max_detections=20",
    "lfs.score_threshold=0.3",
    "lfs.calibration_videos=4",
    "train.eval_every=1",
    "train.cpus_per_worker=1",
]

POLICY_SMOKE = [
    "lfs.dqn_iterations=2",
    "lfs.dqn_steps_per_iteration=50",
    "lfs.dqn_learning_starts=20",
    "lfs.dqn_epsilon_steps=100",
    "lfs.dqn_target_update=20",
    "lfs.episode_len=6",
    "lfs.policy_videos=4",
    "lfs.dqn_replay_capacity=500",
]
"""A tiny DQN budget on top of ``SMOKE`` (the policy job and benchmark)."""


def job_config(data: str | None, smoke_test: bool, config_file: str | None, overrides: list[str],
               extra: list[str] = ()):
    """The config of the LFS jobs: ``EMBEDDED`` (or ``PAPER`` on ``data``), ``extra``, the smoke
    budget, then the YAML file and ``--set`` overrides."""

    return preset_job_config(EMBEDDED, PAPER, SMOKE + POLICY_SMOKE, data, smoke_test, config_file, overrides, extra)


#: ``preset:`` names of a sweep spec
PRESETS = {"embedded": EMBEDDED, "smoke": EMBEDDED + SMOKE}
