"""EfficientNet-B0 and its weight-sharing width supernet (ANT, Sec. 3.1 and 4.1).

EfficientNet-B0 (Tan & Le, 2019): a stem conv, one MBConv1 stage, six MBConv6 stages and a
1×1 head conv. ANT ("Adaptive Network across Time", ``shared/papers/ant-adapt-network-
across-time.txt``) turns the six MBConv6 stages into a supernet: each stage runs with an
expansion ratio in {1, …, 6}, the hidden width ``in · ratio`` taken as the **first**
channels of the shared weights (expand conv output rows, depthwise filters, SE input/output,
project conv input columns, BatchNorm statistics), giving 6^6 subnets.

- :class:`EfficientNet` is torchvision's ``EfficientNet`` class built from B0's table, with
  torchvision's ``MBConv`` blocks; ``expand_ratios`` gives each MBConv6 stage its ratio (all
  6 = ``torchvision.models.efficientnet_b0``, the same keys and outputs: a test holds it). A
  static NAS subnet is an ``EfficientNet`` with other ratios. dynvid's own code here is what
  torchvision lacks: the per-stage ratios, the expand conv kept at ratio 1, the width
  multiplier of D0+ and the supernet.
- :class:`EfficientNetSupernet` has B0's modules and keys (a trained standalone B0 initialises
  it, as ANT does) and runs any configuration: ``forward(x, ratios)``. Its elastic blocks
  compute with the sliced weights only (real skipping) and report the MACs they ran to the
  cost meter. :meth:`EfficientNetSupernet.subnet` builds the standalone ``EfficientNet`` of a
  configuration holding the sliced weights; both compute the same function.
- :func:`mbconv_macs` and :func:`supernet_macs` are the width formula.

Choices: the squeeze-and-excitation width stays ``max(1, in // 4)`` at every ratio
(torchvision's rule depends on the block input, which the ratio does not change); a stage's
blocks share its ratio (ANT's gates pick a width per stage); stochastic depth is torchvision's
(0.2 for B0) unless the caller sets ``stochastic_depth_prob`` (ANT's detector sets 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from dynvid.backbones.fuse import folded_conv
from dynvid.metrics.cost import conv_macs, metering, record_cost

__all__ = ["B0_STAGES", "EfficientNet", "EfficientNetSupernet", "MBConv", "efficientnet_b0", "mbconv_macs",
           "scaled_channels", "stage_ratios", "supernet_macs", "RATIOS"]

# expand ratio, kernel, stride, out channels, blocks — EfficientNet-B0's table
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM, HEAD = 32, 1280
RATIOS = (1, 2, 3, 4, 5, 6)
"""Expansion ratios of each elastic stage (Sec. 4.1)."""


class _StageConfig(tv_efficientnet.MBConvConfig):
    """torchvision's block configuration, plus whether the block keeps its 1×1 expand conv when
    the hidden width equals the input width (MBConv6 stages at ratio 1 do)."""

    def __init__(self, *args, keep_expand: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_expand = keep_expand


class MBConv(tv_efficientnet.MBConv):
    """torchvision's mobile inverted bottleneck (``block.{expand, depthwise, se, project}``,
    SiLU, squeeze ``max(1, in // 4)``, stochastic depth on the residual in training).

    dynvid adds: an MBConv6 stage's block keeps its expand conv at ratio 1, where torchvision
    drops it (a static subnet then holds the same layers as the supernet it was sliced from),
    and the block's sizes as attributes (``cin``, ``cout``, ``hidden``, ``kernel``, ``stride``,
    ``residual``) for the supernet's width formula.
    """

    def __init__(self, cnf: _StageConfig, stochastic_depth_prob: float, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__(cnf, stochastic_depth_prob, norm_layer)
        hidden = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        self.has_expand = hidden != cnf.input_channels or getattr(cnf, "keep_expand", False)
        if self.has_expand and hidden == cnf.input_channels:
            expand = Conv2dNormActivation(hidden, hidden, kernel_size=1, norm_layer=norm_layer,
                                          activation_layer=nn.SiLU)
            self.block = nn.Sequential(expand, *self.block)
        self.cin, self.cout, self.hidden = cnf.input_channels, cnf.out_channels, hidden
        self.kernel, self.stride = cnf.kernel, cnf.stride
        self.residual = self.use_res_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's block in training; in eval mode the same values with the
        squeeze-excitation as :meth:`ElasticMBConv._folded_forward` runs it (a mean, two
        ``F.linear`` on the pooled vector), so the static and the elastic networks take the
        same inference path (issue 23: their latencies are compared)."""
        if self.training:
            return super().forward(x)
        h = x
        for layer in self.block:
            h = squeeze_excite(h, layer) if isinstance(layer, SqueezeExcitation) else layer(h)
        return h.add_(x) if self.residual else h  # h: the projection's fresh output


