"""I3D-InceptionV2: the BN-Inception network of Ioffe & Szegedy, "Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", ICML 2015
(Sec. 4.2; layer table in the Appendix, Figure 5), inflated to 3-D as in Carreira &
Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
CVPR 2017 (Sec. 2.4, Figure 3). This is the I3D backbone of VA-RED² (Pan et al.,
ICLR 2021).

BN-Inception is GoogLeNet with batch norm after every conv, the 5×5 branch replaced by
two stacked 3×3 convs ("double 3×3"), and two reduction modules (3c, 4e) that halve
the resolution with stride-2 branches and a max-pool pass-through instead of a
separate pooling layer. Inflation follows I3D:

- conv1 is 7×7×7 with stride 2 in T, H and W;
- the two stem max pools are 1×3×3 with spatial stride 2 (no early temporal pooling,
  I3D Sec. 2.4: pooling time early would merge edges from different objects);
- every 3×3 conv (stem conv2 and the inception branches) becomes 3×3×3, 1×1 stays
  1×1×1, and the pool branches pool 3×3×3 with stride 1;
- the reduction modules 3c and 4e stride 2 in T as well as H and W, so T is divided
  by 8 in all (conv1, 3c, 4e) and H, W by 32, like 2-D BN-Inception.

Every conv is followed by BN and ReLU (:class:`BasicConv3d`); all convs are plain
``nn.Conv3d`` so that dynamic layers can later be swapped in by name.

Cost (counted by ``dynvid.metrics.cost``, 1 FLOP = 1 MAC, 400 classes): 33.03 GMACs
at 3×16×224×224 and 43.14 GMACs at 3×16×256×256, 24.5 M parameters.

No published figure matches within 10 %. The VA-RED² thesis (Tables 4.2/4.5) lists
56.0 GFLOPs for the 16-frame I3D-InceptionV2 at 256×256 (its Sec. 4.4); our count is
23 % below it (and 41 % below at 224×224). Counting 2 MACs per FLOP (86.3 at 256²)
overshoots by 54 %, so the convention does not explain the gap. We have not found the
thesis's layer table; a variant that strides time only in conv1 (3c and 4e striding
H and W only) would count 58.0 GMACs at 256², within 4 % of 56.0, so its network
probably keeps T/2 after the stem. We keep I3D's pacing (Sec. 2.4: time is halved
where Inception-v1 halves space before stages 4 and 5, i.e. at 3c and 4e here) and do
not bend the network to the figure. The other published I3D figure, 107.9 GFLOPs for
64×224×224 (Xie et al., "Rethinking Spatiotemporal Feature Learning", ECCV 2018,
Table 1), is for the Inception-v1 I3D and does not apply (this network counts 132.1
GMACs there).

Input ``(B, 3, T, H, W)``; the stem divides H and W by 4 and T by 2, 3c and 4e each
halve T, H and W.
"""

from __future__ import annotations

import torch
from torch import nn

from dynvid.backbones._common import ClipBackbone, check_builder_args, init_video_weights

__all__ = ["BasicConv3d", "I3D", "InceptionBlock", "ReductionBlock", "i3d"]

STEM_CHANNELS = (64, 64, 192)  # conv1, conv2 reduce (1×1), conv2 (3×3)

