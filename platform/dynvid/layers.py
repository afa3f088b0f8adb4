"""Layers more than one method uses.

- :func:`gumbel_softmax`: a differentiable sample of a discrete choice (Jang et al., 2017;
  Maddison et al., 2017), straight-through when ``hard``. LiteEval's conditional gate (Wu et
  al., Sec. 3.2, Eq. 8–9) and ANT's width gates (Sec. 3.2) both decide with it; LiteEval's
  temperature schedule stays with LiteEval (:mod:`dynvid.methods.liteeval.gumbel`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gumbel_softmax"]


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``softmax((logits + G) / tau)`` over the last dim with Gumbel noise ``G = -log(-log U)``
    (LiteEval's Eq. 9); with ``hard`` the forward value is the one-hot arg max (Eq. 8) and the
    gradient is the soft sample's (straight-through). ``logits`` are unnormalised
    log-probabilities; the noise is drawn on their device and in their dtype."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    e = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)  # Exp(1) noise
    g = -torch.log(e)
    soft = F.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot + soft - soft.detach()
