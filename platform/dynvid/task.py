"""The contract between a method and the engine (DESIGN.md, "The contract between methods and the engine").

A method subclasses :class:`Task`: it builds the model and says what a training step and an
evaluation are; the engine builds data and optimizers, runs the loop on Ray, checkpoints and
reports. This module imports neither: a method needs nothing from the engine to declare
itself, and the engine learns everything a method offers from this one class.

Every hook the engine calls is declared here once, with what it is for and a default that
means "nothing special"; a method overrides the ones it needs. The engine calls them all and
never asks whether a Task has one (``hasattr``). Three hooks have no default: ``build_model``,
``training_step`` and ``evaluate``. A method that trains a policy on a frozen model (Looking
Fast and Slow's DQN) subclasses :class:`PolicyTask`, whose hooks policy sweeps call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from dynvid.config import ExperimentConfig, apply_overrides

if TYPE_CHECKING:  # pragma: no cover - annotations only: reading the registry loads no torch
    import torch
    from torch import nn

__all__ = ["METHODS", "PolicySpec", "PolicyTask", "Stage", "Task", "get_task", "method_names", "presets", "register_task",
           "task_class", "unwrap_model"]


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


def _setting(cfg: ExperimentConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (``prepare_model``), or the model itself."""
    return model.module if hasattr(model, "module") else model


