"""Quantized convolution with frame and residual modes (ResQ, Sec. 4, Eq. 4–5).

:class:`QuantConv2d` wraps a trained ``nn.Conv2d`` (its weights stay the float ones) and runs
it in one of four modes, set per sequence step by the caller:

- ``"float"``: the wrapped convolution.
- ``"frame"``: frame quantization, the baseline — every frame on its own,
  ``q(x; Θ_a) ∗ q(w; Θ_w) + b`` at the residual bit-widths.
- ``"key"``: a keyframe at high precision, ``ẑ_k = q(x_k; Φ_a) ∗ q(w; Φ_w)``; the layer keeps
  ``x_k`` and ``ẑ_k``.
- ``"residual"``: a following frame, ``ẑ_t = q(δ_t; Θ_a) ∗ q(w; Θ_w) + ẑ_k`` with
  ``δ_t = x_t − x_k`` (Eq. 5): by linearity ``w ∗ x_t = w ∗ x_k + w ∗ δ_t``, so only the
  low-variance residual is quantized at low precision. The bias is added once.

Weight scales come from Eq. (7) (min–max, per tensor or per output channel); activation
scales from :meth:`calibrate` (Eq. 8 line search on the layer's own inputs: frames for
``key``/``frame``, residuals for ``residual``). Bit-widths ``>= 32`` are full precision, so
``W32A32->W32A32`` reproduces the float layer (up to float rounding of ``w ∗ x_k + w ∗ δ``).

Cost: the layer reports its MACs to the cost meter with the bits of the mode that ran
(BOPs = MACs × weight bits × activation bits, Sec. 5; float counts 32 × 32). A residual at
0 activation bits is not computed at all (``ẑ_t = ẑ_k``) and costs nothing.

Not wired yet (issue 9 in progress): the model wrapper, calibration over a network and
Dynamic-ResQ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.methods.resq.quantizers import (FLOAT_BITS, line_search_range, minmax_range, quantize,
                                            scale_from_range)
from dynvid.metrics.cost import conv_macs, record_cost

__all__ = ["MODES", "QuantConv2d"]

MODES = ("float", "frame", "key", "residual")


class QuantConv2d(nn.Module):
    """A convolution run in float, frame, key or residual mode (see the module docstring).

    Args:
        conv: the trained convolution (kept, unchanged).
        key_bits: ``(weight, activation)`` bits of keyframes (Φ), e.g. ``(8, 8)``.
        res_bits: ``(weight, activation)`` bits of residuals and of frame quantization (Θ).
        per_channel: per-output-channel weight scales (channel quantization) instead of one.
    """

    counts_own_cost = True

    def __init__(self, conv: nn.Conv2d, key_bits: tuple[int, int] = (8, 8), res_bits: tuple[int, int] = (4, 4),
                 per_channel: bool = False) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"QuantConv2d wraps an nn.Conv2d, got {type(conv).__name__}")
        self.conv, self.key_bits, self.res_bits, self.per_channel = conv, tuple(key_bits), tuple(res_bits), per_channel
        self.mode = "float"
        self.act_scale: dict[str, float | None] = {"key": None, "frame": None, "residual": None}
        self.x_key: torch.Tensor | None = None
        self.z_key: torch.Tensor | None = None

    def _bits(self, mode: str) -> tuple[int, int]:
        return self.key_bits if mode == "key" else self.res_bits

    def weight_q(self, mode: str) -> torch.Tensor:
        """``q(w; Θ_w)`` (or Φ_w for ``key``) with the min–max range of Eq. (7)."""
        bits = self._bits(mode)[0]
        w = self.conv.weight
        if bits >= FLOAT_BITS:
            return w
        return quantize(w, scale_from_range(*minmax_range(w, self.per_channel), bits).to(w.device), bits)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: bool) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, w, c.bias if bias else None, c.stride, c.padding, c.dilation, c.groups)

    @torch.no_grad()
    def calibrate(self, mode: str, inputs: torch.Tensor, candidates: int = 20) -> float:
        """Set the activation scale of ``mode`` by the line search of Eq. (8) on ``inputs``
        (the layer's inputs for ``key``/``frame``, residuals ``x_t − x_k`` for ``residual``)."""
        if mode not in ("key", "frame", "residual"):
            raise ValueError(f"calibrate a quantized mode (key, frame, residual), got {mode!r}")
        bits = self._bits(mode)[1]
        if bits >= FLOAT_BITS or bits == 0:  # nothing to calibrate: identity or all-zero
            self.act_scale[mode] = 1.0
            return 1.0
        out = line_search_range(inputs, self.conv.weight, self.weight_q(mode), lambda x, w: self._conv(x, w, False),
                                bits, candidates)
        self.act_scale[mode] = out["scale"]
        return out["scale"]

    def _act(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        bits = self._bits(mode)[1]
        if bits >= FLOAT_BITS or bits == 0:
            return quantize(x, 1.0, bits)
        if self.act_scale[mode] is None:
            raise RuntimeError(f"QuantConv2d: mode {mode!r} at A{bits} is not calibrated; call calibrate() first")
        return quantize(x, self.act_scale[mode], bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "float":
            z = self.conv(x)
        elif mode == "frame":
            z = self._conv(self._act(x, "frame"), self.weight_q("frame"), True)
        elif mode == "key":
            z = self._conv(self._act(x, "key"), self.weight_q("key"), False)
            self.x_key, self.z_key = x.detach(), z.detach()
            z = z + self._bias_map(z)
        else:
            if self.x_key is None or self.x_key.shape != x.shape:
                raise RuntimeError("QuantConv2d: a residual step needs a keyframe of the same shape first (mode 'key')")
            if self.res_bits[1] == 0:  # a 0-bit residual: nothing to compute, the keyframe's output stands
                self._record(x, self.z_key, 0)
                return self.z_key + self._bias_map(self.z_key)
            z = self._conv(self._act(x - self.x_key, "residual"), self.weight_q("residual"), False) + self.z_key
            z = z + self._bias_map(z)
        self._record(x, z, 1)
        return z

    def _record(self, x: torch.Tensor, z: torch.Tensor, ran: int) -> None:
        c = self.conv
        w_bits, a_bits = (FLOAT_BITS, FLOAT_BITS) if self.mode == "float" else self._bits(self.mode)
        macs = ran * conv_macs(c.in_channels, c.out_channels, c.kernel_size, tuple(z.shape[-2:]), c.groups)
        record_cost(self, float(macs), weight_bits=min(w_bits, FLOAT_BITS), act_bits=min(a_bits, FLOAT_BITS))

    def _bias_map(self, z: torch.Tensor) -> torch.Tensor | float:
        b = self.conv.bias
        return b.view(1, -1, 1, 1) if b is not None else 0.0
