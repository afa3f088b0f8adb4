"""Method lookup for the engine: ``get_task`` and ``presets`` by method name.

The contract itself (``Stage``, ``Task``, ``PolicyTask``, ``unwrap_model``) lives in the
neutral :mod:`dynvid.task`, which imports neither engine nor methods; it is re-exported here
for older imports.
"""

from __future__ import annotations

from dynvid.config import ExperimentConfig
from dynvid.task import PolicyTask, Stage, Task, unwrap_model

__all__ = ["PolicyTask", "Stage", "Task", "get_task", "presets", "TASKS", "unwrap_model"]


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
