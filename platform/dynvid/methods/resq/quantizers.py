"""ResQ's quantizers (Abati et al., "ResQ: Residual Quantization for Video Perception",
``shared/papers/resq-residual-quantization.txt``, Sec. 2 and 4.1): pure functions, usable by any
method.

- :func:`quantize` — Eq. (1), uniform affine symmetric quantization to ``b`` bits:
  ``q(x; s) = s · clamp(⌊x / s⌉, −2^{b−1}, 2^{b−1} − 1)``. ``bits >= 32`` is the float
  identity ("W32A32"); ``bits == 0`` quantizes everything to zero (Dynamic-ResQ's 0-bit
  quantizer, which skips a residual).
- :func:`quantize_ste` — the same with a straight-through estimator (QAT, Sec. 5): the
  forward value of :func:`quantize`, the gradient of the identity inside the clipping range
  and zero outside it; the scale gets the LSQ-style gradient of the rounding-free path.
- :func:`scale_from_range` — Eq. (6), ``s = 2 · max(r_max, −r_min) / (2^b − 1)``.
- :func:`minmax_range` — Eq. (7), the weights' range, per tensor or per output channel.
- :func:`line_search_range` — Eq. (8), the activations' range: ``r`` candidates
  ``linspace(min X, max X, r)`` over the ``c`` calibration inputs ``X``, keeping the pair
  that minimizes ``‖X ∗ w − q(X; s(r_max, r_min)) ∗ ŵ‖_F``.

Choices: with a symmetric quantizer the scale depends on ``max(r_max, −r_min)`` only, so the
line search scores each distinct magnitude once and reports the widest-spanning pair that
reaches it; ties keep the smaller scale (finer grid).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["FLOAT_BITS", "line_search_range", "minmax_range", "quantize", "quantize_ste", "scale_from_range"]

FLOAT_BITS = 32
"""A bit-width at or above this is full precision: quantization is the identity."""


def _bounds(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_bits(bits: int) -> None:
    if bits < 0 or int(bits) != bits:
        raise ValueError(f"bit-width must be a non-negative integer, got {bits}")


def scale_from_range(r_max: torch.Tensor | float, r_min: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Eq. (6): the scale of a ``bits``-bit symmetric quantizer covering ``[r_min, r_max]``
    (tensors broadcast: per-channel ranges give per-channel scales)."""
    _check_bits(bits)
    if bits < 2:
        raise ValueError(f"a symmetric quantizer needs at least 2 bits for a scale, got {bits}")
    r_max, r_min = torch.as_tensor(r_max, dtype=torch.float32), torch.as_tensor(r_min, dtype=torch.float32)
    return 2 * torch.maximum(r_max, -r_min) / (2 ** bits - 1)


def quantize(x: torch.Tensor, scale: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Eq. (1). ``scale`` broadcasts against ``x`` (e.g. ``(C, 1, 1, 1)`` per output channel)."""
    _check_bits(bits)
    if bits >= FLOAT_BITS:
        return x
    if bits == 0:
        return torch.zeros_like(x)
    # checked where that is free: a number or a host tensor. A scale on a GPU is not read back
    # (a synchronisation per layer and frame); a 0 there gives NaN outputs instead of this error
    if (scale <= 0 if isinstance(scale, (int, float)) else
            scale.device.type == "cpu" and bool((scale <= 0).any())):
        raise ValueError("quantizer scale must be > 0 (an all-zero range has no scale)")
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    lo, hi = _bounds(bits)
    return scale * torch.clamp(torch.round(x / scale), lo, hi)


def quantize_ste(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`quantize` in the forward pass; in the backward pass the rounding is the identity
    (straight-through), so ``x`` gets gradient 1 inside the clipping range and 0 outside it,
    and ``scale`` gets ``clamp(⌊x/s⌉) − x/s`` inside and the clipped level outside (LSQ)."""
    _check_bits(bits)
    if bits >= FLOAT_BITS or bits == 0:
        return quantize(x, scale, bits)
    lo, hi = _bounds(bits)
    v = x / scale
    rounded = v + (torch.round(v) - v).detach()  # straight-through rounding
    return scale * torch.clamp(rounded, lo, hi)


def minmax_range(w: torch.Tensor, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (7): ``(max(w), min(w))`` over the tensor, or per output channel (dim 0) shaped to
    broadcast against ``w``."""
    if not per_channel:
        return w.max(), w.min()
    flat = w.reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return flat.max(1).values.reshape(shape), flat.min(1).values.reshape(shape)


@torch.no_grad()
def line_search_range(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor, apply: Callable, bits: int,
                      candidates: int = 20) -> dict:
    """Eq. (8) over the calibration batch ``x`` of a layer computing ``apply(x, w)`` (e.g. a
    conv with the layer's stride and padding), ``w_hat`` its quantized weights. Returns
    ``{"r_max", "r_min", "scale", "error", "magnitudes", "errors"}`` (every distinct scale
    magnitude tried and its Frobenius error)."""
    if candidates < 2:
        raise ValueError(f"the line search needs at least 2 candidate points, got {candidates}")
    space = torch.linspace(float(x.min()), float(x.max()), candidates)
    reference = apply(x, w)
    by_magnitude: dict[float, tuple[float, float]] = {}
    for hi in space.tolist():
        for lo in space.tolist():
            if lo >= hi:
                continue
            m = max(hi, -lo)
            if m <= 0:
                continue
            span = hi - lo
            if m not in by_magnitude or span > by_magnitude[m][0] - by_magnitude[m][1]:
                by_magnitude[m] = (hi, lo)
    if not by_magnitude:
        raise ValueError("calibration inputs are constant zero: no range to search")
    magnitudes = sorted(by_magnitude)
    errors = []
    for m in magnitudes:
        s = scale_from_range(m, -m, bits)
        errors.append(float(torch.linalg.vector_norm(reference - apply(quantize(x, s, bits), w_hat))))
    best = min(range(len(magnitudes)), key=lambda i: (errors[i], magnitudes[i]))
    r_max, r_min = by_magnitude[magnitudes[best]]
    return {"r_max": r_max, "r_min": r_min, "scale": float(scale_from_range(r_max, r_min, bits)),
            "error": errors[best], "magnitudes": magnitudes, "errors": errors}