# BN-Inception, Figure 5 of Ioffe & Szegedy (2015). A width multiplier scales all of them.
# name: (#1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pool, pool proj)
# Stride-1 modules concatenate all four branches.
INCEPTION_SPECS: dict[str, tuple[int, int, int, int, int, str, int]] = {
    "inception3a": (64, 64, 64, 64, 96, "avg", 32),  # -> 256
    "inception3b": (64, 64, 96, 64, 96, "avg", 64),  # -> 320
    "inception4a": (224, 64, 96, 96, 128, "avg", 128),  # -> 576
    "inception4b": (192, 96, 128, 96, 128, "avg", 128),  # -> 576
    "inception4c": (160, 128, 160, 128, 160, "avg", 128),  # -> 608
    "inception4d": (96, 128, 192, 160, 192, "avg", 128),  # -> 608
    "inception5a": (352, 192, 320, 160, 224, "avg", 128),  # -> 1024
    "inception5b": (352, 192, 320, 192, 224, "max", 128),  # -> 1024
}
# Reduction modules: (#3×3 reduce, #3×3, double #3×3 reduce, double #3×3); the max-pool
# pass-through keeps the input channels, so the output is #3×3 + double #3×3 + input.
REDUCTION_SPECS: dict[str, tuple[int, int, int, int]] = {
    "inception3c": (128, 160, 64, 96),  # 320 -> 576
    "inception4e": (128, 192, 192, 256),  # 608 -> 1056
}
# Order of the modules after the stem.
MODULE_ORDER = (
    "inception3a", "inception3b", "inception3c",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
    "inception5a", "inception5b",
)  # fmt: skip


