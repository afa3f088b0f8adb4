"""VA-RED² dynamic convolution: soft modulation gate, temporal- and channel-wise dynamic
convolution with cheap reconstruction, shared weights (thesis Ch. 3, App. A.2).

One :class:`DynamicConv3d` replaces one ``nn.Conv3d`` of a static backbone. It keeps the
full kernel as ``weight`` (so a static checkpoint loads into it key for key) and adds
``gate`` (the soft modulation gate p_l, Eq. 3.4) and the cheap operations Φ^c, Φ^t.

Choices. With search-space size S, the temporal choices are R ∈ {1, 2, 4}[:S] (the
conv's temporal stride times R, Eq. 3.1) and the channel choices r ∈ {1, 1/2, 1/4}[:S]
(the first ⌈r·C_out⌉ output channels computed, Sec. 3.1). The gate emits V_t (S_t values)
and V_c (S_c values) per sample, each in [0, 1) (``max(tanh(·), 0)``).

Output (Eq. 3.5, the same formula in training and inference)::

    Y_c = Σ_i V_c[i] · [Y'_i, Φ^c_i(Y'_i)],   Y'_i = f(X)[:, :⌈r_i C⌉]
    Y   = Σ_j V_t[j] · E_{R_j}(Y_c)            E_R: keep frames iR, rebuild iR+1..iR+R-1 by Φ^t

Shared weights (Sec. 3.3, Eq. A.1). Every choice reads the leading slice of one output:
in training the full conv runs once and every term of the sum is cut from it (constant
cost in S); in inference (``model.eval()``) only the *largest choice with a non-zero
weight* runs — i_s = the smallest i with V[i] > 0 — as a real sub-convolution: the sliced
kernel ``weight[:⌈r C⌉]`` at temporal stride ``R·stride``, and every smaller term is cut
from that output. Because V[i] = 0 for i < i_s, both paths compute the same function
(checked by the tests); the inference path just does not compute what is multiplied by
zero. When every V_c (or every V_t) of a sample is 0, its output is 0 and the conv does
not run at all. Samples of one batch are grouped by their (i_s, j_s) and each group runs
its own sub-convolution.

Inference implementation (what makes the saving reach the clock on a CPU):

- A ``1×k×k`` kernel (R(2+1)D's spatial convolutions, X3D's and I3D's pointwise ones) sees
  one frame, so its sub-convolution runs as one batched ``conv2d`` over every R·stride-th
  frame (oneDNN, whose time follows the output size; CPU ``conv3d`` spends most of its
  time on im2col of the input whatever the number of filters). Other kernels run as
  ``conv3d`` with the larger temporal stride.
- With ``cheap_kernel=1`` every Φ is a per-channel scale, so each term of Eq. 3.5 is a
  per-channel coefficient times a slice of the computed output: the output is written
  with one multiply-add per term into fresh tensors, the gate weights folded into the
  coefficients (``_mix_fused``), instead of materialising every term.
- The decision is read into Python once per layer; the cost bookkeeping runs only while a
  :class:`~dynvid.metrics.cost.CostMeter` is active.

The thesis's A.1 text says "the smallest index with V[i] = 0"; the largest computed
filter must be the first one whose weight is *non*-zero (a zero-weighted output need not
be computed), so that is what is implemented.

Cheap operations Φ (the thesis leaves them open, Eq. 3.1–3.2, Fig. 3-1). Chosen here:

- Φ^c_i (channel): each of the C − k generated channels is a depthwise spatial filter of
  one computed channel (channel ``m mod k``), GhostNet-style: a per-channel scale with
  ``cheap_kernel=1`` (default), a depthwise ``1×K×K`` conv with ``cheap_kernel=K``.
- Φ^t_{R,j} (temporal): frame ``iR + j`` is a per-channel depthwise spatial filter of the
  computed frame ``i`` (shared over i, one filter per offset j).

Why: both are linear (no bias, so Φ(0) = 0 and a sample whose weights are all 0 gets an
exact 0 without computing anything), per-channel and spatially local, so their cost is
``C_gen · T · H · W · K²`` against ``C_out · T · H · W · C_in · k_t · k_h · k_w`` for the
conv, i.e. a factor C_in·k³/K² smaller (≈ 1/(9·C_in) of the conv at K = 1 for a 3×3 conv);
the default K = 1 is an elementwise multiply-add, which keeps the saving real in wall-clock
on CPUs, where depthwise convolutions are memory-bound. They start as the identity (a
copy of the source channel / frame, i.e. nearest-neighbour reconstruction) so stage 2
starts close to the static model. Their MACs are counted; the elementwise mixing by V
is not (like BN and ReLU, see :mod:`dynvid.metrics.cost`).

Gate (Eq. 3.4): ``G`` pools X over H, W to ``C_in · T_g`` values (adaptive pooling to the
T_g frames the layer sees at the configured clip length, so other clip lengths still
run), then FC → BN → tanh → FC (+ β) → max(tanh, 0). β starts at +1 for the "compute
all" choice (V ≈ 0.76) and 0 for the others (V ≈ 0, half of them just above), so a
dynamic model initialised from the static base starts near it; +1 rather than a
saturating +2 leaves the efficiency loss a short way to switch "all" off (β at +2 barely
moved in a 2-epoch finetune here). The gate's MACs (two FCs) are counted every forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynvid.metrics.cost import conv_macs, linear_macs, metering, record_cost

__all__ = [
    "DynamicConv3d",
    "SoftModulationGate",
    "choices",
    "executed_index",
    "executed_fraction",
    "expand_frames",
    "soft_fraction",
    "threshold_weights",
]

TEMPORAL_FACTORS = (1, 2, 4)  # R = 2^p
CHANNEL_RATIOS = (1.0, 0.5, 0.25)  # r = (1/2)^p
_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1


def choices(search_space: int, enabled: bool, values: Sequence) -> tuple:
    """The first ``search_space`` choices, or only "compute all" when the dimension is off."""
    if search_space not in (2, 3):
        raise ValueError(f"vared.search_space must be 2 or 3 (thesis Table 4.1), got {search_space}")
    return tuple(values[:search_space]) if enabled else tuple(values[:1])


def executed_index(v: torch.Tensor) -> torch.Tensor:
    """i_s per sample: the first choice with a non-zero weight, ``len(choices)`` if none (A.1).

    Args:
        v: ``(B, S)`` gate weights.
    """
    nonzero = v > 0
    first = nonzero.to(torch.int64).argmax(1)
    return torch.where(nonzero.any(1), first, torch.full_like(first, v.shape[1]))


def executed_fraction(v: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """The computed fraction of the largest executed choice per sample (r_l^s, or 1/R_l^s),
    0 when every weight is 0. ``factors[i]`` is the fraction of choice i (r_i or 1/R_i)."""
    table = torch.tensor([*factors, 0.0], dtype=v.dtype, device=v.device)
    return table[executed_index(v)]


def soft_fraction(v: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Differentiable surrogate of :func:`executed_fraction`: ``Σ_i factors[i] · V[i]``.

    The executed fraction is piecewise constant in V, so the efficiency loss (Eq. 3.6)
    takes its value from :func:`executed_fraction` and its gradient from this surrogate
    (straight-through): lowering it lowers the weight of expensive choices first, which is
    what eventually zeroes V[0] and halves the layer.
    """
    return v @ torch.tensor(list(factors), dtype=v.dtype, device=v.device)


