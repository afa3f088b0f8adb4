"""VA-RED² dynamic convolution: soft modulation gate, temporal- and channel-wise dynamic
convolution with cheap reconstruction, shared weights (thesis Ch. 3, App. A.2).

One :class:`DynamicConv3d` replaces one ``nn.Conv3d`` of a static backbone. It keeps the
full kernel as ``weight`` (so a static checkpoint loads into it key for key) and adds
``gate`` (the soft modulation gate p_l, Eq. 3.4) and the cheap operations Φ^c, Φ^t.

Choices. With search-space size S, the temporal choices are R ∈ {1, 2, 4}[:S] (the
conv's temporal stride times R, Eq. 3.1) and the channel choices r ∈ {1, 1/2, 1/4}[:S]
(the first ⌈r·C_out⌉ output channels computed, Sec. 3.1). The gate emits V_t (S_t values)
and V_c (S_c values) per sample, each in [0, 1) (``max(tanh(·), 0)``).

Output (Eq. 3.5, the same formula in training and inference, with the weights normalised,
w = V / ΣV, see :func:`mixing_weights`)::

    Y_c = Σ_i w_c[i] · [Y'_i, Φ^c_i(Y'_i)],   Y'_i = f(X)[:, :⌈r_i C⌉]
    Y   = Σ_j w_t[j] · E_{R_j}(Y_c)            E_R: keep frames iR, rebuild iR+1..iR+R-1 by Φ^t

Shared weights (Sec. 3.3, Eq. A.1). Every choice reads the leading slice of one output:
in training the full conv runs once and every term of the sum is cut from it (constant
cost in S); in inference (``model.eval()``) only the *largest choice with a non-zero
weight* runs — i_s = the smallest i with V[i] > 0 — as a real sub-convolution: the sliced
kernel ``weight[:⌈r C⌉]`` at temporal stride ``R·stride``, and every smaller term is cut
from that output. Because V[i] = 0 for i < i_s, both paths compute the same function
(checked by the tests); the inference path just does not compute what is multiplied by
zero. When every V_c (or every V_t) of a sample is 0, the cheapest choice runs (no layer
is ever silent). Samples of one batch are grouped by their (i_s, j_s) and each group runs
its own sub-convolution.

Inference implementation (what makes the saving reach the clock on a CPU):

- A ``1×k×k`` kernel (R(2+1)D's spatial convolutions, X3D's and I3D's pointwise ones) sees
  one frame, so its sub-convolution runs as one batched ``conv2d`` over every R·stride-th
  frame (:mod:`dynvid.backbones.frameconv`; a static network is timed with the same
  implementation through ``use_frame_convs``). Other kernels run as ``conv3d`` with the
  larger temporal stride.
- With ``cheap_kernel=1`` every Φ is a per-channel scale, so each term of Eq. 3.5 is a
  per-channel coefficient times a slice of the computed output: the output is written
  with one multiply-add per term into fresh tensors, the gate weights folded into the
  coefficients (``_mix_fused``), instead of materialising every term.
- The decision is read to the host once per layer and batch as one integer per sample (no
  read at all for a forced policy); samples are grouped by executed choice and each group
  runs one sub-convolution. A group with one choice per dimension (weight 1) returns the
  sub-convolution's output itself, with the cheap operations' outputs added: a forced
  "all" is the static conv with no extra work. The cost bookkeeping runs only while a
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
all" choice and -0.25 for the others, with FC2 small enough that every other V is exactly
0 for any input: with the normalised mix (:func:`mixing_weights`), a dynamic model
initialised from the static base computes exactly the static function until its gates
move (issue 19, cause 3). The max is straight-through in training (gradient of tanh
everywhere), so an "off" choice still learns when to come on (cause 4). The gate's MACs
(two FCs) are counted every forward.

Departures from the thesis, each for a measured reason (issue 19): Eq. 3.5's sum is
normalised and an all-zero decision runs the cheapest choice (:func:`mixing_weights`);
the efficiency surrogate is taken over the normalised weights (:func:`soft_fraction`);
the gate's max is straight-through; the gate starts on "compute all" alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynvid.backbones.frameconv import frame_conv3d, is_frame_conv
from dynvid.metrics.cost import conv_macs, linear_macs, metering, record_cost

__all__ = [
    "DynamicConv3d",
    "SoftModulationGate",
    "choices",
    "executed_index",
    "executed_fraction",
    "expand_frames",
    "explore_choices",
    "mixing_weights",
    "soft_fraction",
    "threshold_weights",
]

TEMPORAL_FACTORS = (1, 2, 4)  # R = 2^p
CHANNEL_RATIOS = (1.0, 0.5, 0.25)  # r = (1/2)^p
_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1
_INIT_FC2_L1 = 0.2  # |FC2(h)| <= 0.2 at the start (each row's L1 norm), h in (-1, 1)
_INIT_OFF_BIAS = -0.25  # β of every choice but "compute all" (+1) at the start


def choices(search_space: int, enabled: bool, values: Sequence) -> tuple:
    """The first ``search_space`` choices, or only "compute all" when the dimension is off."""
    if search_space not in (2, 3):
        raise ValueError(f"vared.search_space must be 2 or 3 (thesis Table 4.1), got {search_space}")
    return tuple(values[:search_space]) if enabled else tuple(values[:1])


def mixing_weights(v: torch.Tensor) -> torch.Tensor:
    """The weights of Eq. 3.5's sum, normalised: ``w = V / Σ_i V[i]``; a sample whose V are all
    0 gets its cheapest choice alone (``w = e_S``).

    Two departures from the thesis' unnormalised sum, both for reasons measured here (issue 19):

    - *No silent layer.* With ``Y = Σ V[i]·f_i`` a sample whose V are all 0 gets Y = 0 at zero
      cost, outside the thesis' search space ({1, ½} or {1, ½, ¼}: the cheapest choice at
      least runs), and the efficiency loss rewards it. Here it runs the cheapest choice.
    - *The layer keeps its gain.* ``Σ V[i]`` ranges over [0, S) with V ∈ [0, 1): an
      unnormalised sum scales each conv's output by it (≈ 0.76 at the gate's start) against
      BatchNorm statistics fitted at gain 1, and a converted model started far from the
      static base (eval accuracy fell from 0.52 to 0.13 at conversion). Normalised, the
      output is a convex combination of the choices' outputs, and a gate that starts on
      "compute all" alone computes exactly the static function.

    The executed choice (A.1: the largest with a non-zero weight) is unchanged: ``w[i] > 0``
    exactly where ``V[i] > 0``.

    Args:
        v: ``(B, S)`` gate outputs in [0, 1).
    """
    total = v.sum(1, keepdim=True)
    cheapest = torch.zeros_like(v)
    cheapest[:, -1] = 1.0
    return torch.where(total > 0, v / total.clamp_min(torch.finfo(v.dtype).tiny), cheapest)


_TABLES: dict[tuple, torch.Tensor] = {}


def _table(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, built once per (values, dtype, device): a small
    constant used every step is not copied from the host each time (on CUDA a copy from
    pageable memory waits for every queued kernel). Built outside inference mode, so a table
    first made during evaluation can still be used by a training step's autograd."""
    key = (tuple(values), dtype, device)
    table = _TABLES.get(key)
    if table is None:
        with torch.inference_mode(False), torch.no_grad():
            table = _TABLES[key] = torch.tensor(key[0], dtype=dtype, device=device)
    return table