def _scaled(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded to the nearest integer, at least 1."""
    return max(1, int(round(channels * width_mult)))


class BasicConv3d(nn.Module):
    """``nn.Conv3d`` (no bias: BN follows), ``BatchNorm3d``, ``ReLU``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel in (T, H, W), or one int for all three.
        stride: stride in (T, H, W), or one int for all three.
        padding: zero padding in (T, H, W), or one int for all three.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Stride-1 BN-Inception module: four branches concatenated along channels.

    ``branch1`` 1×1×1; ``branch2`` 1×1×1 reduce then 3×3×3; ``branch3`` 1×1×1 reduce then
    two 3×3×3 (the factored 5×5 of BN-Inception); ``branch4`` 3×3×3 pool then 1×1×1
    projection. Output channels: ``ch1x1 + ch3x3 + ch_double + pool_proj``.

    Args:
        in_channels: input channels.
        ch1x1: channels of the 1×1×1 branch.
        ch3x3_reduce: channels of the reduce conv in front of the 3×3×3 branch.
        ch3x3: channels of the 3×3×3 branch.
        ch_double_reduce: channels of the reduce conv in front of the double 3×3×3 branch.
        ch_double: channels of both 3×3×3 convs of the double branch.
        pool: ``"avg"`` or ``"max"``, the pooling of the pool branch.
        pool_proj: channels of the 1×1×1 projection after the pool.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch_double_reduce: int,
        ch_double: int,
        pool: str,
        pool_proj: int,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.branch1 = BasicConv3d(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv3d(in_channels, ch3x3_reduce, 1),
            BasicConv3d(ch3x3_reduce, ch3x3, 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv3d(in_channels, ch_double_reduce, 1),
            BasicConv3d(ch_double_reduce, ch_double, 3, padding=1),
            BasicConv3d(ch_double, ch_double, 3, padding=1),
        )
        # BN-Inception averages in the pool branch except in the last module (5b). The
        # average includes the zero padding (Caffe's behaviour, in which BN-Inception was
        # trained). The padding is explicit because nn.AvgPool3d refuses inputs smaller
        # than its kernel even when padded, and at 16 frames stage 5 has T = 2.
        pooling: nn.Module = (
            nn.Sequential(nn.ConstantPad3d(1, 0.0), nn.AvgPool3d(3, stride=1))
            if pool == "avg"
            else nn.MaxPool3d(3, stride=1, padding=1)
        )
        self.branch4 = nn.Sequential(pooling, BasicConv3d(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch_double + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class ReductionBlock(nn.Module):
    """BN-Inception reduction module (3c, 4e): halves T, H and W.

    ``branch2`` 1×1×1 reduce then a stride-2 3×3×3; ``branch3`` 1×1×1 reduce, 3×3×3, then a
    stride-2 3×3×3; ``branch4`` a stride-2 3×3×3 max pool that passes the input channels
    through unchanged (no 1×1 branch, no projection; the branch names match
    :class:`InceptionBlock`). Output channels: ``ch3x3 + ch_double + in_channels``.

    Args:
        in_channels: input channels.
        ch3x3_reduce: channels of the reduce conv in front of the 3×3×3 branch.
        ch3x3: channels of the strided 3×3×3 branch.
        ch_double_reduce: channels of the reduce conv in front of the double branch.
        ch_double: channels of both 3×3×3 convs of the double branch.
    """

    def __init__(
        self, in_channels: int, ch3x3_reduce: int, ch3x3: int, ch_double_reduce: int, ch_double: int
    ) -> None:
        super().__init__()
        self.branch2 = nn.Sequential(
            BasicConv3d(in_channels, ch3x3_reduce, 1),
            BasicConv3d(ch3x3_reduce, ch3x3, 3, stride=2, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv3d(in_channels, ch_double_reduce, 1),
            BasicConv3d(ch_double_reduce, ch_double, 3, padding=1),
            BasicConv3d(ch_double, ch_double, 3, stride=2, padding=1),
        )
        # Same kernel, stride and padding as the strided convs, so all three branches
        # have the same output size for any input size.
        self.branch4 = nn.MaxPool3d(3, stride=2, padding=1)
        self.out_channels = ch3x3 + ch_double + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class I3D(ClipBackbone, nn.Module):
    """I3D-InceptionV2: 3-D stem, ten BN-Inception modules, global average pool, dropout, linear head.

    Attributes ``conv1 … pool2`` are the stem, ``inception3a … inception5b`` the
    modules in order (see ``MODULE_ORDER``); ``fc`` is the classifier on
    ``num_features`` (1024 at ``width_mult=1``) pooled features.

    Args:
        num_classes: outputs of the linear head; the model returns logits.
        width_mult: multiplier on every channel count (1.0 = BN-Inception's numbers),
            rounded to the nearest integer.
        dropout: dropout probability in front of the head (I3D trains with dropout there).
    """

    def __init__(self, num_classes: int = 400, width_mult: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        check_builder_args(width_mult, num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        def w(channels: int) -> int:
            return _scaled(channels, width_mult)

        c1, c2_reduce, c2 = (w(c) for c in STEM_CHANNELS)
        # Stem. conv1 strides T too (I3D Fig. 3); the pools stride only H and W.
        self.conv1 = BasicConv3d(3, c1, 7, stride=2, padding=3)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.conv2_reduce = BasicConv3d(c1, c2_reduce, 1)
        self.conv2 = BasicConv3d(c2_reduce, c2, 3, padding=1)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

        in_channels = c2
        for name in MODULE_ORDER:
            block: InceptionBlock | ReductionBlock
            if name in REDUCTION_SPECS:
                block = ReductionBlock(in_channels, *(w(c) for c in REDUCTION_SPECS[name]))
            else:
                *widths, pool, pool_proj = INCEPTION_SPECS[name]
                ch1x1, ch3x3_reduce, ch3x3, ch_double_reduce, ch_double = (w(c) for c in widths)
                block = InceptionBlock(
                    in_channels, ch1x1, ch3x3_reduce, ch3x3, ch_double_reduce, ch_double, pool, w(pool_proj)
                )
            self.add_module(name, block)
            in_channels = block.out_channels

        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        init_video_weights(self)  # the same scheme as the other backbones (torchvision's video ResNets)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head: ``(B, 3, T, H, W) -> (B, num_features)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects input (B, 3, T, H, W), got shape {tuple(x.shape)}")
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.conv2_reduce(x)))
        for name in MODULE_ORDER:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (no softmax)."""
        return self.fc(self.dropout(self.features(x)))


def i3d(num_classes: int = 400, width_mult: float = 1.0, dropout: float = 0.5) -> I3D:
    """I3D-InceptionV2 (24.5 M parameters, 33.0 GMACs at 3×16×224×224 for 400 classes).

    Args: see :class:`I3D`.
    """
    return I3D(num_classes, width_mult, dropout)
