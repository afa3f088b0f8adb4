"""Checkpoints: weights + optimizer + scheduler + config + metadata, written atomically.

Layout of a checkpoint directory (the format of every dynvid checkpoint; nanoGPT-style,
the config travels with the weights so a checkpoint rebuilds its own model):

    model.pt       state_dict of the (unwrapped) model
    train_state.pt optimizer, scheduler, epoch, global step, RNG states (absent in export-only checkpoints)
    config.json    the ExperimentConfig as a dict
    metadata.json  method, stage, epoch, metrics, dynvid/torch versions, time

Each file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), and ``metadata.json`` is written last: a directory
without it is an interrupted write and :func:`load_checkpoint` refuses it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

import dynvid
from dynvid.atomic import atomic_torch_save, atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or unreadable; names the path."""


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    config: dict,
    metadata: dict,
    train_state: dict | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "metadata.json"
    if meta_path.exists():
        meta_path.unlink()  # the directory is incomplete until the new metadata lands
    model = getattr(model, "module", model)  # unwrap DDP
    atomic_torch_save(model.state_dict(), directory / "model.pt")
    if train_state is not None:
        atomic_torch_save(train_state, directory / "train_state.pt")
    atomic_write_bytes(directory / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())
    meta = {
        **metadata,
        "format": "dynvid-checkpoint/1",
        "dynvid_version": dynvid.__version__,
        "torch_version": torch.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True, default=float).encode())
    return directory


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint: {"model": state_dict, "config": dict, "metadata": dict, "train_state": dict | None}."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint not found: {directory}")
    if not (directory / "metadata.json").is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint (no metadata.json; interrupted write?)")
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
        config = json.loads((directory / "config.json").read_text())
        model = torch.load(directory / "model.pt", map_location=map_location, weights_only=True)
        ts_path = directory / "train_state.pt"
        train_state = torch.load(ts_path, map_location=map_location, weights_only=False) if ts_path.exists() else None
    except Exception as exc:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"{directory}: unreadable checkpoint: {exc}") from None
    return {"model": model, "config": config, "metadata": metadata, "train_state": train_state}
