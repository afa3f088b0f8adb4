"""Quantized convolution with frame, residual and dynamic residual modes (ResQ, Sec. 4, Eq. 4–5,
Sec. 4.2).

:class:`QuantConv2d` wraps a trained ``nn.Conv2d`` (its weights stay the float ones) and runs
it in one of four modes, set per sequence step by the caller (:class:`QuantLinear` does the same
for an ``nn.Linear``, a "pixel" being one row of its input):

- ``"float"``: the wrapped convolution.
- ``"frame"``: frame quantization, the baseline — a frame on its own,
  ``q(x; Θ_a) ∗ q(w; Θ_w) + b`` at the residual bit-widths.
- ``"key"``: a keyframe at high precision, ``ẑ_k = q(x_k; Φ_a) ∗ q(w; Φ_w)``; the layer keeps
  ``x_k`` and ``ẑ_k``.
- ``"residual"``: a following frame, ``ẑ_t = q(δ_t; Θ_a) ∗ q(w; Θ_w) + ẑ_k`` with
  ``δ_t = x_t − x_k`` (Eq. 5): by linearity ``w ∗ x_t = w ∗ x_k + w ∗ δ_t``, so only the
  low-variance residual is quantized at low precision. The bias is added once.
  With a quantizer **pool** (``res_pool``, e.g. ``(0, 4, 8)``) this is Dynamic-ResQ (Sec. 4.2):
  every pixel of ``δ_t`` gets the quantizer that Eq. (10)–(11) select (:mod:`.policy`), the
  channels of a pixel sharing one. The mixed-precision residual is then convolved densely in
  float (see "What BOPs model" below).

Weight scales come from Eq. (7) (min–max, per tensor or per output channel); activation
scales from :meth:`calibrate` (Eq. 8 line search on the layer's own inputs: frames for
``key``/``frame``, residuals for ``residual``, one search per bit-width of the pool). Bit-widths
``>= 32`` are full precision, so ``W32A32->W32A32`` reproduces the float layer (up to float
rounding of ``w ∗ x_k + w ∗ δ``).

QAT (Sec. 5): :meth:`enable_qat` turns the calibrated activation scales into parameters
(initialised by PTQ); in training mode activations and weights go through the
straight-through estimator (:func:`~.quantizers.quantize_ste`), the weight scale following
Eq. (7) on the current weights. A keyframe's state keeps its graph in training, so a clip's
loss reaches the keyframe through every residual step.

Cost: the layer reports its MACs to the cost meter with the bits of the mode that ran
(BOPs = MACs × weight bits × activation bits, Sec. 5; float counts 32 × 32). A residual at
0 activation bits is not computed at all (``ẑ_t = ẑ_k``) and costs nothing. Dynamic-ResQ
reports, per sample, the MACs of the pixels that were not quantized to 0 bits at the mean bit-width
of those pixels (so BOPs = MACs × w_bits × Σ_i fraction_i · bits_i), plus the policy: the
error maps of Eq. (10) cost one multiply-accumulate per element of ``δ`` per quantizer of the
pool (the squared channel norm), counted at the keyframe activation bits for both operands
(a choice: the paper counts the policy but does not say at which precision; the residual
it reads is the difference of two keyframe-precision activations). When every pixel of a
sample batch is at 0 bits the convolution does not run.

What BOPs model, and what runs: BOPs are the cost on hardware with integer kernels at each
bit-width that also skips the pixels given 0 bits and runs every other pixel at its own
bit-width (mixed precision within one layer; the paper's Limitations, Sec. 6, note this needs
specialized hardware or gather–scatter convolutions). This PyTorch path does neither: every
mode is fake quantization (values rounded to the grid, kept and multiplied in float, so W4A4
takes the clock time of W32A32), and a Dynamic-ResQ residual is one dense float convolution
over the whole map with its 0-bit pixels zero-filled — every pixel is computed. Only a 0-bit
static residual, or a dynamic one whose pixels are all at 0 bits, skips the convolution. So
BOPs savings here are counted, not timed; no speedup on the clock is claimed (a residual
frame takes about a keyframe's time, plus the policy's error maps for Dynamic-ResQ).

Choice: BatchNorm is not folded into the convolutions; it stays a float per-channel affine
after the quantized convolution (the paper does not say; folding would change the weight
ranges of Eq. 7, not the residual scheme).
"""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from dynvid.methods.resq.policy import TAU, error_maps, select_quantizers
from dynvid.methods.resq.quantizers import (FLOAT_BITS, line_search_range, minmax_range, quantize,
                                            quantize_ste, scale_from_range)