def squeeze_excite(h: torch.Tensor, se: SqueezeExcitation) -> torch.Tensor:
    """torchvision's ``SqueezeExcitation`` (SiLU, sigmoid, plain ``nn.Conv2d`` layers), with
    its 1×1 convolutions run as ``F.linear`` on the ``(B, C)`` mean: the same values, cheaper
    on small batches. While a cost meter is active, or for any other excitation (another
    activation, wrapped convolutions such as ResQ's, an unbatched map), the module itself runs,
    so the meter's hooks count it exactly as before (a nested meter under a
    ``counts_own_cost`` parent, as LiteEval's extractor, is not counted twice)."""
    plain = (type(se.fc1) is nn.Conv2d and type(se.fc2) is nn.Conv2d and isinstance(se.activation, nn.SiLU)
             and isinstance(se.scale_activation, nn.Sigmoid))
    if not plain or h.dim() != 4 or metering():
        return se(h)
    return _excite(h, se.fc1.weight.flatten(1), se.fc1.bias, se.fc2.weight.flatten(1), se.fc2.bias)


def _excite(h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Squeeze-excitation of ``h (B, C, H, W)`` with its 1×1 convolutions as matrices: the
    ``(B, C)`` mean through ``F.linear``, SiLU, ``F.linear``, sigmoid, and ``h`` scaled in
    place (callers pass a tensor their block has just made, never its input)."""
    s = F.silu(F.linear(h.mean((2, 3)), w1, b1), inplace=True)
    return h.mul_(torch.sigmoid_(F.linear(s, w2, b2)).view(*h.shape[:2], 1, 1))


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, n: int, training: bool, mean: torch.Tensor | None = None,
        var: torch.Tensor | None = None) -> torch.Tensor:
    """BatchNorm over the first ``n`` channels with the sliced statistics (or ``mean``/``var``,
    views that training updates in place) and affine."""
    rm = mean if mean is not None else (bn.running_mean[:n] if bn.running_mean is not None else None)
    rv = var if var is not None else (bn.running_var[:n] if bn.running_var is not None else None)
    factor = bn.momentum if bn.momentum is not None else 0.0
    if training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average, as nn.BatchNorm2d (BN recalibration uses it)
            factor = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, rm, rv, bn.weight[:n], bn.bias[:n], training or not bn.track_running_stats, factor, bn.eps)


class ElasticMBConv(MBConv):
    """An MBConv6 block of the supernet: ``forward(x, hidden)`` runs the first ``hidden``
    channels of its weights (``hidden = cin × ratio``) and records the MACs it ran.

    :meth:`add_width_statistics` gives it private BatchNorm statistics per expansion ratio
    ("switchable BN", Yu et al., Slimmable Networks): once ``width_stats_ready`` is set, a
    ratio normalizes with, and in training updates, its own statistics, while the affine
    weights stay shared."""

    counts_own_cost = True

    def add_width_statistics(self) -> None:
        """Buffers ``width_mean``/``width_var`` (expand, depthwise, project BN × ratio × channel)
        and ``width_stats_ready``; unused until ready."""
        c = max(self.hidden, self.cout)
        self.register_buffer("width_mean", torch.zeros(3, len(RATIOS), c))
        self.register_buffer("width_var", torch.ones(3, len(RATIOS), c))
        self.register_buffer("width_stats_ready", torch.zeros((), dtype=torch.bool))
        # training updates of each ratio's statistics since the last reset, in batches' worth of
        # samples (an update from 2 rows of a batch of 8 counts 0.25). Host floats, not a buffer:
        # no kernel per forward, no DDP broadcast, not checkpointed (a stage resumes at an
        # epoch's start, where its owner resets them; see ANT's refresh)
        self.width_updates = [0.0] * len(RATIOS)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._unfold()  # the folded weights were made from the weights being replaced
        # a checkpoint from before the width statistics existed: they start unused (not ready)
        for name in ("width_mean", "width_var", "width_stats_ready"):
            if hasattr(self, name) and prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.__dict__.pop("_ready_host", None)  # read again from the loaded buffer

    def set_width_stats_ready(self, ready: bool) -> None:
        """Switch the per-ratio statistics on or off (the buffer, checkpointed, and its host copy)."""
        self._unfold()  # folded with the other statistics
        self.width_stats_ready.fill_(ready)
        self._ready_host = bool(ready)

    def stats_ready(self) -> bool:
        """``width_stats_ready``, read to the host once per change (set, state-dict load) rather
        than in each of the block's three BatchNorms on every forward: on a GPU each read is a
        synchronisation, 3 per block and frame."""
        ready = self.__dict__.get("_ready_host")
        if ready is None:
            buffer = getattr(self, "width_stats_ready", None)
            ready = self._ready_host = buffer is not None and bool(buffer)
        return ready

    def _bns(self) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm2d]:
        return self.block[0][1], self.block[1][1], self.block[3][1]

    @torch.no_grad()
    def store_width_statistics(self, ratio: int) -> None:
        """Copy the shared BatchNorm statistics (e.g. just recalibrated at ``ratio``) into ``ratio``'s row."""
        k = RATIOS.index(ratio)
        for i, bn in enumerate(self._bns()):
            c = bn.running_mean.numel()
            self.width_mean[i, k, :c] = bn.running_mean
            self.width_var[i, k, :c] = bn.running_var

    def _ratio_index(self, n: int) -> int:
        if n % self.cin or n // self.cin not in RATIOS:
            raise ValueError(f"width statistics exist for ratios {RATIOS}; hidden width {n} is cin {self.cin} × "
                             f"{n / self.cin:g}")
        return RATIOS.index(n // self.cin)

    def _stats(self, i: int, n: int, channels: int):
        if not self.stats_ready():
            return None, None
        k = self._ratio_index(n)
        return self.width_mean[i, k, :channels], self.width_var[i, k, :channels]

    @torch.no_grad()
    def fold_batchnorm_(self) -> None:
        """Inference (:func:`dynvid.backbones.fuse.fold_batchnorm`): for every ratio, the three
        convolutions' sliced weights with that width's eval-mode BatchNorms folded in (its own
        statistics once ``width_stats_ready``, else the shared ones sliced), and the
        squeeze-excitation's sliced weights, each made contiguous once, kept as
        non-persistent buffers (``.to()`` moves them, checkpoints do not hold them). From then
        on the block runs the folded weights, in eval mode only; loading a state dict or
        switching the width statistics drops them (the block runs its BatchNorms again)."""
        expand, dw, _, project = self.block
        folded = {}
        for ratio in RATIOS:
            n = self.cin * ratio
            if n > self.hidden:
                continue
            weights = []
            parts = ((expand[0].weight[:n], expand[1], n), (dw[0].weight[:n], dw[1], n),
                     (project[0].weight[:, :n], project[1], self.cout))
            for i, (conv, bn, channels) in enumerate(parts):
                mean, var = self._stats(i, n, channels)
                w, b = folded_conv(conv, bn, bn.running_mean[:channels] if mean is None else mean,
                                   bn.running_var[:channels] if var is None else var)
                weights += [w.contiguous(), b]
            se = self.block[2]
            # the squeeze-excitation's 1×1 convs run on a pooled vector: kept as matrices for F.linear
            weights += [se.fc1.weight[:, :n].flatten(1).contiguous(), se.fc2.weight[:n].flatten(1).contiguous(),
                        se.fc2.bias[:n].contiguous()]
            for k, w in enumerate(weights):
                self.register_buffer(f"folded{n}_{k}", w, persistent=False)
            folded[n] = len(weights)
        self._folded_widths = folded

    def _unfold(self) -> None:
        """Drop the folded weights (new weights or statistics would make them stale): the block
        runs its BatchNorms again."""
        for n, count in (self.__dict__.get("_folded_widths") or {}).items():
            for k in range(count):
                delattr(self, f"folded{n}_{k}")
        self._folded_widths = None

    def _folded(self, n: int) -> list[torch.Tensor]:
        if self.training:
            raise RuntimeError("this block's BatchNorms are folded (fold_batchnorm): inference (eval mode) only")
        if n not in self._folded_widths:
            raise ValueError(f"the folded block holds hidden widths {sorted(self._folded_widths)} (cin {self.cin} "
                             f"× ratios {RATIOS}), got {n}")
        return [getattr(self, f"folded{n}_{k}") for k in range(self._folded_widths[n])]

    def forward(self, x: torch.Tensor, hidden: int | None = None, rows: torch.Tensor | None = None,
                batch: int | None = None) -> torch.Tensor:
        """``rows``/``batch``: ``x`` holds rows ``rows`` of a batch of ``batch`` samples (a
        sub-batch that chose this width): the cost is recorded for those samples only."""
        n = self.hidden if hidden is None else hidden
        if not 1 <= n <= self.hidden:
            raise ValueError(f"hidden width must be in [1, {self.hidden}], got {n}")
        expand, dw, se, project = self.block
        folded = self._folded(n) if self.__dict__.get("_folded_widths") is not None else None
        pad = (self.kernel - 1) // 2
        if folded is None:
            if self.training and self.stats_ready():  # this forward moves ratio n/cin's statistics once
                self.width_updates[self._ratio_index(n)] += 1.0 if batch is None else len(x) / batch
            h = F.conv2d(x, expand[0].weight[:n])
            h = F.silu(_bn(h, expand[1], n, self.training, *self._stats(0, n, n)))
            h = F.conv2d(h, dw[0].weight[:n], None, self.stride, pad, groups=n)
            h = F.silu(_bn(h, dw[1], n, self.training, *self._stats(1, n, n)))
            s = F.adaptive_avg_pool2d(h, 1)
            s = F.silu(F.conv2d(s, se.fc1.weight[:, :n], se.fc1.bias))
            h = h * torch.sigmoid(F.conv2d(s, se.fc2.weight[:n], se.fc2.bias[:n]))
            out = _bn(F.conv2d(h, project[0].weight[:, :n]), project[1], self.cout, self.training,
                      *self._stats(2, n, self.cout))
        else:
            out = self._folded_forward(x, folded, n, pad)
        macs = mbconv_macs(self.cin, self.cout, 0, self.kernel, self.stride, x.shape[-2], x.shape[-1], hidden=n)
        if rows is not None:
            per_sample = torch.zeros(batch, dtype=torch.float64)
            per_sample[rows if rows.device.type == "cpu" else rows.cpu()] = float(macs)  # callers pass host rows
            record_cost(self, per_sample)
        else:
            record_cost(self, macs)
        if folded is not None:  # eval only: stochastic depth is the identity, ``out`` a fresh tensor
            return out.add_(x) if self.residual else out
        return self.stochastic_depth(out) + x if self.residual else out  # identity outside training

    def _folded_forward(self, x: torch.Tensor, folded: list[torch.Tensor], n: int, pad: int) -> torch.Tensor:
        """The folded block up to its projection (issue 23: the same values in fewer, cheaper
        operations). Each SiLU and the excitation's scaling overwrite a tensor the block has
        just made (the frame's input is never written; autograd accepts these in-place ops on
        convolution outputs); the squeeze-excitation pools with a mean and runs its two 1×1
        convolutions, on a ``(B, n)`` vector, as ``F.linear`` (at batch 1 on one core a
        convolution on a 1×1 map took ~3× a linear's time). ANT's D0 at 192², batch 1, one
        core, old and new paths interleaved in one process: 14.8 → 14.2 ms."""
        h = F.silu(F.conv2d(x, folded[0], folded[1]), inplace=True)
        h = F.silu(F.conv2d(h, folded[2], folded[3], self.stride, pad, groups=n), inplace=True)
        h = _excite(h, folded[6], self.block[2].fc1.bias, folded[7], folded[8])
        return F.conv2d(h, folded[4], folded[5])


def mbconv_macs(cin: int, cout: int, ratio: float, kernel: int, stride: int, height: int, width: int,
                hidden: int | None = None) -> int:
    """MACs of one MBConv on an ``height × width`` input with hidden width ``cin · ratio``:
    expand 1×1, depthwise ``k×k`` (at the output size), SE (two 1×1 on the pooled vector),
    project 1×1."""
    n = hidden if hidden is not None else int(round(cin * ratio))
    pad = (kernel - 1) // 2
    oh, ow = (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1
    squeeze = max(1, cin // 4)
    return (conv_macs(cin, n, 1, (height, width)) + conv_macs(n, n, kernel, (oh, ow), groups=n)
            + 2 * n * squeeze + conv_macs(n, cout, 1, (oh, ow)))


def scaled_channels(channels: int, width_mult: float = 1.0, divisor: int = 8) -> int:
    """``channels × width_mult`` rounded to a multiple of ``divisor``, never below 90% of it
    (the EfficientNet/MobileNet rule); ANT's D0+ widens every backbone channel by 1.1."""
    if width_mult == 1.0:
        return channels
    v = channels * width_mult
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def stage_ratios(ratios: Sequence[int] | None) -> tuple[int, ...]:
    ratios = tuple(ratios) if ratios is not None else (6,) * 6
    if len(ratios) != 6 or any(r not in RATIOS for r in ratios):
        raise ValueError(f"ratios must be 6 expansion ratios, one per MBConv6 stage, each in {RATIOS}; got {ratios}")
    return ratios


class EfficientNet(tv_efficientnet.EfficientNet):
    """torchvision's EfficientNet built from B0's table with one expansion ratio per MBConv6
    stage; returns logits. Keys, initialisation and the forward at ratios all 6 are
    torchvision's ``efficientnet_b0``'s.

    Args:
        num_classes: classifier outputs.
        expand_ratios: the ratio of each of the six MBConv6 stages (B0: all 6).
        dropout: before the classifier (torchvision: 0.2).
        width_mult: every channel count × this (rounded to multiples of 8; ANT's D0+: 1.1).
        stochastic_depth_prob: the last block's drop probability in training, linear in depth
            (torchvision's B0: 0.2; 0 turns it off).
    """

    takes_clips = False
    block_class = MBConv

    def __init__(self, num_classes: int = 1000, expand_ratios: Sequence[int] | None = None, dropout: float = 0.2,
                 width_mult: float = 1.0, stochastic_depth_prob: float = 0.2) -> None:
        ratios = stage_ratios(expand_ratios)
        settings, cin = [], scaled_channels(STEM, width_mult)
        for i, (t, k, s, c, n) in enumerate(B0_STAGES):
            c = scaled_channels(c, width_mult)  # channels already scaled: the configuration's multiplier is 1
            settings.append(_StageConfig(t if i == 0 else ratios[i - 1], k, s, cin, c, n,
                                         block=MBConv if i == 0 else self.block_class, keep_expand=i > 0))
            cin = c
        head = scaled_channels(HEAD, width_mult)
        super().__init__(settings, dropout, stochastic_depth_prob, num_classes, last_channel=head)
        self.num_features = head
        self.ratios, self.width_mult, self.stochastic_depth_prob = ratios, width_mult, stochastic_depth_prob

    def stage_features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """The outputs of the stem, the seven stages and the head conv (strides 2 … 32); with
        ``upto`` only those of ``features[:upto]`` (the rest is not computed)."""
        outs = []
        for layer in self.features[:upto]:
            x = layer(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class EfficientNetSupernet(EfficientNet):
    """EfficientNet-B0 whose six MBConv6 stages run any ratio in {1, …, 6} on shared weights.

    ``forward(x, ratios)`` / ``stage_features(x, ratios)`` with ``ratios`` one per stage
    (None: all 6, the full network). Keys equal :class:`EfficientNet`'s at ratio 6.
    """

    block_class = ElasticMBConv

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, width_mult: float = 1.0,
                 stochastic_depth_prob: float = 0.2) -> None:
        super().__init__(num_classes, None, dropout, width_mult, stochastic_depth_prob)

    def stage_features(self, x: torch.Tensor, ratios: Sequence[int] | None = None,
                       upto: int | None = None, start: int = 0) -> list[torch.Tensor]:
        """The outputs of ``features[start:upto]`` on ``x`` (the input of ``features[start]``,
        e.g. a stem output already computed) at the configuration ``ratios``."""
        ratios = stage_ratios(ratios)
        outs = []
        for i, layer in enumerate(self.features[:upto]):
            if i < start:
                continue
            if 2 <= i <= 7:
                for block in layer:
                    x = block(x, block.cin * ratios[i - 2])
            else:
                x = layer(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor, ratios: Sequence[int] | None = None) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.stage_features(x, ratios)[-1], 1), 1)

    def forward(self, x: torch.Tensor, ratios: Sequence[int] | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, ratios))

    def subnet(self, ratios: Sequence[int]) -> EfficientNet:
        """The standalone network of configuration ``ratios`` holding this supernet's sliced weights."""
        ratios = stage_ratios(ratios)
        net = EfficientNet(self.classifier[1].out_features, ratios, self.classifier[0].p, self.width_mult,
                           self.stochastic_depth_prob)
        own = self.state_dict()
        sliced = {}
        for key, target in net.state_dict().items():
            src = own[key]
            if src.shape != target.shape:
                src = src[tuple(slice(0, d) for d in target.shape)] if src.dim() else src
            sliced[key] = src.clone()
        net.load_state_dict(sliced)
        return net


def supernet_macs(ratios: Sequence[int] | None, height: int = 224, width: int = 224, num_classes: int = 1000,
                  width_mult: float = 1.0, head: bool = True) -> int:
    """MACs of the configuration ``ratios`` at ``height × width``: stem, MBConv blocks by
    :func:`mbconv_macs` (the MBConv1 stage has no expand conv), head conv and classifier
    (``head=False``: up to the last MBConv stage, as a detector's backbone runs)."""
    ratios = stage_ratios(ratios)
    h, w = (height + 1) // 2, (width + 1) // 2
    cin = scaled_channels(STEM, width_mult)
    total = conv_macs(3, cin, 3, (h, w))
    for i, (t, k, s, c, n) in enumerate(B0_STAGES):
        c = scaled_channels(c, width_mult)
        for j in range(n):
            stride = s if j == 0 else 1
            if i == 0:
                total += mbconv_macs(cin, c, t, k, stride, h, w) - conv_macs(cin, cin * t, 1, (h, w))
            else:
                total += mbconv_macs(cin, c, ratios[i - 1], k, stride, h, w)
            h, w = (h + 2 * ((k - 1) // 2) - k) // stride + 1, (w + 2 * ((k - 1) // 2) - k) // stride + 1
            cin = c
    if not head:
        return total
    last = scaled_channels(HEAD, width_mult)
    return total + conv_macs(cin, last, 1, (h, w)) + last * num_classes


def efficientnet_b0(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> EfficientNet:
    """EfficientNet-B0 (5.29 M parameters, 0.39 GMACs at 224×224 for 1000 classes)."""
    if width_mult != 1.0:
        raise ValueError(f"efficientnet_b0 has no width multiplier here (ANT varies expansion ratios); got {width_mult}")
    return EfficientNet(num_classes, **kwargs)
