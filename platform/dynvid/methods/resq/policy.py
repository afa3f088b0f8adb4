"""Dynamic-ResQ's per-pixel bit-width policy (Sec. 4.2, Eq. 9–11).

Each layer has a pool of activation quantizers for residuals, ordered from low to high
bit-width (e.g. {0, 4, 8}), each calibrated like the static one. For a residual
``δ ∈ R^{B×C×H×W}``:

- :func:`error_maps` — Eq. (10), the upper bound of Eq. (9) by Young's inequality:
  ``ε_i = ‖δ − q(δ; Θ_a^i)‖ · ‖ŵ‖``, the first norm per pixel over channels (L2), the second
  the Frobenius norm of the layer's quantized weights.
- :func:`select_quantizers` — Eq. (11): per pixel, the lowest ``i`` with ``ε_i − ε_{i+1} < τ``
  (the next precision would not reduce the error by ``τ``); the highest when every step does.

Choice: a pixel's channel vector shares one quantizer (the paper's pixel-level scheme).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dynvid.methods.resq.quantizers import quantize

__all__ = ["TAU", "error_maps", "select_quantizers"]

TAU = 0.0003
"""Eq. (11)'s threshold (Sec. 5: fixed for all experiments)."""


def error_maps(delta: torch.Tensor, scales: Sequence[float], bits: Sequence[int], w_hat: torch.Tensor) -> torch.Tensor:
    """``(n, B, H, W)`` error bounds of Eq. (10) for the ``n`` quantizers ``(scales[i], bits[i])``."""
    if len(scales) != len(bits) or not bits:
        raise ValueError(f"one scale per bit-width: got {len(scales)} scales for bits {list(bits)}")
    if list(bits) != sorted(bits):
        raise ValueError(f"the quantizer pool is ordered from low to high bit-width, got {list(bits)}")
    w_norm = torch.linalg.vector_norm(w_hat)
    return torch.stack([torch.linalg.vector_norm(delta - quantize(delta, s, b), dim=1) * w_norm
                        for s, b in zip(scales, bits)])


def select_quantizers(errors: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Eq. (11) on error maps ``(n, …)``: the index (0-based) of each pixel's quantizer."""
    n = errors.shape[0]
    if n == 1:
        return torch.zeros(errors.shape[1:], dtype=torch.long, device=errors.device)
    stop = (errors[:-1] - errors[1:]) < tau  # (n-1, …): the gain of the next precision is too small
    stop = torch.cat([stop, torch.ones_like(stop[:1])])  # the highest precision always stops
    return stop.float().argmax(0)  # the first stop