class Task:
    """What a method provides to the engine. Subclass it; override the three abstract hooks and
    any optional one whose default does not fit."""

    name: ClassVar[str] = ""
    """The method's name (run names, the registry, checkpoints' metadata)."""

    stages: tuple[Stage, ...] = ()
    """The training stages, in order (a class or an instance attribute)."""

    inference_knobs: ClassVar[tuple[str, ...]] = ()
    """Config keys that act only at inference: an inference sweep may vary them over one
    checkpoint (every other key needs retraining)."""

    ddp_kwargs: ClassVar[dict[str, Any] | None] = None
    """Keyword arguments of the DDP wrapper (e.g. ``find_unused_parameters`` when a step leaves
    parameters without gradients)."""

    steps_per_epoch: int | None = None
    """This worker's optimizer steps per epoch, known once its data loader exists (set through
    :meth:`set_steps_per_epoch`; e.g. a temperature schedule over global steps)."""

    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("clip-1", "val_clip_top1", "{:.4f}"), ("clip-5", "val_clip_top5", "{:.4f}"),
        ("video-1", "test_video_top1", "{:.4f}"), ("video-5", "test_video_top5", "{:.4f}"))
    """The quality columns of the engine's results table (one row per stage): ``(heading,
    metric key, format)``; the engine adds stage, epochs, GFLOPs and time around them."""

    summary_metrics: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    """``(label, metric key, format)`` of the evaluation metrics the engine's per-epoch line
    shows besides top-k accuracies and GFLOPs (e.g. a detector's ``AP50``)."""

    presets: ClassVar[dict[str, list[str]]] = {}
    """Named base configurations (``key=value`` lists), e.g. ``embedded`` (the laptop run on
    the embedded data) and ``smoke``; a sweep spec selects one with ``preset:``."""

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Task:
        """The Task configured from ``cfg`` (by default ``cls(cfg)``)."""
        return cls(cfg)

    # ---- the three hooks every method defines -------------------------------------------------

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        """The network of ``stage`` (None: the last stage, the model that gets registered) for
        ``cfg`` with ``num_classes`` outputs."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model")

    def training_step(self, model: nn.Module, batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Loss to backpropagate and scalar logs (per-batch means) for one batch. A log may be a
        Python float or a detached 0-dim tensor; tensors stay on the device and the engine
        reads them all in one transfer per log line, so a step needs no host synchronisation
        (``float(loss)`` would wait for the GPU every step)."""
        raise NotImplementedError(f"{type(self).__name__} must define training_step")

    def evaluate(self, model: nn.Module, loader: Iterable, stage: Stage) -> dict[str, float]:
        """Metrics over ``loader`` (this worker's shard). Keys ending in ``_min``/``_max`` are
        reduced across workers by min/max; every other key is a per-sample mean and is
        averaged weighted by ``num_samples``, which must be present."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate")

    def end_epoch(self, model: nn.Module, stage: Stage, say: Callable[..., None]) -> dict[str, float]:
        """Called on every worker after an epoch's training steps, before its evaluation and
        checkpoint: work whose result belongs in the epoch's checkpoint (e.g. ANT refreshes
        BatchNorm statistics its training left stale). ``say`` prints on rank 0 only. Returns
        metrics logged with the epoch's (numbers; default none)."""
        return {}

    # ---- data ---------------------------------------------------------------------------------

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """``(train, val)`` datasets of ``stage`` (items ``(inputs, target)``, a ``num_classes``
        attribute and ``set_epoch(epoch)``), or None (the default) for the engine's clip
        datasets of ``data.train_split`` / ``data.val_split``."""
        return None

    def eval_dataset(self, cfg: ExperimentConfig):
        """The validation dataset an inference sweep scores checkpoints on, or None (the
        default) for the engine's clip dataset of ``data.val_split``."""
        return None

    def test_dataset(self, cfg: ExperimentConfig):
        """The final test of a stage's last epoch (``train.final_test``), scored by
        :meth:`evaluate`, or None for none. By default the engine's K-LeftCenterRight video views
        of ``data.val_split`` (VA-RED² thesis Sec. 4.3): clip classifiers report video-1/5."""

        from dynvid.data.datasets import build_test_dataset  # imports torch and PyAV: loaded when asked for

        return build_test_dataset(cfg.data, cfg.train.test_videos, seed=cfg.train.seed)

    def set_steps_per_epoch(self, steps: int) -> None:
        """Called on each worker before training, with its optimizer steps per epoch."""
        self.steps_per_epoch = steps

    # ---- optimisation -------------------------------------------------------------------------

    pretrained_keys: ClassVar[tuple[str, ...]] = ("model.pretrained",)
    """The pretrained-weights settings this Task reads; any other one that is set is refused
    before training (it would be ignored)."""

    def pretrained_specs(self, cfg: ExperimentConfig) -> dict[str, str]:
        """The pretrained weights this Task's networks may start from, by setting
        (``{"model.pretrained": "R2Plus1D_18_Weights.KINETICS400_V1"}``): the driver checks each
        before anything trains (a weights name neither cached nor downloadable fails there)."""
        return {k: v for k in self.pretrained_keys if (v := _setting(cfg, k))}

    def load_pretrained(self, model: nn.Module, cfg: ExperimentConfig, stage: Stage) -> list[str]:
        """Load the pretrained weights into ``model`` when ``stage`` starts fresh (no resumed
        checkpoint, no previous stage's); returns lines for the log. Default: ``model.pretrained``
        into the whole network, whose keys are torchvision's."""
        from dynvid.backbones.pretrained import load_parts  # imports torch: loaded when asked for

        return load_parts([("model.pretrained", cfg.model.pretrained, model, {})], stage.name)

    def lr_multipliers(self, model: nn.Module, stage: Stage) -> dict[int, float] | None:
        """Learning-rate multipliers by parameter ``id`` (e.g. VA-RED²'s gates), or None."""
        return None

    # ---- around the stages, on the driver -----------------------------------------------------

    def prepare_stage(self, cfg: ExperimentConfig, stage: Stage, init_from: str | None) -> list[str]:
        """Runs on the driver before ``stage`` starts from checkpoint ``init_from`` (e.g.
        LiteEval's feature cache); returns ``key=value`` overrides of the stage's config."""
        return []

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict | None:
        """After the last stage, on the driver: compare the stages (``trainer.StageResult``
        list: metrics and checkpoint paths) and write files to ``out_dir``. Returns
        ``{"metrics": {...}, "table": str, "markdown": str, "artifacts": [paths]}`` (the
        engine prints the table and logs all to MLflow), or None (the default): no report."""
        return None

    # ---- the registered model -----------------------------------------------------------------

    def run_label(self, cfg: ExperimentConfig) -> str:
        """This method's part of a derived run name (``ExperimentConfig.run_name``): what
        network on what input, e.g. ``vared_r2plus1d_18-w0.25_8x4x112``."""
        return cfg.clip_label(self.name)

    def backbone_label(self, cfg: ExperimentConfig) -> str:
        """The backbone's name in the registered model's name and card."""
        return cfg.model.backbone

    def example_input(self, cfg: ExperimentConfig) -> torch.Tensor:
        """An input batch of the registered model (its MLflow signature): by default 2 clips
        ``(3, clip_len, crop, crop)``."""
        import torch  # loaded when asked for: the registry (dynvid --help) needs no torch

        return torch.zeros(2, 3, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)

    @staticmethod
    def num_classes_from_state(state: dict) -> int:
        """Output classes of a state dict written by this method's model (a checkpoint without
        them in its metadata): by default the classifier's bias."""
        for key in ("fc.bias", "head.fc.bias", "classifier.bias"):
            if key in state:
                return int(state[key].shape[0])
        last = [k for k, v in state.items() if k.endswith(".bias") and v.ndim == 1]
        if not last:
            raise ValueError("no classifier bias in the state dict: cannot tell its number of classes")
        return int(state[last[-1]].shape[0])


