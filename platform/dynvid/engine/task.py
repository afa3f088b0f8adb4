"""The seam between methods and the engine (DESIGN.md, "The contract between methods and the engine").

A method package exposes a :class:`Task`. The engine builds data and optimizers, runs the
loop on Ray, checkpoints and reports; the Task builds the model and says what a training
step and an evaluation are. A Task knows nothing about Ray; the engine nothing about any
one paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch
from torch import nn

from dynvid.config import ExperimentConfig, apply_overrides

__all__ = ["DataTask", "ReportingTask", "Stage", "Task", "get_task", "presets", "TASKS", "unwrap_model"]


@dataclass(frozen=True)
class Stage:
    """One training stage of a method (e.g. VA-RED²: static base, dynamic, efficiency finetune).

    Attributes:
        name: short id, used in run names and checkpoints.
        description: one line for logs.
        init_from_previous: start from the previous stage's final checkpoint.
        overrides: ``key=value`` config overrides for this stage only (e.g. the lower
            learning rate and shorter schedule of VA-RED²'s efficiency finetune), applied by
            the worker on top of the job's config.
        independent_of: config sections or keys this stage does not read (VA-RED²'s static
            base ignores ``vared``): a sweep over such knobs trains the stage once and shares it.
    """

    name: str
    description: str = ""
    init_from_previous: bool = True
    overrides: tuple[str, ...] = ()
    independent_of: tuple[str, ...] = ()

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The job's config with this stage's overrides applied."""
        return apply_overrides(cfg, list(self.overrides)) if self.overrides else cfg


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (``prepare_model``), or the model itself."""
    return model.module if hasattr(model, "module") else model


class Task(Protocol):
    """What a method provides to the engine."""

    name: str
    stages: tuple[Stage, ...]

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        """The network of ``stage`` (None: the last stage, the model that gets registered)
        for ``cfg`` with ``num_classes`` outputs (returns logits)."""

    def training_step(self, model: nn.Module, batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Loss to backpropagate and scalar logs (per-batch means) for one batch. A log may be a
        Python float or a detached 0-dim tensor; tensors stay on the device and the engine
        reads them all in one transfer per log line, so a step needs no host synchronisation
        (``float(loss)`` would wait for the GPU every step)."""

    inference_knobs: tuple[str, ...]
    """Optional: config keys that act only at inference (an inference sweep may vary them over
    one checkpoint; every other key needs retraining)."""

    def evaluate(self, model: nn.Module, loader: Iterable, stage: Stage) -> dict[str, float]:
        """Metrics over ``loader`` (this worker's shard). Keys ending in ``_min``/``_max`` are
        reduced across workers by min/max; every other key is a per-sample mean and is
        averaged weighted by ``num_samples``, which must be present."""


class DataTask(Task, Protocol):
    """Optional hooks of a Task whose stages need more than the engine's clip datasets
    (LiteEval's RNN stages read a feature cache built between stages)."""

    steps_per_epoch: int | None
    """Set by the engine on the worker before training (e.g. a schedule over global steps)."""

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """``(train, val)`` datasets of ``stage`` (items ``(inputs, label)``, a ``num_classes``
        attribute and ``set_epoch(epoch)``), or None for the engine's clip datasets."""

    def prepare_stage(self, cfg: ExperimentConfig, stage: Stage, init_from: str | None) -> list[str]:
        """Runs on the driver before ``stage`` starts from checkpoint ``init_from``; returns
        ``key=value`` overrides of the stage's config (e.g. where a cache was written)."""


class ReportingTask(Task, Protocol):
    """A Task that also writes a job-level report on the driver after its last stage."""

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """Compare the stages (``trainer.StageResult`` list: metrics and checkpoint paths) and
        write files to ``out_dir``. Returns ``{"metrics": {...}, "table": str, "markdown": str,
        "artifacts": [paths]}``; the engine prints the table and logs all three to MLflow."""


def get_task(name: str, cfg: ExperimentConfig) -> Task:
    """The Task registered under ``name``, configured from ``cfg``."""
    if name not in TASKS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(sorted(TASKS))}")
    return TASKS[name](cfg)


def _static(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.static import StaticClassification  # methods import the engine's types

    return StaticClassification(label_smoothing=cfg.optim.label_smoothing)


def _vared(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.vared import VaredTask

    return VaredTask(cfg)


def _liteeval(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.liteeval import LiteEvalTask

    return LiteEvalTask(cfg)


def _lfs(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.lfs import LFSTask

    return LFSTask(cfg)


def _ant(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.ant import ANTTask

    return ANTTask(cfg)


def _resq(cfg: ExperimentConfig) -> Task:
    from dynvid.methods.resq import ResQTask

    return ResQTask(cfg)


TASKS = {"static": _static, "vared": _vared, "liteeval": _liteeval, "lfs": _lfs, "ant": _ant, "resq": _resq}


def presets(method: str) -> dict[str, list[str]]:
    """The method's named base configurations (``key=value`` lists), e.g. VA-RED²'s
    ``embedded`` laptop run; a sweep spec selects one with ``preset:``."""
    if method == "vared":
        from dynvid.methods.vared.presets import PRESETS

        return PRESETS
    if method == "liteeval":
        from dynvid.methods.liteeval.presets import PRESETS

        return PRESETS
    if method == "lfs":
        from dynvid.methods.lfs.presets import PRESETS

        return PRESETS
    if method == "ant":
        from dynvid.methods.ant.presets import PRESETS

        return PRESETS
    if method == "resq":
        from dynvid.methods.resq.presets import PRESETS

        return PRESETS
    return {}
