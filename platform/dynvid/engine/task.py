"""Method lookup by name, re-exported from the neutral :mod:`dynvid.task` (the contract and
its registry), which imports no method until one is asked for: the engine imports nothing
from ``dynvid.methods``.
"""

from __future__ import annotations

from dynvid.task import METHODS as TASKS
from dynvid.task import PolicyTask, Stage, Task, get_task, presets, unwrap_model

__all__ = ["PolicyTask", "Stage", "Task", "get_task", "presets", "TASKS", "unwrap_model"]
