"""Optimizers and the learning-rate schedule shared by every stage.

The papers train with SGD + Nesterov momentum and cosine decay after a linear warm-up
(VA-RED² App. A.2; the cosine schedule of Loshchilov & Hutter). :func:`lr_at` is the
schedule as a pure function of the step (nanoGPT's ``get_lr``), and the
``LambdaLR`` the engine uses calls it, so what is unit-tested is what runs.
"""

from __future__ import annotations

import math

import torch

from dynvid.config import OptimConfig

__all__ = ["lr_at", "build_optimizer", "build_scheduler"]


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, warmup_start_factor: float = 0.1,
          final_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up from ``warmup_start_factor * base_lr``
    to ``base_lr`` over ``warmup_steps``, then cosine decay to ``final_lr`` at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps > 0 and step < warmup_steps:
        frac = step / warmup_steps
        return base_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * frac)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(params, cfg: OptimConfig, lr_mults: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """SGD (Nesterov) or Adam from the config; no weight decay on norm layers and biases.

    ``lr_mults`` maps ``id(param)`` to a learning-rate multiplier (e.g. VA-RED²'s gates,
    ``vared.gate_lr_mult``); the schedule scales every group alike."""
    params = list(params)
    lr_mults = lr_mults or {}
    groups: dict[tuple[bool, float], list] = {}
    for p in params:
        if p.requires_grad:
            groups.setdefault((p.ndim > 1, float(lr_mults.get(id(p), 1.0))), []).append(p)
    groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * mult}
              for (decay, mult), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    raise ValueError(f"optim.optimizer: unknown optimizer {cfg.optimizer!r}; valid: sgd, adam")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """Per-step ``LambdaLR`` following :func:`lr_at`."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, total, 1.0, warmup, cfg.warmup_start_factor)
    )