def executed_index(w: torch.Tensor) -> torch.Tensor:
    """i_s per sample: the first (largest) choice with a non-zero weight (A.1); the cheapest
    choice when every weight is 0 (the fallback of :func:`mixing_weights`).

    Args:
        w: ``(B, S)`` gate or mixing weights.
    """
    nonzero = w > 0
    first = nonzero.to(torch.int64).argmax(1)
    return torch.where(nonzero.any(1), first, torch.full_like(first, w.shape[1] - 1))


def executed_fraction(w: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """The computed fraction of the largest executed choice per sample (r_l^s, or the frame
    share ⌈T_o/R⌉/T_o). ``factors[i]`` is the fraction of choice i."""
    return _table(factors, w.dtype, w.device)[executed_index(w)]


def soft_fraction(w: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Differentiable surrogate of :func:`executed_fraction`: ``Σ_i factors[i] · w[i]`` over
    the *normalised* weights ``w`` of :func:`mixing_weights`.

    The executed fraction is piecewise constant in V, so the efficiency loss (Eq. 3.6) takes
    its value from :func:`executed_fraction` and its gradient from this surrogate
    (straight-through, this implementation's: A.1 runs the largest filter throughout training,
    which would make L_e a constant). Over normalised weights, ∂/∂V[i] = (f_i − Σ_k w_k f_k) / ΣV:
    negative for choices cheaper than the current mix and positive for dearer ones, so the
    loss moves weight from the expensive choice to the cheap one, whose minimum is "the
    cheapest choice alone". Over raw V (``Σ f_i V[i]``) every partial derivative is positive
    and the minimum is "every gate 0", which pushes the cheap choice down with the dear one.
    """
    return w @ _table(factors, w.dtype, w.device)


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

    The kept weights are normalised by :func:`mixing_weights` like any others, so the layer's
    output keeps its scale.
    """
    if threshold <= 0:
        return v
    nonzero = v > 0
    s = v.shape[1]
    last = (s - 1) - nonzero.flip(1).to(torch.int64).argmax(1)  # the cheapest non-zero choice
    keep = (v > threshold) | (F.one_hot(last, s).bool() & nonzero)
    return v * keep


def explore_choices(v: torch.Tensor, share: float) -> torch.Tensor:
    """Training-time exploration (dynvid's, for the dynamic stage; see ``vared.explore``): each
    sample's decision is, with probability ``share``, replaced by one choice drawn uniformly
    (weight 1), so every choice's path (its sub-network and cheap operations Φ) is trained.

    Why: the thesis trains the dynamic model from scratch, its gates starting at random, so
    every choice is mixed in and trained for 120 epochs; here the dynamic model starts from
    the static base with every gate on "compute all" (the converted model *is* the base), so
    the cheap choices and Φ would first be used, untrained, when the efficiency loss turns
    them on — which cost 13 points in one finetune epoch (issue 19, cause 4).
    """
    if share <= 0:
        return v
    b, s = v.shape
    pick = torch.rand(b, 1, device=v.device) < share
    choice = F.one_hot(torch.randint(s, (b,), device=v.device), s).to(v.dtype)
    return torch.where(pick, choice, v)


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


def _rows_index(rows: list[int], device: torch.device) -> torch.Tensor:
    """The rows of one group as an index tensor on ``device``. On CUDA it is staged in pinned
    memory and copied asynchronously: the decision was read to the host once already, and a
    copy from pageable memory would wait for the queued kernels a second time."""
    if device.type != "cuda":
        return torch.tensor(rows, device=device)
    return torch.tensor(rows, pin_memory=True).to(device, non_blocking=True)


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
            # β: "compute all" at +1, every other choice at -0.25. FC2's weights are scaled so
            # that |FC2(h)| <= 0.2 for any h in (-1, 1)^D_h: every cheaper choice starts exactly
            # at 0 and "all" above 0 for every input, so with the normalised mix (mixing_weights)
            # the converted model computes the static function exactly until the gates move; a
            # cheap choice is a short way (0.05–0.45 in z) from coming on.
            self.fc2.weight.mul_(_INIT_FC2_L1 / self.fc2.weight.abs().sum(1, keepdim=True).clamp_min(1e-12))
            bias = torch.full((num_temporal + num_channel,), _INIT_OFF_BIAS)
            bias[0] = bias[num_temporal] = 1.0
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
        t = torch.tanh(self.fc2(hidden))
        v = t.clamp(0.0, _BELOW_ONE)
        if torch.is_grad_enabled():
            # Straight-through max: the forward value is Eq. 3.4's, the gradient tanh's
            # everywhere. A choice whose V is 0 (z < 0) still learns from the loss whether it
            # should come on; through max's zero gradient it could never return (a cheap
            # choice that starts off, as it does here, would stay off). This implementation's.
            v = t + (v - t).detach()
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
        self.explore = 0.0  # share of training samples given a random choice (explore_choices)
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
        if self.training and self.policy is None and self.explore > 0:
            v_t, v_c = explore_choices(v_t, self.explore), explore_choices(v_c, self.explore)
        if not self.training and self.policy is None and self.gate_threshold > 0:
            v_t, v_c = threshold_weights(v_t, self.gate_threshold), threshold_weights(v_c, self.gate_threshold)
        return self.dynamic_forward(x, v_t, v_c, hard=not self.training)

    def dynamic_forward(self, x: torch.Tensor, v_t: torch.Tensor, v_c: torch.Tensor, hard: bool) -> torch.Tensor:
        """Eq. 3.5 with the decision given (V of Eq. 3.4, normalised by :func:`mixing_weights`):
        ``hard=False`` the shared-weight soft path (full conv once), ``hard=True`` only the
        selected sub-convolution per group of samples."""
        b = x.shape[0]
        if v_t.shape != (b, len(self.temporal_factors)) or v_c.shape != (b, len(self.channel_ratios)):
            raise ValueError(f"decision shapes {tuple(v_t.shape)}, {tuple(v_c.shape)} do not match batch "
                             f"{b} with {len(self.temporal_factors)} temporal / "
                             f"{len(self.channel_ratios)} channel choices")
        out_size = self._out_size(x)
        w_t, w_c = mixing_weights(v_t), mixing_weights(v_c)
        self.last_v_t, self.last_v_c = w_t, w_c
        if self._post_affine is not None and (not hard or torch.is_grad_enabled()):
            raise RuntimeError("this DynamicConv3d has a BatchNorm folded in (fold_output_affine): "
                               "it runs inference only (eval mode, no grad)")
        if not hard:
            c_frac, t_frac = self.channel_fractions, self.frame_fractions(out_size[0])
            exact = executed_fraction(w_c, c_frac) * executed_fraction(w_t, t_frac)
            soft = soft_fraction(w_c, c_frac) * soft_fraction(w_t, t_frac)
            self.last_fraction = soft + (exact - soft).detach()  # straight-through (see soft_fraction)
            full = self._conv(x, self.out_channels, 1)
            if metering():  # the soft path runs the full conv and every cheap operation
                every = (1 << len(self.channel_ratios)) - 1 | ((1 << len(self.temporal_factors)) - 1) << len(self.channel_ratios)
                record_cost(self, self._hard_macs(0, 0, [every] * b, full.shape[2:], out_size[0])[0])
            return self._mix(full, w_t, w_c, 0, 0, None, None, out_size[0])
        return self._hard_forward(x, w_t, w_c, out_size)

    @property
    def channel_fractions(self) -> list[float]:
        """⌈r_i·C⌉ / C: the share of the filters each channel choice computes."""
        return [k / self.out_channels for k in self.computed_channels]

    def frame_fractions(self, out_frames: int) -> list[float]:
        """⌈T_o/R_j⌉ / T_o: the share of the output frames each temporal choice computes."""
        return [math.ceil(out_frames / R) / out_frames for R in self.temporal_factors]

    # ---- the hard (inference) path -------------------------------------------------------
    #
    # A decision is read to the host once per layer and batch, as one small integer per sample
    # (its "code": bit i of the low S_c bits set when w_c[i] > 0, bit j of the next S_t bits when
    # w_t[j] > 0): the only host-device synchronisation a decision needs, and none at all for a
    # forced policy, whose code is known in advance. Samples are grouped by their executed
    # choice (the lowest set bit of each half); each group runs one sub-convolution, and the
    # union of its codes says which terms of Eq. 3.5 have a non-zero weight in it.

    def _codes(self, w_t: torch.Tensor, w_c: torch.Tensor) -> list[int]:
        if isinstance(self.policy, int):  # forced: one-hot weights, the code is known
            sc, st = len(self.channel_ratios), len(self.temporal_factors)
            return [(1 << min(self.policy, sc - 1)) | (1 << min(self.policy, st - 1)) << sc] * w_t.shape[0]
        cache = self.__dict__.setdefault("_bit_values", {})
        if w_t.device not in cache:
            sc, st = len(self.channel_ratios), len(self.temporal_factors)
            cache[w_t.device] = (torch.tensor([1 << i for i in range(sc)], device=w_t.device),
                                 torch.tensor([1 << (sc + j) for j in range(st)], device=w_t.device))
        bits_c, bits_t = cache[w_t.device]
        code = ((w_c > 0).long() * bits_c).sum(1) + ((w_t > 0).long() * bits_t).sum(1)
        return code.tolist()

    def _hard_forward(self, x: torch.Tensor, w_t: torch.Tensor, w_c: torch.Tensor, out_size) -> torch.Tensor:
        sc = len(self.channel_ratios)
        low = (1 << sc) - 1
        codes = self._codes(w_t, w_c)
        groups: dict[tuple[int, int], list] = {}
        for row, code in enumerate(codes):
            bc, bt = code & low, code >> sc
            key = ((bc & -bc).bit_length() - 1, (bt & -bt).bit_length() - 1)  # lowest set bits
            group = groups.get(key)
            if group is None:
                groups[key] = [[row], bc, bt]
            else:
                group[0].append(row)
                group[1] |= bc
                group[2] |= bt
        self.last_fraction = None
        metered = metering()
        per_sample = [0.0] * len(codes)
        fused = self.cheap_kernel == 1 and not torch.is_grad_enabled()
        post = self._post_affine
        out = None
        for (i, j), (rows, mask_c, mask_t) in groups.items():
            whole = len(rows) == len(codes)
            if whole:
                xs, wts, wcs = x, w_t, w_c
            else:
                index = _rows_index(rows, x.device)
                xs, wts, wcs = x.index_select(0, index), w_t.index_select(0, index), w_c.index_select(0, index)
            single = fused and not mask_c & (mask_c - 1) and not mask_t & (mask_t - 1)  # one choice each
            computed = self._conv(xs, self.computed_channels[i], self.temporal_factors[j], folded=single and post is not None)
            if single:
                y = self._single_choice(computed, i, j, out_size[0], folded=post is not None)
            else:
                y = (self._mix_fused if fused else self._mix)(computed, wts, wcs, i, j, mask_c, mask_t, out_size[0])
                if post is not None:  # a·Y + b after the mix (its weights sum to 1)
                    y = torch.addcmul(post[1].to(y.dtype).view(1, -1, 1, 1, 1), y, post[0].to(y.dtype).view(1, -1, 1, 1, 1))
            if metered:
                for r, macs in zip(rows, self._hard_macs(i, j, [codes[r] for r in rows], computed.shape[2:],
                                                         out_size[0])):
                    per_sample[r] = macs
            if whole:
                out = y
            else:
                if out is None:  # the conv's dtype (autocast may differ from the input's)
                    out = y.new_empty((x.shape[0], self.out_channels, *out_size))
                out.index_copy_(0, index, y.to(out.dtype))
        if metered:
            record_cost(self, torch.tensor(per_sample, dtype=torch.float64))
        return out

    def _out_size(self, x: torch.Tensor) -> tuple[int, int, int]:
        self._last_out_size = tuple(
            (x.shape[2 + d] + 2 * self.padding[d] - self.dilation[d] * (self.kernel_size[d] - 1) - 1) // self.stride[d] + 1
            for d in range(3))
        return self._last_out_size

    def _conv(self, x: torch.Tensor, channels: int, R: int, folded: bool = False) -> torch.Tensor:
        """The sub-convolution: the first ``channels`` filters at temporal stride ``R·stride``
        (``folded``: with the folded BatchNorm's scale and shift, see :meth:`fold_output_affine`).
        In inference a one-frame kernel runs through the 2-D path (:mod:`dynvid.backbones.frameconv`),
        the implementation a static network gets from ``use_frame_convs``."""
        stride = (self.stride[0] * R, self.stride[1], self.stride[2])
        full_weight, full_bias = (self._folded_weight, self._folded_bias) if folded else (self.weight, self.bias)
        weight = full_weight if channels == self.out_channels else full_weight[:channels]
        bias = None if full_bias is None else full_bias[:channels]
        groups = self.groups
        if self.depthwise and channels != self.out_channels:
            x, groups = x[:, :channels], channels  # a depthwise filter reads only its own channel
        if not torch.is_grad_enabled() and is_frame_conv(self.kernel_size, self.padding):
            return frame_conv3d(x, weight, bias, stride, self.padding, self.dilation, groups)
        return F.conv3d(x, weight, bias, stride, self.padding, self.dilation, groups)

    def _mix_fused(self, computed: torch.Tensor, w_t: torch.Tensor, w_c: torch.Tensor, i_s: int, j_s: int,
                   mask_c: int, mask_t: int, out_frames: int) -> torch.Tensor:
        """:meth:`_mix` for inference with per-channel-scale cheap operations (K = 1), written
        with one multiply-add per term into fresh tensors instead of building every term:
        Φ^c and Φ^t are per-channel scales, so each term is a per-channel coefficient times a
        slice of the computed output, and the gate weights fold into the coefficients. A
        dimension with one non-zero choice has weight 1 there (normalised) and needs no
        multiply; a group with one choice in both dimensions goes to :meth:`_single_choice`."""
        active_c = [i for i in range(i_s, len(self.channel_ratios)) if mask_c >> i & 1]
        active_t = [j for j in range(j_s, len(self.temporal_factors)) if mask_t >> j & 1]
        b, k_s, t_s, h, w = computed.shape
        c_out = self.out_channels
        dtype, device = computed.dtype, computed.device
        # ---- channels: y_c[c] = Σ_i w_c[i] · (Y[c] if c < k_i else a_i[c - k_i] · Y[(c - k_i) mod k_i])
        single_c = len(active_c) == 1
        if single_c and k_s == c_out:
            y_c = computed
        else:
            y_c = computed.new_empty((b, c_out, t_s, h, w))
            if single_c:
                y_c[:, :k_s].copy_(computed)
            else:
                # direct[b, c] = Σ_{i >= i_s, c < k_i} w_c[b, i]  (zero weights add nothing)
                direct = w_c[:, i_s:] @ self._direct_mask(dtype, device)[i_s:, :k_s]
                torch.mul(computed, direct.view(b, k_s, 1, 1, 1), out=y_c[:, :k_s])
                if k_s < c_out:
                    y_c[:, k_s:].zero_()
            for i in active_c:
                k = self.computed_channels[i]
                if k == c_out:
                    continue
                scale = self.cheap_channel[i - 1].scale.to(dtype)
                coef = scale.view(1, -1) if single_c else w_c[:, i : i + 1] * scale.view(1, -1)  # (b|1, C - k)
                for start in range(0, c_out - k, k):  # generated channel k + m reads channel m mod k
                    n = min(k, c_out - k - start)
                    c = coef[:, start : start + n].view(-1, n, 1, 1, 1)
                    if single_c:
                        torch.mul(computed[:, :n], c, out=y_c[:, k + start : k + start + n])
                    else:
                        y_c[:, k + start : k + start + n].addcmul_(computed[:, :n], c)
        # ---- frames: y[iR + m] = Σ_j w_t[j] · φ_{R_j, m} · y_c[frame iR], φ_{R, 0} = 1
        single_t = len(active_t) == 1
        R_s = self.temporal_factors[j_s]
        if single_t and R_s == 1:
            return y_c
        R_max = max(self.temporal_factors[j] for j in active_t)
        padded = math.ceil(out_frames / R_max) * R_max
        y = y_c.new_empty((b, c_out, padded, h, w))
        first = True
        for j in active_t:
            R = self.temporal_factors[j]
            src = y_c[:, :, :: R // R_s] if R != R_s else y_c  # the frames iR of the output
            view = y.view(b, c_out, padded // R, R, h, w)
            table = self.cheap_temporal[j - 1].scale.to(dtype) if R > 1 else None  # (C, R - 1)
            for m in range(R):
                n = math.ceil((out_frames - m) / R)  # frames iR + m that are kept (< T_o)
                if m == 0:
                    c = None if single_t else w_t[:, j].view(b, 1, 1, 1, 1)
                else:
                    c = table[:, m - 1].view(1, c_out, 1, 1, 1)
                    if not single_t:
                        c = w_t[:, j].view(b, 1, 1, 1, 1) * c
                dst = view[:, :, :n, m]
                if first:
                    dst.copy_(src[:, :, :n]) if c is None else torch.mul(src[:, :, :n], c, out=dst)
                else:
                    dst.add_(src[:, :, :n]) if c is None else dst.addcmul_(src[:, :, :n], c)
            first = False
        return y if padded == out_frames else y[:, :, :out_frames]

    def _single_choice(self, computed: torch.Tensor, i: int, j: int, out_frames: int,
                       folded: bool = False) -> torch.Tensor:
        """The output of one choice (weight 1) in one pass: each output element is written once,
        the computed ones copied into frames iR, the generated channels of those frames scaled
        from the computed ones (Φ^c), the frames iR + m scaled from frame iR (Φ^t).

        ``folded``: ``computed`` came from the BatchNorm-folded weights (a·conv + b per channel),
        and the output is the normalised one: a generated channel c from channel m is
        ``a_c·s·conv_m + b_c = (a_c·s/a_m)·computed_m + (b_c − (a_c·s/a_m)·b_m)``, a generated
        frame ``a·φ·y + b = φ·(a·y + b) + b·(1 − φ)``; each is one fused multiply-add."""
        b, k, n, h, w = computed.shape
        c_out, R = self.out_channels, self.temporal_factors[j]
        if R == 1 and k == c_out:
            return computed  # "compute all": the sub-convolution's output itself
        dtype = computed.dtype
        a_post, b_post = (t.to(dtype) for t in self._post_affine) if folded else (None, None)
        y = computed.new_empty((b, c_out, n * R, h, w))
        frames = y.view(b, c_out, n, R, h, w)
        base = frames[:, :, :, 0]  # frames iR
        base[:, :k].copy_(computed)
        if k < c_out:
            scale = self.cheap_channel[i - 1].scale.to(dtype)
            for start in range(0, c_out - k, k):  # generated channel k + m reads channel m mod k
                cnt = min(k, c_out - k - start)
                dst = base[:, k + start : k + start + cnt]
                coef = scale[start : start + cnt]
                if folded:
                    coef = a_post[k + start : k + start + cnt] * coef / a_post[:cnt]
                    offset = b_post[k + start : k + start + cnt] - coef * b_post[:cnt]
                    torch.addcmul(offset.view(1, cnt, 1, 1, 1), computed[:, :cnt], coef.view(1, cnt, 1, 1, 1), out=dst)
                else:
                    torch.mul(computed[:, :cnt], coef.view(1, cnt, 1, 1, 1), out=dst)
        if R > 1:
            table = self.cheap_temporal[j - 1].scale.to(dtype)  # (C, R - 1)
            for m in range(1, R):
                kept = math.ceil((out_frames - m) / R)  # frames iR + m < T_o
                phi, dst = table[:, m - 1], frames[:, :, :kept, m]
                if folded:
                    torch.addcmul((b_post * (1 - phi)).view(1, c_out, 1, 1, 1), base[:, :, :kept],
                                  phi.view(1, c_out, 1, 1, 1), out=dst)
                else:
                    torch.mul(base[:, :, :kept], phi.view(1, c_out, 1, 1, 1), out=dst)
        return y if n * R == out_frames else y[:, :, :out_frames]

    @property
    def _post_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(a, b)`` of a BatchNorm folded in by :meth:`fold_output_affine`, else None."""
        scale = getattr(self, "_post_scale", None)
        return None if scale is None else (scale, self._post_shift)

    @torch.no_grad()
    def fold_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> bool:
        """Fold the per-channel affine map ``a·Y + b`` that follows this conv (an eval-mode
        BatchNorm, see :func:`dynvid.backbones.fuse.fold_batchnorm`) into the inference path.
        Exact: every output is an affine combination of its choices' outputs (the mixing
        weights sum to 1), so ``a·Σ w_i Y_i + b = Σ w_i (a·Y_i + b)``. A group with one choice
        runs the folded sub-convolution and folds ``a, b`` into its cheap operations; any other
        applies ``a, b`` after the mix. Inference only (the module is put in eval mode); returns
        False (nothing folded) when a scale is 0 or the sizes differ."""
        if scale.numel() != self.out_channels or bool((scale.abs() < 1e-12).any()):
            return False
        self.eval()
        self.register_buffer("_post_scale", scale.detach().clone(), persistent=False)
        self.register_buffer("_post_shift", shift.detach().clone(), persistent=False)
        self.register_buffer("_folded_weight", self.weight * scale.view(-1, 1, 1, 1, 1), persistent=False)
        bias = shift.clone() if self.bias is None else self.bias * scale + shift
        self.register_buffer("_folded_bias", bias, persistent=False)
        return True

    def _direct_mask(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(S_c, C) table, 1 where channel c < k_i (channel c is computed by choice i); it
        depends on the layer's sizes only, so it is built once per dtype and device."""
        cache = self.__dict__.setdefault("_masks", {})
        if (dtype, device) not in cache:
            ks = torch.tensor(self.computed_channels, device=device).view(-1, 1)
            cache[(dtype, device)] = (torch.arange(self.out_channels, device=device).view(1, -1) < ks).to(dtype)
        return cache[(dtype, device)]

    def _mix(self, computed: torch.Tensor, w_t: torch.Tensor, w_c: torch.Tensor, i_s: int, j_s: int,
             mask_c: int | None, mask_t: int | None, out_frames: int) -> torch.Tensor:
        """Σ_j w_t[j] E_{R_j}(Σ_i w_c[i] [Y'_i, Φ^c_i(Y'_i)]) from the largest computed output,
        whose frames are every R_{j_s}-th output frame. On the hard path (``mask_c``/``mask_t``:
        the union of the group's codes) terms whose weight is 0 for the whole group are skipped;
        the soft path (masks None) builds every term, each of which carries a gradient."""
        y_c = None
        for i in range(i_s, len(self.channel_ratios)):
            if mask_c is not None and not mask_c >> i & 1:
                continue
            k = self.computed_channels[i]
            part = computed if k == self.out_channels else torch.cat(
                [computed[:, :k], self.cheap_channel[i - 1](computed[:, :k])], 1)
            term = part * w_c[:, i].view(-1, 1, 1, 1, 1)
            y_c = term if y_c is None else y_c + term
        y = None
        R_s = self.temporal_factors[j_s]
        for j in range(j_s, len(self.temporal_factors)):
            if mask_t is not None and not mask_t >> j & 1:
                continue
            R = self.temporal_factors[j]
            frames = y_c[:, :, :: R // R_s] if R != R_s else y_c
            if R > 1:
                cheap = self.cheap_temporal[j - 1]
                frames = expand_frames(frames, R, out_frames, cheap.scale, cheap.conv)
            term = frames * w_t[:, j].view(-1, 1, 1, 1, 1)
            y = term if y is None else y + term
        return y

    def _hard_macs(self, i: int, j: int, codes: list[int], computed_size, out_frames: int) -> list[float]:
        """Per-sample MACs of one group on the hard path: the sub-convolution (C(f)·r/R, A.2)
        plus every cheap operation the sample needs (its weight is non-zero, bit set in its
        code). A cheap operation runs for the whole group when any sample of it needs it; a
        sample is charged only for what it needs, so its cost does not depend on its batch.
        Φ^t is charged for the generated frames that are kept (T_o − ⌈T_o/R⌉), not for the
        ones past T_o that a last incomplete group of R would add."""
        sc = len(self.channel_ratios)
        k = self.computed_channels[i]
        t_s, h, w = computed_size
        conv = float(t_s * h * w * k * (self.in_channels // self.groups) * math.prod(self.kernel_size))
        kk = self.cheap_kernel ** 2
        channel_ops = [(ii, (self.out_channels - self.computed_channels[ii]) * t_s * h * w * kk)
                       for ii in range(max(i, 1), sc)]
        temporal_ops = [(jj, self.out_channels * (out_frames - math.ceil(out_frames / R)) * h * w * kk)
                        for jj, R in enumerate(self.temporal_factors) if jj >= max(j, 1)]
        return [conv + sum(m for ii, m in channel_ops if code >> ii & 1)
                + sum(m for jj, m in temporal_ops if code >> (sc + jj) & 1) for code in codes]

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
