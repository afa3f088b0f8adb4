"""Gumbel-softmax for LiteEval's conditional gate (Wu et al., "A Coarse-to-Fine Framework for
Resource Efficient Video Recognition", Sec. 3.2, Eq. 8–9; the sampler itself is the shared
:func:`dynvid.layers.gumbel_softmax`) and its temperature schedule.

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

from dynvid.layers import gumbel_softmax  # shared with ANT's gates; re-exported for LiteEval's modules

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
