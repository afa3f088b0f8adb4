"""Measured inference speed: the wall-clock side of "cost is measured, not assumed" (DESIGN.md).

Used by the methods' reports and benchmarks to set a dynamic model's measured speed-up
against its GFLOPs ratio.
"""

from __future__ import annotations

import time

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
                       batch_size: int = 1, min_time_s: float = 1.0) -> dict[str, float]:
    """Best clips/s of each model over ``rounds`` interleaved rounds on the same clips, so a
    background spike on a shared machine does not decide a comparison."""
    best = {key: 0.0 for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            best[key] = max(best[key], measure_throughput(model, clips, batch_size, min_time_s=min_time_s))
    return best