def threshold_weights(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """Inference-time knob (dynvid's, not the thesis'): gate weights at or below ``threshold``
    become 0, except each sample's cheapest choice with a non-zero weight (the last one),
    which is kept so a layer never goes silent because of the knob. The kept weights are
    rescaled to the original sum, so the layer's output keeps its scale.

    With the hard path's rule (run the largest choice whose weight is non-zero), dropping the
    small weights of expensive choices makes cheaper sub-convolutions run: ``threshold`` moves
    a trained model along its accuracy–cost curve without retraining (``vared.gate_threshold``,
    swept by ``search_spaces/vared_threshold.yaml``). 0 keeps the thesis' rule exactly.

    Args:
        v: ``(B, S)`` gate weights in [0, 1).
        threshold: in [0, 1).
    """
    if threshold <= 0:
        return v
    nonzero = v > 0
    s = v.shape[1]
    last = (s - 1) - nonzero.flip(1).to(torch.int64).argmax(1)  # the cheapest non-zero choice
    keep = (v > threshold) | (F.one_hot(last, s).bool() & nonzero)
    kept = v * keep
    # keep the layer's gain: the remaining weights are scaled to the sum of the original ones
    # (Eq. 3.5's output is a sum of V-weighted terms, and the BatchNorm after it is frozen)
    total, left = v.sum(1, keepdim=True), kept.sum(1, keepdim=True)
    return torch.where(left > 0, kept * (total / left.clamp_min(1e-12)), kept)


def expand_frames(computed: torch.Tensor, R: int, frames: int, scale: torch.Tensor | None,
                  cheap_conv: nn.Conv3d | None = None) -> torch.Tensor:
    """E_R of Eq. 3.1: frames ``iR`` are the computed frames, ``iR + j`` (j = 1..R-1) come from
    frame i through the cheap operation Φ^t_{R,j}; the result is cut to ``frames`` frames.

    Args:
        computed: ``(B, C, T', H, W)`` computed frames (T' = ⌈frames / R⌉).
        R: temporal factor.
        frames: T_o, the output length of the full convolution.
        scale: ``(C, R-1)`` per-channel scales, Φ^t for ``cheap_kernel=1``.
        cheap_conv: a depthwise ``C → C·(R-1)`` conv (``cheap_kernel>1``) instead of the scales.
    """
    if R == 1:
        return computed
    b, c, t, h, w = computed.shape
    if cheap_conv is not None:
        generated = cheap_conv(computed).view(b, c, R - 1, t, h, w).transpose(2, 3)
    else:
        generated = computed.unsqueeze(3) * scale.view(1, c, 1, R - 1, 1, 1)
    full = torch.cat([computed.unsqueeze(3), generated], dim=3).reshape(b, c, t * R, h, w)
    return full[:, :, :frames]


class SoftModulationGate(nn.Module):
    """p_l of Eq. 3.4: ``[V_t, V_c] = max(tanh(FC2(tanh(BN(FC1(G(X))))) + β), 0)``.

    Eq. 3.4 writes ω_{p,1} ∈ R^{(S_t+S_c)×D_h} and ω_{p,2} ∈ R^{D_h×C_in·T}, the shapes of the
    two layers swapped against the order they are applied in; here FC1 maps C_in·T → D_h
    and FC2 maps D_h → S_t + S_c, the only order in which the composition is defined.

    Args:
        in_channels: C_in of the gated convolution.
        frames: T_g, the frames the pooled descriptor keeps (``C_in · T_g`` inputs to FC1).
        hidden: D_h.

    In training mode the gate's BatchNorm needs more than one sample per worker and batch.
        num_temporal: S_t (1 when temporal dynamics are off).
        num_channel: S_c (1 when channel dynamics are off).
    """

    counts_own_cost = True

    def __init__(self, in_channels: int, frames: int, hidden: int, num_temporal: int, num_channel: int):
        super().__init__()
        if min(in_channels, frames, hidden, num_temporal, num_channel) < 1:
            raise ValueError("gate sizes must be positive")
        self.frames, self.num_temporal, self.num_channel = frames, num_temporal, num_channel
        self.fc1 = nn.Linear(in_channels * frames, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_temporal + num_channel)
        with torch.no_grad():
            self.fc2.weight.mul_(0.1)
            bias = torch.zeros(num_temporal + num_channel)
            bias[0] = bias[num_temporal] = 1.0  # "compute all" starts on: V ≈ tanh(1) = 0.76
            self.fc2.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[2] == self.frames:  # G(X): C_in · T (the plain mean is the cheaper call)
            pooled = x.mean((3, 4)).flatten(1)
        else:
            pooled = F.adaptive_avg_pool3d(x, (self.frames, 1, 1)).flatten(1)
        hidden = torch.tanh(self.bn(self.fc1(pooled)))
        # φ = max(tanh(·), 0) in [0, 1); float32 tanh rounds to exactly 1 past |z| ≈ 9, so the
        # top is held at the largest float32 below 1 to keep the open interval of Eq. 3.4
        # (under float16 autocast that bound itself rounds to 1).
        v = torch.tanh(self.fc2(hidden)).clamp(0.0, _BELOW_ONE)
        if metering():
            record_cost(self, linear_macs(self.fc1.in_features, self.fc1.out_features)
                        + linear_macs(self.fc2.in_features, self.fc2.out_features))
        return v[:, : self.num_temporal], v[:, self.num_temporal :]


class DynamicConv3d(nn.Conv3d):
    """A ``nn.Conv3d`` whose temporal stride and computed output channels are chosen per sample.

    ``forward(x)`` asks the gate (or a forced policy, :meth:`force`) for ``(V_t, V_c)`` and
    calls :meth:`dynamic_forward`, which takes the decision as an argument. Training mode
    runs the shared-weight soft path, eval mode the hard path that computes only the
    selected sub-convolution. The last decision is kept in ``last_v_t`` / ``last_v_c``
    (and the straight-through cost fraction of Eq. 3.6 in ``last_fraction``) for the
    efficiency loss and the policy statistics.

    Args (beyond ``nn.Conv3d``'s):
        search_space: S (2 or 3).
        temporal, channel: which dimensions are dynamic.
        gate_frames: T_g of the gate's pooled descriptor (the layer's input frames at the
            configured clip length).
        gate_hidden: D_h of the gate.
        cheap_kernel: spatial kernel K of Φ^t and Φ^c (1 = per-channel scale).
        gate_threshold: inference-time threshold on the gate's weights (:func:`threshold_weights`;
            eval mode only, 0 = the thesis' rule).
    """

    counts_own_cost = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, search_space: int = 2, temporal: bool = True,
                 channel: bool = True, gate_frames: int = 8, gate_hidden: int = 32, cheap_kernel: int = 1,
                 gate_threshold: float = 0.0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if isinstance(self.padding, str):
            raise ValueError("DynamicConv3d needs numeric padding (the temporal stride changes)")
        self.depthwise = groups > 1 and groups == in_channels == out_channels
        if channel and groups > 1 and not self.depthwise:
            raise ValueError(f"channel-wise dynamic conv supports groups=1 or depthwise, got groups={groups}")
        if cheap_kernel < 1 or cheap_kernel % 2 == 0:
            raise ValueError(f"vared.cheap_kernel must be an odd positive int, got {cheap_kernel}")
        self.temporal_factors = choices(search_space, temporal, TEMPORAL_FACTORS)
        ratios = choices(search_space, channel, CHANNEL_RATIOS)
        self.channel_ratios = ratios
        self.computed_channels = tuple(max(1, math.ceil(r * out_channels)) for r in ratios)
        self.cheap_kernel = cheap_kernel
        if not 0.0 <= gate_threshold < 1.0:
            raise ValueError(f"vared.gate_threshold must be in [0, 1), got {gate_threshold}")
        self.gate_threshold = gate_threshold
        self.gate = SoftModulationGate(in_channels, gate_frames, gate_hidden, len(self.temporal_factors), len(ratios))
        # Φ^c_i: k_i computed channels -> C - k_i generated ones (source channel m mod k_i).
        self.cheap_channel = nn.ModuleList(
            _CheapChannels(k, out_channels - k, cheap_kernel) for k in self.computed_channels[1:])
        # Φ^t_{R,j}: frame iR+j from frame i, one per-channel filter per offset j.
        self.cheap_temporal = nn.ModuleList(
            _CheapFrames(out_channels, R - 1, cheap_kernel) for R in self.temporal_factors[1:])
        self.policy: str | tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_v_t: torch.Tensor | None = None
        self.last_v_c: torch.Tensor | None = None
        self.last_fraction: torch.Tensor | None = None
        self._last_out_size: tuple[int, int, int] | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, **kwargs) -> DynamicConv3d:
        """A dynamic conv with ``conv``'s hyper-parameters and a copy of its weights."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"DynamicConv3d supports zero padding only, got padding_mode={conv.padding_mode!r}")
        dyn = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, **kwargs)
        with torch.no_grad():
            dyn.weight.copy_(conv.weight)
            if conv.bias is not None:
                dyn.bias.copy_(conv.bias)
        return dyn.to(device=conv.weight.device, dtype=conv.weight.dtype)

    # ---- policy --------------------------------------------------------------------------

    def force(self, policy: str | int | tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Override the gate: ``None`` (the gate decides), ``"all"`` (choice 0 in both
        dimensions, weight 1: the static conv), an int i (choice i in both dimensions,
        clipped to the available choices), or explicit ``(V_t, V_c)`` tensors."""
        if isinstance(policy, str) and policy != "all":
            raise ValueError(f"unknown policy {policy!r}; valid: None, 'all', an int, or (V_t, V_c)")
        self.policy = 0 if policy == "all" else policy

    def decide(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V_t, V_c)`` for a batch: the gate's, or the forced policy's."""
        b = x.shape[0]
        if self.policy is None:
            return self.gate(x)
        if isinstance(self.policy, int):
            st, sc = len(self.temporal_factors), len(self.channel_ratios)
            v_t = x.new_zeros(b, st)
            v_t[:, min(self.policy, st - 1)] = 1.0
            v_c = x.new_zeros(b, sc)
            v_c[:, min(self.policy, sc - 1)] = 1.0
            return v_t, v_c
        v_t, v_c = self.policy
        return v_t.to(x).expand(b, -1), v_c.to(x).expand(b, -1)

    # ---- forward -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v_t, v_c = self.decide(x)
        if not self.training and self.policy is None and self.gate_threshold > 0:
            v_t, v_c = threshold_weights(v_t, self.gate_threshold), threshold_weights(v_c, self.gate_threshold)
        return self.dynamic_forward(x, v_t, v_c, hard=not self.training)

    def dynamic_forward(self, x: torch.Tensor, v_t: torch.Tensor, v_c: torch.Tensor, hard: bool) -> torch.Tensor:
        """Eq. 3.5 with the decision given: ``hard=False`` the shared-weight soft path (full
        conv once), ``hard=True`` only the selected sub-convolution per sample group."""
        b = x.shape[0]
        if v_t.shape != (b, len(self.temporal_factors)) or v_c.shape != (b, len(self.channel_ratios)):
            raise ValueError(f"decision shapes {tuple(v_t.shape)}, {tuple(v_c.shape)} do not match batch "
                             f"{b} with {len(self.temporal_factors)} temporal / "
                             f"{len(self.channel_ratios)} channel choices")
        out_size = self._out_size(x)
        self.last_v_t, self.last_v_c = v_t, v_c
        if not hard:
            c_frac, t_frac = self.channel_fractions, self.frame_fractions(out_size[0])
            exact = executed_fraction(v_c, c_frac) * executed_fraction(v_t, t_frac)
            soft = soft_fraction(v_c, c_frac) * soft_fraction(v_t, t_frac)
            self.last_fraction = soft + (exact - soft).detach()  # straight-through (see soft_fraction)
            full = self._conv(x, self.out_channels, 1)
            if metering():  # the soft path runs the full conv and every cheap operation
                ones = [[1.0] * len(self.channel_ratios)], [[1.0] * len(self.temporal_factors)]
                record_cost(self, self._hard_macs(0, 0, ones[0], ones[1], full.shape[2:])[0])
            return self._mix(full, v_t, v_c, None, None, 0, 0, out_size[0])
        return self._hard_forward(x, v_t, v_c, out_size)

    @property
    def channel_fractions(self) -> list[float]:
        """⌈r_i·C⌉ / C: the share of the filters each channel choice computes."""
        return [k / self.out_channels for k in self.computed_channels]

    def frame_fractions(self, out_frames: int) -> list[float]:
        """⌈T_o/R_j⌉ / T_o: the share of the output frames each temporal choice computes."""
        return [math.ceil(out_frames / R) / out_frames for R in self.temporal_factors]

    def _hard_forward(self, x: torch.Tensor, v_t: torch.Tensor, v_c: torch.Tensor, out_size) -> torch.Tensor:
        """Group the samples by (i_s, j_s) and run each group's sub-convolution. The decision is
        read once into Python lists: per-layer overhead matters at batch 1 on a CPU."""
        st, sc = len(self.temporal_factors), len(self.channel_ratios)
        vt, vc = v_t.tolist(), v_c.tolist()
        groups: dict[tuple[int, int], list[int]] = {}
        for row, (wt, wc) in enumerate(zip(vt, vc)):
            i = next((k for k, w in enumerate(wc) if w > 0), sc)
            j = next((k for k, w in enumerate(wt) if w > 0), st)
            groups.setdefault((i, j), []).append(row)
        self.last_fraction = None
        metered = metering()
        per_sample = [0.0] * len(vt)
        out = None
        for (i, j), rows in groups.items():
            whole = len(rows) == len(vt)
            if i == sc or j == st:
                y = None  # every weight zero: the output is 0 and nothing runs
            else:
                if whole:
                    xs, vts, vcs = x, v_t, v_c
                else:
                    index = torch.tensor(rows, device=x.device)
                    xs, vts, vcs = x[index], v_t[index], v_c[index]
                computed = self._conv(xs, self.computed_channels[i], self.temporal_factors[j])
                sub_vt, sub_vc = [vt[r] for r in rows], [vc[r] for r in rows]
                if self.cheap_kernel == 1 and not torch.is_grad_enabled():
                    y = self._mix_fused(computed, vts, vcs, sub_vt, sub_vc, i, j, out_size[0])
                else:
                    y = self._mix(computed, vts, vcs, sub_vt, sub_vc, i, j, out_size[0])
                if metered:
                    for r, macs in zip(rows, self._hard_macs(i, j, sub_vc, sub_vt, computed.shape[2:])):
                        per_sample[r] = macs
            if whole:
                out = y if y is not None else x.new_zeros((x.shape[0], self.out_channels, *out_size))
            elif y is not None:
                if out is None:  # the conv's dtype (autocast may differ from the input's)
                    out = y.new_zeros((x.shape[0], self.out_channels, *out_size))
                out[index] = y.to(out.dtype)
        if out is None:  # every group computed nothing
            out = x.new_zeros((x.shape[0], self.out_channels, *out_size))
        if metered:
            record_cost(self, torch.tensor(per_sample, dtype=torch.float64))
        return out

    def _out_size(self, x: torch.Tensor) -> tuple[int, int, int]:
        self._last_out_size = tuple(
            (x.shape[2 + d] + 2 * self.padding[d] - self.dilation[d] * (self.kernel_size[d] - 1) - 1) // self.stride[d] + 1
            for d in range(3))
        return self._last_out_size

    def _conv(self, x: torch.Tensor, channels: int, R: int) -> torch.Tensor:
        """The sub-convolution: the first ``channels`` filters at temporal stride ``R·stride``."""
        stride = (self.stride[0] * R, self.stride[1], self.stride[2])
        weight = self.weight if channels == self.out_channels else self.weight[:channels]
        bias = None if self.bias is None else self.bias[:channels]
        groups = self.groups
        if self.depthwise and channels != self.out_channels:
            x, groups = x[:, :channels], channels  # a depthwise filter reads only its own channel
        if self.kernel_size[0] == 1 and self.padding[0] == 0 and not torch.is_grad_enabled():
            # A 1×k×k kernel sees one frame: the sub-convolution is a 2-D convolution of every
            # stride-th frame. Run as one batched conv2d it uses the oneDNN kernels, whose time
            # follows the output size, where CPU conv3d (im2col) spends most of its time on the
            # input whatever the number of filters. Same arithmetic, same result.
            frames = x[:, :, :: stride[0]]
            b, c, t, h, w = frames.shape
            y = F.conv2d(frames.transpose(1, 2).reshape(b * t, c, h, w), weight[:, :, 0], bias,
                         stride[1:], self.padding[1:], self.dilation[1:], groups)
            return y.view(b, t, *y.shape[1:]).transpose(1, 2)
        return F.conv3d(x, weight, bias, stride, self.padding, self.dilation, groups)

    def _mix_fused(self, computed: torch.Tensor, v_t: torch.Tensor, v_c: torch.Tensor, vt: list, vc: list,
                   i_s: int, j_s: int, out_frames: int) -> torch.Tensor:
        """:meth:`_mix` for inference with per-channel-scale cheap operations (K = 1), written
        into two output tensors with one multiply-add per term instead of building every
        term: Φ^c and Φ^t are per-channel scales, so each term is a per-channel coefficient
        times a slice of the computed output, and the gate weights fold into the coefficients."""
        b, k_s, t_s, h, w = computed.shape
        c_out = self.out_channels
        dtype, device = computed.dtype, computed.device
        # ---- channels: y_c[c] = Σ_i V_c[i] · (Y[c] if c < k_i else a_i[c - k_i] · Y[(c - k_i) mod k_i])
        active_c = [i for i in range(i_s, len(self.channel_ratios)) if any(wc[i] > 0 for wc in vc)]
        # direct[b, c] = Σ_{i >= i_s, c < k_i} V_c[b, i]  (zero weights add nothing)
        direct = v_c[:, i_s:] @ self._direct_mask(dtype, device)[i_s:, :k_s]
        if k_s == c_out and len(active_c) == 1:
            # a fresh conv output: scale in place (not at all when every weight is 1, a forced "all")
            y_c = computed if all(wc[i_s] == 1.0 for wc in vc) else computed.mul_(direct.view(b, k_s, 1, 1, 1))
        else:
            y_c = computed.new_empty((b, c_out, t_s, h, w))
            torch.mul(computed, direct.view(b, k_s, 1, 1, 1), out=y_c[:, :k_s])
            if k_s < c_out:
                y_c[:, k_s:].zero_()
            for i in active_c:
                k = self.computed_channels[i]
                if k == c_out:
                    continue
                coef = v_c[:, i : i + 1] * self.cheap_channel[i - 1].scale.view(1, -1)  # (b, C - k)
                for start in range(0, c_out - k, k):  # generated channel k + m reads channel m mod k
                    n = min(k, c_out - k - start)
                    y_c[:, k + start : k + start + n].addcmul_(computed[:, :n], coef[:, start : start + n].view(b, n, 1, 1, 1))
        # ---- frames: y[iR + m] = Σ_j V_t[j] · φ_{R_j, m} · y_c[frame iR], φ_{R, 0} = 1
        active_t = [j for j in range(j_s, len(self.temporal_factors)) if any(wt[j] > 0 for wt in vt)]
        R_s = self.temporal_factors[j_s]
        R_max = max(self.temporal_factors[j] for j in active_t)
        if R_max == 1:
            if all(wt[j_s] == 1.0 for wt in vt):
                return y_c
            return y_c.mul_(v_t[:, active_t[0]].view(b, 1, 1, 1, 1))
        padded = math.ceil(out_frames / R_max) * R_max
        y = y_c.new_empty((b, c_out, padded, h, w))
        first = True
        for j in active_t:
            R = self.temporal_factors[j]
            src = y_c[:, :, :: R // R_s]  # the frames iR of the output
            n = src.shape[2]
            view = y.view(b, c_out, padded // R, R, h, w)[:, :, :n]
            ones = torch.ones(c_out, 1, dtype=dtype, device=device)
            table = torch.cat([ones, self.cheap_temporal[j - 1].scale.to(dtype)], 1) if R > 1 else ones
            coef = v_t[:, j].view(b, 1, 1) * table.unsqueeze(0)  # (b, C, R): 1, then Φ^t_{R, m} scales
            for m in range(R):
                c = coef[:, :, m].view(b, c_out, 1, 1, 1)
                if first:
                    torch.mul(src, c, out=view[:, :, :, m])
                else:
                    view[:, :, :, m].addcmul_(src, c)
            first = False
        return y if padded == out_frames else y[:, :, :out_frames]

    def _direct_mask(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(S_c, C) table, 1 where channel c < k_i (channel c is computed by choice i); it
        depends on the layer's sizes only, so it is built once per dtype and device."""
        cache = self.__dict__.setdefault("_masks", {})
        if (dtype, device) not in cache:
            ks = torch.tensor(self.computed_channels, device=device).view(-1, 1)
            cache[(dtype, device)] = (torch.arange(self.out_channels, device=device).view(1, -1) < ks).to(dtype)
        return cache[(dtype, device)]

    def _mix(self, computed: torch.Tensor, v_t: torch.Tensor, v_c: torch.Tensor, vt: list | None,
             vc: list | None, i_s: int, j_s: int, out_frames: int) -> torch.Tensor:
        """Σ_j V_t[j] E_{R_j}(Σ_i V_c[i] [Y'_i, Φ^c_i(Y'_i)]) from the largest computed output,
        whose frames are every R_{j_s}-th output frame. On the hard path (``vt``/``vc``: the
        group's weights as lists) terms whose weight is 0 for the whole group are skipped."""
        y_c = None
        for i in range(i_s, len(self.channel_ratios)):
            if vc is not None and not any(w[i] > 0 for w in vc):
                continue
            k = self.computed_channels[i]
            part = computed if k == self.out_channels else torch.cat(
                [computed[:, :k], self.cheap_channel[i - 1](computed[:, :k])], 1)
            term = part * v_c[:, i].view(-1, 1, 1, 1, 1)
            y_c = term if y_c is None else y_c + term
        y = None
        R_s = self.temporal_factors[j_s]
        for j in range(j_s, len(self.temporal_factors)):
            if vt is not None and not any(w[j] > 0 for w in vt):
                continue
            R = self.temporal_factors[j]
            frames = y_c[:, :, :: R // R_s] if R != R_s else y_c
            if R > 1:
                cheap = self.cheap_temporal[j - 1]
                frames = expand_frames(frames, R, out_frames, cheap.scale, cheap.conv)
            term = frames * v_t[:, j].view(-1, 1, 1, 1, 1)
            y = term if y is None else y + term
        return y

    def _hard_macs(self, i: int, j: int, vc: list, vt: list, computed_size) -> list[float]:
        """Per-sample MACs of one group on the hard path: the sub-convolution (C(f)·r/R) plus
        every cheap operation the sample needs (its weight is non-zero). A cheap operation runs
        for the whole group when any sample of it needs it; a sample is charged only for what
        it needs, so its cost does not depend on the batch it came in."""
        k = self.computed_channels[i]
        t_s, h, w = computed_size
        conv = float(t_s * h * w * k * (self.in_channels // self.groups) * math.prod(self.kernel_size))
        kk = self.cheap_kernel ** 2
        channel_ops = [(ii, (self.out_channels - self.computed_channels[ii]) * t_s * h * w * kk)
                       for ii in range(max(i, 1), len(self.channel_ratios))]
        R_s = self.temporal_factors[j]
        temporal_ops = [(jj, self.out_channels * (R - 1) * math.ceil(t_s / (R // R_s)) * h * w * kk)
                        for jj, R in enumerate(self.temporal_factors) if jj >= max(j, 1)]
        return [conv + sum(m for ii, m in channel_ops if wc[ii] > 0) + sum(m for jj, m in temporal_ops if wt[jj] > 0)
                for wc, wt in zip(vc, vt)]

    @property
    def full_macs(self) -> int:
        """C(f_l): MACs of the full convolution per sample at the last input size (Eq. 3.6)."""
        if self._last_out_size is None:
            return 0
        return conv_macs(self.in_channels, self.out_channels, self.kernel_size, self._last_out_size, self.groups)


class _CheapChannels(nn.Module):
    """Φ^c: ``generated`` channels from ``computed`` ones, channel m from channel m mod k,
    by a per-channel scale (K = 1) or a depthwise 1×K×K filter, no bias (linear: Φ(0) = 0).
    Starts as a copy."""

    def __init__(self, computed: int, generated: int, kernel: int):
        super().__init__()
        self.register_buffer("source", torch.arange(generated) % computed, persistent=False)
        self.identity_source = generated == computed  # channel m is generated from channel m
        if kernel == 1:
            self.scale = nn.Parameter(torch.ones(generated))
            self.conv = None
        else:
            self.scale = None
            self.conv = nn.Conv3d(generated, generated, (1, kernel, kernel), padding=(0, kernel // 2, kernel // 2),
                                  groups=generated, bias=False)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, 0, kernel // 2, kernel // 2] = 1.0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        src = y if self.identity_source else y.index_select(1, self.source)
        if self.conv is not None:
            return self.conv(src)
        return src * self.scale.view(1, -1, 1, 1, 1)


class _CheapFrames(nn.Module):
    """Φ^t_{R, j}, j = 1..R-1: per-channel scales (K = 1) or depthwise 1×K×K filters, one per
    offset j, shared over time, no bias. Starts as a copy of the computed frame."""

    def __init__(self, channels: int, offsets: int, kernel: int):
        super().__init__()
        if kernel == 1:
            self.scale = nn.Parameter(torch.ones(channels, offsets))
            self.conv = None
        else:
            self.scale = None
            self.conv = nn.Conv3d(channels, channels * offsets, (1, kernel, kernel),
                                  padding=(0, kernel // 2, kernel // 2), groups=channels, bias=False)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, 0, kernel // 2, kernel // 2] = 1.0