from dynvid.metrics.cost import conv_macs, linear_macs, record_cost

__all__ = ["MODES", "QuantConv2d", "QuantLinear", "parse_bits"]

MODES = ("float", "frame", "key", "residual")
QAT_MIN_SCALE = 1e-6
"""A learned QAT scale is used as at least this (the gradient step can cross zero)."""


def parse_bits(spec: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...] | None]:
    """The paper's notation: ``"W8A8->W4A4"`` → ``((8, 8), (4, 4), None)``; a pool of residual
    activation bits ``"W8A8->W8A{0,4,8}"`` (or ``A[0,4,8]``) → ``((8, 8), (8, 8), (0, 4, 8))``
    (the static residual bits are the pool's highest)."""
    import re

    m = re.fullmatch(r"\s*W(\d+)A(\d+)\s*(?:->|→)\s*W(\d+)A(?:(\d+)|[{\[]([\d,\s]+)[}\]])\s*", spec)
    if not m:
        raise ValueError(f"bit configuration {spec!r}: expected the paper's notation, e.g. 'W8A8->W4A4' or "
                         "'W8A8->W8A{0,4,8}'")
    key = (int(m[1]), int(m[2]))
    if m[4] is not None:
        return key, (int(m[3]), int(m[4])), None
    pool = tuple(sorted(int(b) for b in m[5].replace(" ", "").split(",") if b))
    if len(pool) < 2 or len(set(pool)) != len(pool):
        raise ValueError(f"bit configuration {spec!r}: a quantizer pool needs at least two distinct bit-widths")
    return key, (int(m[3]), pool[-1]), pool


