"""Gumbel-softmax for LiteEval's conditional gate (Wu et al., "A Coarse-to-Fine Framework for
Resource Efficient Video Recognition", Sec. 3.2, Eq. 8–9) and its temperature schedule.

Choices where the paper is vague, and why:

- ``b_t`` (Eq. 2) is read as unnormalised *log*-probabilities (logits), so ``log b_k`` of
  Eq. 8–9 is the gate's output itself: a linear layer's output can be negative, and a
  logit parameterisation is what Jang et al. (2017) use.
- The temperature anneals exponentially from ``tau_start`` to ``tau_end`` over *global*
  optimisation steps, then stays at ``tau_end`` (Sec. 3.2: "decrease the temperature from a
  high value to encourage exploration to a smaller positive value", after Jang et al.,
  whose schedule is also exponential with a floor). The authors' code restarts the
  schedule at every epoch, which re-opens exploration each epoch; a function of the global
  step is monotone over the whole run and survives resuming from a checkpoint.
- Training uses the straight-through estimator (hard one-hot forward, soft gradient), so
  the fine RNN's update of Eq. 4 is exactly 0 or 1 during training as at test time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gumbel_softmax", "temperature_at"]


def temperature_at(step: int, tau_start: float = 5.0, tau_end: float = 0.5, anneal_steps: int = 10_000) -> float:
    """Gumbel-softmax temperature at global step ``step``: ``tau_start`` at 0, falling
    exponentially to ``tau_end`` at ``anneal_steps`` and constant after."""
    if tau_start <= 0 or tau_end <= 0 or tau_end > tau_start:
        raise ValueError(f"need 0 < tau_end <= tau_start, got tau_start={tau_start}, tau_end={tau_end}")
    if anneal_steps < 1:
        raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
    frac = min(max(step, 0), anneal_steps) / anneal_steps
    return tau_start * math.exp(frac * math.log(tau_end / tau_start))


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 9 over the last dim: ``softmax((logits + G) / tau)`` with Gumbel noise
    ``G = -log(-log U)``; with ``hard`` the forward value is the one-hot arg max (Eq. 8) and
    the gradient is the soft sample's (straight-through)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    e = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)  # Exp(1) noise
    g = -torch.log(e)
    soft = F.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot + soft - soft.detach()