@dataclass
class PolicySpec:
    """What a :class:`PolicyTask` hands the engine to train its policy with RLlib's Double DQN
    (:func:`dynvid.engine.rl.train_policy`). Nothing here imports Ray.

    Attributes:
        env: a gymnasium ``Env`` class (RLlib builds it on each env runner as ``env(env_config)``).
        env_config: its config (plain data: it travels to the env runners).
        q_network: ``"module:Class"`` of the Q-network (constructor arguments plus
            ``num_actions``; attributes ``encoder``, ``head``, ``kwargs``, optionally
            ``observation_shape``: :mod:`dynvid.engine.rl_module`).
        q_kwargs: its constructor arguments except ``num_actions``.
        dqn: keyword arguments of :func:`dynvid.engine.rl.dqn_config` (learning rate, discount,
            ε schedule, replay, env runners, seed, ...).
        iterations: ``algo.train()`` calls.
        export_format: the tag of the exported policy file, checked by the method's loader.
        metadata: stored in the exported file (e.g. the paper and section).
        label: prefix of the per-iteration progress lines.
        description: one line printed before training.
    """

    env: type
    env_config: dict[str, Any]
    q_network: str
    q_kwargs: dict[str, Any]
    dqn: dict[str, Any]
    iterations: int
    export_format: str
    metadata: dict[str, Any] = field(default_factory=dict)
    label: str = "dqn"
    description: str = ""


class PolicyTask(Task):
    """A Task that also trains a policy on one of its frozen models (a policy job, a policy
    sweep's trials). The method supplies the pieces (:meth:`policy_spec`,
    :meth:`evaluate_policy`); the engine runs RLlib (:mod:`dynvid.engine.rl`)."""

    policy_knobs: ClassVar[tuple[str, ...]] = ()
    """Config keys a policy sweep may vary (each trial trains a policy)."""

    def policy_runner_bundles(self, cfg: ExperimentConfig) -> list[dict[str, float]]:
        """Ray resource bundles of the policy training's own actors (e.g. RLlib env runners),
        reserved in a trial's placement group besides the learner's bundle."""
        return []

    def policy_spec(self, cfg: ExperimentConfig, model: str, local: str) -> PolicySpec:
        """The environment, Q-network and DQN settings of a policy on the frozen ``model``:
        ``model`` is what env runners read (a local folder, or an ``s3://`` URI that runners on
        other nodes fetch themselves), ``local`` the same checkpoint on this machine."""
        raise NotImplementedError(f"{type(self).__name__} must define policy_spec")

    def evaluate_policy(self, cfg: ExperimentConfig, model: str, policy: str, out_dir: str, training: dict,
                        shared: dict, progress: Callable[[str], Any] = print) -> dict:
        """Metrics of the exported ``policy`` file on the frozen ``model`` (a local checkpoint
        folder); ``training`` is the DQN's summary (returns, env steps, ``model`` as given).
        ``shared`` is one dict for every policy of one call on the same model: what the
        evaluation needs once per model (e.g. the fixed baselines' rows) and the rows it
        collects. A list under ``artifacts`` in the result is logged with the policy."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate_policy")


# ---- the method registry ------------------------------------------------------------------------
#
# Checkpoints, registered models and sweep specs name their method, and the processes that read
# them (Ray workers, Tune trials, an inference sweep) turn the name into a Task. The table below
# names where each Task class lives, as text: nothing here imports a method until it is asked
# for, so the engine reaches the methods through this module without importing any of them.

METHODS: dict[str, str] = {
    "static": "dynvid.methods.static.task:StaticClassification",
    "vared": "dynvid.methods.vared.task:VaredTask",
    "liteeval": "dynvid.methods.liteeval.task:LiteEvalTask",
    "lfs": "dynvid.methods.lfs.task:LFSTask",
    "ant": "dynvid.methods.ant.task:ANTTask",
    "resq": "dynvid.methods.resq.task:ResQTask",
}
"""Method name -> ``"module:Class"`` of its Task. A new method adds a line here (or calls
:func:`register_task` from its own package, e.g. outside this repository)."""


def register_task(name: str, target: str | type[Task]) -> None:
    """Make ``name`` resolve to ``target`` (a Task subclass or ``"module:Class"``)."""
    if isinstance(target, type) and not issubclass(target, Task):
        raise TypeError(f"{target.__name__} is not a dynvid.task.Task")
    METHODS[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def task_class(name: str) -> type[Task]:
    """The Task class registered under ``name`` (its module is imported now)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(method_names())}")
    module, _, attr = METHODS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"method {name!r} resolves to {METHODS[name]}, which is not a dynvid.task.Task")
    return cls


def get_task(name: str, cfg: ExperimentConfig) -> Task:
    """The Task registered under ``name``, configured from ``cfg``."""
    return task_class(name).from_config(cfg)


def presets(name: str) -> dict[str, list[str]]:
    """The named base configurations of method ``name`` (empty for the static baseline)."""
    return dict(task_class(name).presets)
