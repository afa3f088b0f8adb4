"""Named base configurations of the VA-RED² job (``jobs/vared_kinetics.py``), shared by the
job, its benchmark and the sweeps (``preset: embedded`` in ``search_spaces/vared.yaml``).

- ``EMBEDDED``: the laptop-sized run on the embedded synthetic dataset (R(2+1)D-18 at width
  0.25 on 8×48×48 clips, Adam; 8 + 1 + 3 epochs), about ten minutes on an idle 2-core machine.
- ``SMOKE``: a tiny budget on top of any configuration, to check a job end to end.
- :func:`paper_config`: the thesis' configuration (Sec. 4.3, App. A.2) of a backbone on a
  real dataset, trained from scratch as App. A.2 says (``--set
  model.pretrained=R2Plus1D_18_Weights.KINETICS400_V1`` starts from Kinetics instead).
"""

from __future__ import annotations

from dynvid.config import ExperimentConfig, apply_overrides, load_config
from dynvid.data.datasets import LAPTOP_SCENES

__all__ = ["EMBEDDED", "SMOKE", "PAPER", "PAPER_COMMON", "PAPER_BATCH", "PRESETS", "job_config", "paper_config"]

# Laptop-sized defaults for the embedded dataset; every one can be overridden with --set.
EMBEDDED = [
    "model.width_mult=0.25",
    "data.clip_len=8",
    "data.stride=4",
    *LAPTOP_SCENES,
    "data.synthetic_val_videos=240",
    # The thesis' SGD lr of 0.18 is for 1152-clip batches on 96 GPUs; at 16 clips on a laptop
    # Adam converges in the few hundred steps this budget has (SGD at 0.1 stays at chance).
    "optim.optimizer=adam",
    "optim.lr=0.002",
    "optim.weight_decay=0",
    "optim.warmup_epochs=0.5",
    # Base epochs: the curve of this setup rises late (bench_vared, static: clip-1 0.10 after 6
    # of 9 epochs, 0.34 after 9), and a 6-epoch base left VA-RED² starting from a model near
    # chance (clip-1 0.13 against 1/12); 8 epochs give the dynamic stages a trained base.
    "optim.epochs=8",
    # Stages 2 and 3 continue from a trained network, so they start from a lower lr; the
    # finetune lr is the thesis' ratio (1/18 of base, for SGD) rounded for Adam. Adam's step
    # does not grow with the gradient, so in a short finetune the gates need their own, larger
    # lr to move. Measured with the issue-19 mechanism (base 8 epochs, clip-1 0.263 on 240 val
    # clips; VA-RED² GFLOPs / clip-1): gates ×10, 2 finetune epochs: -0% / 0.296 (the gates do
    # not leave "compute all"); ×50: -10% / 0.150 (untrained cheap paths switched on at once);
    # ×50 with exploration 0.5 in stage 2: -12% / 0.192; ×25, exploration 0.15, 3 finetune
    # epochs (a quarter of the 12, the thesis a third): -6% / 0.250, kept.
    "vared.dynamic_epochs=1",
    "vared.dynamic_lr=0.0005",
    "vared.explore=0.15",
    "vared.finetune_epochs=3",
    "vared.finetune_lr=0.0002",
    "vared.gate_lr_mult=25",
    "train.test_videos=60",
    "train.num_workers=1",
    "train.cpus_per_worker=2",
]
# The thesis' configuration (Sec. 4.3, App. A.2) for real data: crop and resize, weight
# decay, base lr at 1152 clips per step (12 per GPU × 96 GPUs), scaled linearly to the batch.
PAPER = {
    "r2plus1d_18": (["data.crop_size=112", "data.train_short_side=128", "data.test_short_side=128",
                     "optim.weight_decay=0.0005"], 0.18),
    "i3d": (["data.crop_size=224", "data.train_short_side=256", "data.test_short_side=256",
             "optim.weight_decay=0.0001"], 1.8),
    "x3d_m": (["data.crop_size=224", "data.train_short_side=256", "data.test_short_side=256",
               "data.stride=5", "optim.weight_decay=0.00005"], 1.8),
}
PAPER_COMMON = ["data.clip_len=16", "data.num_test_clips=10", "data.num_test_crops=3", "data.batch_size=12",
                "optim.optimizer=sgd", "optim.momentum=0.9", "optim.nesterov=true", "optim.epochs=120",
                "optim.warmup_epochs=15", "vared.finetune_epochs=40", "vared.search_space=2",
                "vared.efficiency_weight=0.8", "model.width_mult=1.0"]
PAPER_BATCH = 1152


def paper_config(backbone: str, data: str, num_workers: int = 1) -> list[str]:
    """Overrides for the thesis' configuration of ``backbone`` on ``data``."""
    if backbone not in PAPER:
        raise ValueError(f"--backbone {backbone!r}: valid: {', '.join(sorted(PAPER))}")
    overrides, base_lr = PAPER[backbone]
    lr = base_lr * 12 * num_workers / PAPER_BATCH
    return [f"data.dataset={data}", f"model.backbone={backbone}", *PAPER_COMMON, *overrides, f"optim.lr={lr:.6g}"]


SMOKE = [
    "data.synthetic_train_videos=32",
    "data.synthetic_val_videos=16",
    "data.batch_size=8",
    "data.num_test_clips=2",
    "optim.epochs=1",
    "vared.dynamic_epochs=1",
    "vared.finetune_epochs=1",
    "train.test_videos=4",
    "train.cpus_per_worker=1",
    "data.loader_workers=0",
]


def job_config(data: str | None, smoke_test: bool, config_file: str | None, overrides: list[str],
               extra: list[str] = (), *, backbone: str = "r2plus1d_18", num_workers: int = 1) -> ExperimentConfig:
    """The config of the VA-RED² job: ``EMBEDDED`` with ``backbone`` (or, on ``data``, the
    thesis' configuration of ``backbone`` with its lr scaled to ``num_workers``), ``extra``,
    the smoke budget, then the YAML file and the ``--set`` overrides."""
    defaults = paper_config(backbone, data, num_workers) if data else EMBEDDED + [f"model.backbone={backbone}"]
    defaults += list(extra) + (SMOKE if smoke_test else [])
    return load_config(ExperimentConfig, config_file, overrides, base=apply_overrides(ExperimentConfig(), defaults))


#: ``preset:`` names of a sweep spec
PRESETS = {"embedded": EMBEDDED, "smoke": EMBEDDED + SMOKE}
