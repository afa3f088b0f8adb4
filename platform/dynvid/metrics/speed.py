"""Measured inference speed: the wall-clock side of "cost is measured, not assumed" (DESIGN.md).

Used by the methods' reports and benchmarks to set a dynamic model's measured speed-up
against its GFLOPs ratio.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

__all__ = ["compare_throughput", "measure_throughput"]


@torch.no_grad()
def measure_throughput(model: nn.Module, clips: torch.Tensor, batch_size: int = 1, warmup: int = 3,
                       min_time_s: float = 2.0) -> float:
    """Clips per second of ``model`` in inference mode over ``clips`` (N, C, T, H, W), in
    batches of ``batch_size``, after ``warmup`` batches; loops over the clips until at
    least ``min_time_s`` has passed."""
    was_training = model.training
    model.eval()
    batches = list(clips.split(batch_size))
    sync = torch.cuda.synchronize if clips.is_cuda else (lambda: None)  # count queued GPU work
    for b in batches[:warmup]:
        model(b)
    sync()
    done, start = 0, time.perf_counter()
    while True:
        for b in batches:
            model(b)
            done += len(b)
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            break
    model.train(was_training)
    return done / elapsed


def compare_throughput(models: dict[str, nn.Module], clips: torch.Tensor, rounds: int = 3,
                       batch_size: int = 1, min_time_s: float = 1.0, statistic: str = "best", warmup: int = 3,
                       setup: dict[str, Callable[[], AbstractContextManager]] | None = None) -> dict[str, float]:
    """Clips/s of each model over ``rounds`` interleaved rounds on the same clips (each round
    times every model once, in turn), so a background spike on a shared machine does not decide
    a comparison.

    Args:
        statistic: ``"best"`` (the highest clips/s of the rounds) or ``"median"`` (the median
            round, which a spike can move neither way).
        warmup: batches run before each timed measurement (see :func:`measure_throughput`).
        setup: per model key, a factory of a context manager entered around each of its
            measurements (e.g. VA-RED²'s ``force_policy``: one network timed under several
            forced decisions, interleaved with the static one).
    """
    if statistic not in ("best", "median"):
        raise ValueError(f"statistic must be 'best' or 'median', got {statistic!r}")
    setup = setup or {}
    seen: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            with setup[key]() if key in setup else contextlib.nullcontext():
                seen[key].append(measure_throughput(model, clips, batch_size, warmup=warmup, min_time_s=min_time_s))
    if statistic == "best":
        return {key: max(values) for key, values in seen.items()}
    return {key: statistics.median(values) for key, values in seen.items()}