class QuantConv2d(nn.Module):
    """A convolution run in float, frame, key or residual mode (see the module docstring).

    Args:
        conv: the trained convolution (kept, unchanged).
        key_bits: ``(weight, activation)`` bits of keyframes (Φ), e.g. ``(8, 8)``.
        res_bits: ``(weight, activation)`` bits of residuals and of frame quantization (Θ).
        per_channel: per-output-channel weight scales (channel quantization) instead of one.
        res_pool: Dynamic-ResQ's residual activation bit-widths, ascending (e.g. ``(0, 4, 8)``);
            None is static ResQ at ``res_bits``.
        tau: Eq. (11)'s threshold.
    """

    counts_own_cost = True
    wraps: type = nn.Conv2d
    """The float layer type, kept under the attribute :attr:`inner` (a state-dict prefix)."""
    inner = "conv"

    def __init__(self, conv: nn.Module, key_bits: tuple[int, int] = (8, 8), res_bits: tuple[int, int] = (4, 4),
                 per_channel: bool = False, res_pool: tuple[int, ...] | None = None, tau: float = TAU) -> None:
        super().__init__()
        if not isinstance(conv, self.wraps):
            raise TypeError(f"{type(self).__name__} wraps an nn.{self.wraps.__name__}, got {type(conv).__name__}")
        if res_pool is not None and (list(res_pool) != sorted(set(res_pool)) or len(res_pool) < 2):
            raise ValueError(f"res_pool must hold at least two distinct bit-widths in ascending order, got {res_pool}")
        setattr(self, self.inner, conv)
        self.key_bits, self.res_bits, self.per_channel = tuple(key_bits), tuple(res_bits), per_channel
        self.res_pool, self.tau = (tuple(res_pool) if res_pool is not None else None), tau
        self.mode = "float"
        self.act_scale: dict[str, float | None] = {"key": None, "frame": None, "residual": None}
        self.pool_scale: dict[int, float | None] = {b: None for b in (self.res_pool or ())}
        self.qat_scale = nn.ParameterDict()
        self.x_key: torch.Tensor | None = None
        self.z_key: torch.Tensor | None = None
        # Dynamic-ResQ's statistics since reset_statistics(), kept where the layer runs (read by statistics())
        self._bit_tally: torch.Tensor | None = None  # pixels given each bit-width of the pool
        self._zero_tally: torch.Tensor | None = None  # residual pixels whose every channel is exactly 0
        self.record_bits = False
        self.last_bits: torch.Tensor | None = None  # (B, H, W) bits per input pixel of the last dynamic step

    # ---- checkpoints: the wrapped conv's keys are also accepted without ``conv.`` ------------

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):
            inner = f"{prefix}{self.inner}.{name}"
            if prefix + name in state_dict and inner not in state_dict:
                state_dict[inner] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._qat_host = None  # the QAT scales and bits may have changed: read them again

    # ---- quantizers ------------------------------------------------------------------------

    def _bits(self, mode: str) -> tuple[int, int]:
        return self.key_bits if mode == "key" else self.res_bits

    def _ste(self) -> bool:
        return self.training and len(self.qat_scale) > 0

    def weight_q(self, mode: str) -> torch.Tensor:
        """``q(w; Θ_w)`` (or Φ_w for ``key``) with the min–max range of Eq. (7)."""
        bits = self._bits(mode)[0]
        w = self.op.weight
        if bits >= FLOAT_BITS:
            return w
        scale = scale_from_range(*minmax_range(w.detach(), self.per_channel), bits).to(w.device)
        return quantize_ste(w, scale, bits) if self._ste() else quantize(w, scale, bits)

    @property
    def op(self) -> nn.Module:
        """The wrapped float layer."""
        return getattr(self, self.inner)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: bool) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, w, c.bias if bias else None, c.stride, c.padding, c.dilation, c.groups)

    @torch.no_grad()
    def calibrate(self, mode: str, inputs: torch.Tensor, candidates: int = 20) -> float:
        """Set the activation scale of ``mode`` by the line search of Eq. (8) on ``inputs``
        (the layer's inputs for ``key``/``frame``, residuals ``x_t − x_k`` for ``residual``:
        then every bit-width of the pool too). Returns the scale at the mode's bits."""
        if mode not in ("key", "frame", "residual"):
            raise ValueError(f"calibrate a quantized mode (key, frame, residual), got {mode!r}")
        w_bits = self._bits(mode)[0]
        if mode == "residual":
            for b in self.pool_scale:
                self.pool_scale[b] = self._search(inputs, w_bits, b, candidates)
        self.act_scale[mode] = self._search(inputs, w_bits, self._bits(mode)[1], candidates)
        return self.act_scale[mode]

    def _search(self, inputs: torch.Tensor, w_bits: int, a_bits: int, candidates: int) -> float:
        if a_bits >= FLOAT_BITS or a_bits == 0:  # nothing to calibrate: identity or all-zero
            return 1.0
        w = self.op.weight
        w_hat = w if w_bits >= FLOAT_BITS else quantize(w, scale_from_range(*minmax_range(w, self.per_channel),
                                                                           w_bits), w_bits)
        out = line_search_range(inputs, w, w_hat, lambda x, wt: self._conv(x, wt, False), a_bits, candidates)
        return out["scale"]

    def enable_qat(self) -> None:
        """QAT: the ``key``, ``frame`` and ``residual`` activation scales become trainable
        parameters, initialised by PTQ (the values :meth:`calibrate` set; NaN where a quantizer
        is not calibrated yet — call :meth:`init_qat_from_ptq` after calibrating). The bits they
        were trained at are kept with them (``qat_bits``); at other bits the PTQ scales apply."""
        for name in ("key", "frame", "residual"):
            if name not in self.qat_scale:
                self.qat_scale[name] = nn.Parameter(torch.tensor(float("nan")))
        self.register_buffer("qat_bits", torch.tensor([*self.key_bits, *self.res_bits]))
        self.init_qat_from_ptq()
        self._qat_host = None

    @property
    def qat_ready(self) -> bool:
        """QAT scales exist and were trained at the layer's current bits (static ResQ: a pool's
        quantizers were never trained, so Dynamic-ResQ is PTQ-calibrated)."""
        bits = self._qat_state()[0]
        return bits is not None and self.res_pool is None and bits == (*self.key_bits, *self.res_bits)

    def _qat_state(self) -> tuple[tuple[int, ...] | None, dict[str, bool]]:
        """Host copies of ``qat_bits`` and of which QAT scales are set (not NaN), read from the
        device once after each change made through this class (:meth:`enable_qat`,
        :meth:`init_qat_from_ptq`, a state-dict load), not on every forward: on CUDA each read
        is a host synchronisation, per layer and frame. (A scale overwritten through ``.data``
        by hand is not seen until the next of those.)"""
        state = getattr(self, "_qat_host", None)
        if state is None:
            bits = getattr(self, "qat_bits", None)
            names = list(self.qat_scale.keys())
            nan = torch.stack([self.qat_scale[n].detach().reshape(()) for n in names]).isnan().tolist() if names else []
            state = self._qat_host = (None if bits is None else tuple(bits.tolist()),
                                      {n: not bad for n, bad in zip(names, nan)})
        return state

    @torch.no_grad()
    def init_qat_from_ptq(self) -> None:
        for name, p in self.qat_scale.items():
            if self.act_scale[name] is not None:
                p.fill_(self.act_scale[name])
        self._qat_host = None

    def _scale(self, name: str, pool_bits: int | None = None):
        if pool_bits is None and name in self.qat_scale and self.qat_ready and self._qat_state()[1][name]:
            return self.qat_scale[name].clamp_min(QAT_MIN_SCALE)  # a step may push a learned scale to <= 0
        value = self.act_scale[name] if pool_bits is None else self.pool_scale[pool_bits]
        if value is None:
            bits = self._bits(name)[1] if pool_bits is None else pool_bits
            raise RuntimeError(f"QuantConv2d: mode {name!r} at A{bits} is not calibrated; call calibrate() first")
        return value

    def _q(self, x: torch.Tensor, scale, bits: int) -> torch.Tensor:
        if bits >= FLOAT_BITS or bits == 0:
            return quantize(x, 1.0, bits)
        return quantize_ste(x, scale, bits) if self._ste() else quantize(x, scale, bits)

    def _act(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        bits = self._bits(mode)[1]
        if bits >= FLOAT_BITS or bits == 0:
            return quantize(x, 1.0, bits)
        return self._q(x, self._scale(mode), bits)

    # ---- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "float":
            z = self.op(x)
        elif mode == "frame":
            z = self._conv(self._act(x, "frame"), self.weight_q("frame"), True)
        elif mode == "key":
            z = self._conv(self._act(x, "key"), self.weight_q("key"), False)
            keep = torch.is_grad_enabled() and self.training  # QAT: the clip's loss reaches the keyframe
            self.x_key, self.z_key = (x, z) if keep else (x.detach(), z.detach())
            z = z + self._bias_map(z)
        else:
            if self.x_key is None or self.x_key.shape != x.shape:
                raise RuntimeError("QuantConv2d: a residual step needs a keyframe of the same shape first (mode 'key')")
            if self.res_pool is not None:
                return self._dynamic(x - self.x_key)
            if self.res_bits[1] == 0:  # a 0-bit residual: nothing to compute, the keyframe's output stands
                self._record(x, self.z_key, 0)
                return self.z_key + self._bias_map(self.z_key)
            z = self._conv(self._act(x - self.x_key, "residual"), self.weight_q("residual"), False) + self.z_key
            z = z + self._bias_map(z)
        self._record(x, z, 1)
        return z

    def reset_statistics(self) -> None:
        """Forget Dynamic-ResQ's bit-width and zero-pixel counts."""
        self._bit_tally = self._zero_tally = None

    def statistics(self) -> tuple[dict[int, int], int]:
        """Dynamic-ResQ since :meth:`reset_statistics`: residual pixels per bit-width of the pool,
        and those whose every channel is exactly 0 (one read from the device)."""
        if self._bit_tally is None:
            return {}, 0
        *counts, zeros = torch.cat([self._bit_tally, self._zero_tally.reshape(1)]).tolist()
        return dict(zip(self.res_pool, counts)), zeros

    def _dynamic(self, delta: torch.Tensor) -> torch.Tensor:
        """Dynamic-ResQ: Eq. (10) error maps, Eq. (11) per-pixel quantizer, the mixed-precision residual.

        The cost meter gets the BOPs of hardware that skips 0-bit pixels and runs each other pixel
        at its bits; the convolution below runs densely in float over every pixel (0-bit pixels
        zero-filled), so nothing is skipped on the clock."""
        pool = self.res_pool
        w_hat = self.weight_q("residual")
        scales = [float(self._scale("residual", b)) if 0 < b < FLOAT_BITS else 1.0 for b in pool]
        delta_cf = self._channels_first(delta.detach())
        maps = error_maps(delta_cf, scales, pool, w_hat.detach())
        choice = select_quantizers(maps, self.tau)  # (B, H, W); a linear layer: (B, …) over its rows
        bits = torch.tensor(pool, dtype=torch.float64, device=delta.device)[choice]
        if self.record_bits:
            self.last_bits = bits.to(torch.uint8).cpu()
        # statistics accumulate on the device (no bincount: its output size is read back on CUDA)
        tally = (choice.flatten()[:, None] == torch.arange(len(pool), device=choice.device)).sum(0)
        zeros = (delta_cf == 0).all(1).sum()
        self._bit_tally = tally if self._bit_tally is None else self._bit_tally + tally
        self._zero_tally = zeros if self._zero_tally is None else self._zero_tally + zeros
        host = delta.device.type == "cpu"  # the shortcuts below read back: only where that is free
        B = delta.shape[0]
        full = self._macs(self.z_key)
        on = (bits > 0).reshape(B, -1).double().mean(1)  # fraction of pixels computed, per sample
        mean_bits = bits.reshape(B, -1).mean(1) / on.clamp_min(1e-12)  # mean bits of those pixels
        record_cost(self, full * on, weight_bits=self.res_bits[0], act_bits=torch.where(on > 0, mean_bits, 0.0))
        record_cost(self, float(len(pool) * delta[0].numel()), weight_bits=self.key_bits[1],
                    act_bits=self.key_bits[1])
        if host and not bool((bits > 0).any()):  # every pixel at 0 bits: the keyframe's output stands
            return self.z_key + self._bias_map(self.z_key)
        mixed = torch.zeros_like(delta)
        for i, b in enumerate(pool):
            if b == 0:
                continue
            mask = self._pixel_mask(choice == i)
            if not host or bool(mask.any()):
                scale = self._scale("residual", b) if b < FLOAT_BITS else 1.0
                mixed = mixed + self._q(delta, scale, b) * mask
        z = self._conv(mixed, w_hat, False) + self.z_key
        return z + self._bias_map(z)

    # ---- what differs between a convolution and a linear layer --------------------------------

    def _macs(self, z: torch.Tensor) -> float:
        """MACs per sample of the whole layer for an output ``z``."""
        c = self.conv
        return float(conv_macs(c.in_channels, c.out_channels, c.kernel_size, tuple(z.shape[-2:]), c.groups))

    @staticmethod
    def _channels_first(t: torch.Tensor) -> torch.Tensor:
        return t

    @staticmethod
    def _pixel_mask(mask: torch.Tensor) -> torch.Tensor:
        """A per-pixel ``(B, H, W)`` mask broadcast over the channels of ``(B, C, H, W)``."""
        return mask.unsqueeze(1)

    def _record(self, x: torch.Tensor, z: torch.Tensor, ran: int) -> None:
        w_bits, a_bits = (FLOAT_BITS, FLOAT_BITS) if self.mode == "float" else self._bits(self.mode)
        macs = ran * self._macs(z)
        record_cost(self, float(macs), weight_bits=min(w_bits, FLOAT_BITS), act_bits=min(a_bits, FLOAT_BITS))

    def _bias_map(self, z: torch.Tensor) -> torch.Tensor | float:
        b = self.conv.bias
        return b.view(1, -1, 1, 1) if b is not None else 0.0

    def extra_repr(self) -> str:
        res = f"W{self.res_bits[0]}A" + ("{" + ",".join(map(str, self.res_pool)) + "}" if self.res_pool
                                         else str(self.res_bits[1]))
        return f"W{self.key_bits[0]}A{self.key_bits[1]}->{res}, per_channel={self.per_channel}, mode={self.mode}"


class QuantLinear(QuantConv2d):
    """:class:`QuantConv2d`'s modes for an ``nn.Linear`` over inputs ``(B, …, in_features)``:
    a "pixel" of Dynamic-ResQ is a row (one position of the leading dimensions), whose features
    share one quantizer. State-dict keys: ``linear.weight``, ``linear.bias`` (a float
    checkpoint's ``weight``/``bias`` load too)."""

    wraps = nn.Linear
    inner = "linear"

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: bool) -> torch.Tensor:
        return F.linear(x, w, self.linear.bias if bias else None)

    def _macs(self, z: torch.Tensor) -> float:
        rows = z[0].numel() // self.linear.out_features if z.dim() > 1 else 1
        return float(linear_macs(self.linear.in_features, self.linear.out_features, rows))

    @staticmethod
    def _channels_first(t: torch.Tensor) -> torch.Tensor:
        return t.movedim(-1, 1)

    @staticmethod
    def _pixel_mask(mask: torch.Tensor) -> torch.Tensor:
        return mask.unsqueeze(-1)

    def _bias_map(self, z: torch.Tensor) -> torch.Tensor | float:
        return self.linear.bias if self.linear.bias is not None else 0.0
