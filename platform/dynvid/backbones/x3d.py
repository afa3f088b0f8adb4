"""X3D-M: Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition",
CVPR 2020 (Sec. 3, Table 1), with the non-linearities of the VA-RED² thesis (Sec. 4.2).

Table 1 of the paper, for X3D-M (16 frames, 224² or 256² crops; T is never strided):

- conv1: a 1×3×3 conv to 24 channels with spatial stride 2, then a depthwise 5×1×1
  temporal conv (the reference code's stem: no BN between the two, BN + ReLU after);
- res2..res5: 3, 5, 11, 7 bottleneck blocks of widths 24, 48, 96, 192, with inner
  (expanded) widths 54, 108, 216, 432 (2.25×); each block is 1×1×1 conv → 3×3×3
  depthwise conv (spatial stride 2 in the first block of each stage) → SE → 1×1×1 conv,
  with a residual that is projected (1×1×1 conv + BN) where the shape changes;
- Squeeze-Excitation with ratio 1/16 after the depthwise conv of every other block,
  starting with the first (the paper's implementation details and reference code);
- conv5 1×1×1 to 432, global average pool, fc1 to 2048 (no BN; bias-free as in the
  reference code) + ReLU, dropout, fc to the classes.

Non-linearities. X3D applies swish after the depthwise conv of every block (right
after the SE where there is one) and ReLU elsewhere. The VA-RED² thesis (Sec. 4.2):
"we remove all the swish non-linearity except those in SE layer". So the swish that
follows an SE is kept and is part of :class:`SqueezeExcitation` here; blocks without
SE use ReLU in its place, and everything else is ReLU, as in X3D.

Channel rounding. Table 1's numbers are used as they are (width_mult=1 gives exactly
24/54/…); a width multiplier rounds each count to the nearest integer. The only
multiple-of-8 rounding is the SE's hidden width (1/16 of the inner width, rounded to
a multiple of 8, at least 8: 8, 8, 16, 32 for res2..res5), as in the X3D reference
code (the paper gives only the ratio); against exact 1/16 widths it adds 24 k
parameters (0.6 %) and a negligible number of MACs (SE acts on pooled vectors).

Cost (counted by ``dynvid.metrics.cost``, 1 FLOP = 1 MAC, 400 classes): 4.732 GMACs
at 3×16×224×224 and 6.181 GMACs at 3×16×256×256, 3.79 M parameters. That matches
the paper's 4.73 GFLOPs at 16×224² (Table 2) and 6.2 GFLOPs / 3.8 M parameters at
16×256² (Table 3; 6.20 in the VA-RED² thesis, Table 4.2, at 256² per its Sec. 4.4), to
within 0.3 %: X3D's "FLOPs" are multiply-adds, the convention of this meter.

Input ``(B, 3, T, H, W)``; the stem and each of res2..res5 halve H and W; T is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dynvid.backbones._common import ClipBackbone, check_builder_args

__all__ = ["SqueezeExcitation", "X3D", "X3DBlock", "X3DStem", "x3d_m"]

# X3D-M, Table 1. A width multiplier scales all channel counts.
STEM_CHANNELS = 24
STAGE_DEPTHS = (3, 5, 11, 7)
STAGE_CHANNELS = (24, 48, 96, 192)
BOTTLENECK_EXPANSION = 2.25  # inner width = 2.25 × block width (54, 108, 216, 432)
HEAD_CHANNELS = 2048  # fc1
STEM_TEMPORAL_KERNEL = 5
SE_RATIO = 1 / 16


def _scaled(channels: float, width_mult: float = 1.0) -> int:
    """``channels * width_mult`` rounded to the nearest integer, at least 1."""
    return max(1, int(round(channels * width_mult)))


def se_channels(channels: int, ratio: float = SE_RATIO, divisor: int = 8) -> int:
    """Hidden width of an SE module: ``channels * ratio`` rounded to a multiple of ``divisor``.

    The X3D reference rounding: to the nearest multiple, at least ``divisor``, and one
    multiple more if rounding lost over 10 %.
    """
    value = channels * ratio
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcitation(nn.Module):
    """Squeeze-Excitation (Hu et al., CVPR 2018) followed by swish.

    ``swish(x * sigmoid(fc2(relu(fc1(avgpool(x))))))``. The 1×1×1 convs act on the
    pooled ``(B, C, 1, 1, 1)`` vector (the reference code's form). The trailing swish
    is X3D's inner non-linearity, which the VA-RED² thesis keeps only after SE layers
    (see the module docstring).

    Args:
        channels: input and output channels.
        hidden: channels of the bottleneck between the two 1×1×1 convs.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv3d(hidden, channels, 1, bias=True)
        self.gate = nn.Sigmoid()
        self.swish = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return self.swish(x * scale)


class X3DBlock(nn.Module):
    """X3D bottleneck: ``relu(bn_c(conv_c(act_b(bn_b(conv_b(relu(bn_a(conv_a(x)))))))) + shortcut(x))``.

    ``conv_a`` 1×1×1 expands to ``inner`` channels, ``conv_b`` is a 3×3×3 depthwise conv
    (``groups=inner``) carrying the spatial stride, ``conv_c`` 1×1×1 projects to
    ``out_channels``. ``act_b`` is :class:`SqueezeExcitation` (which ends in swish) when
    ``se_hidden > 0``, else ReLU.

    Args:
        in_channels: block input channels.
        out_channels: block output channels.
        inner: expanded channels of the depthwise conv.
        spatial_stride: stride of ``conv_b`` and of the shortcut projection in H and W.
        se_hidden: hidden width of the SE module; 0 for a block without SE.
    """

    def __init__(
        self, in_channels: int, out_channels: int, inner: int, spatial_stride: int = 1, se_hidden: int = 0
    ) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.conv_a = nn.Conv3d(in_channels, inner, 1, bias=False)
        self.bn_a = nn.BatchNorm3d(inner)
        self.relu_a = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(inner, inner, 3, stride=stride, padding=1, groups=inner, bias=False)
        self.bn_b = nn.BatchNorm3d(inner)
        self.act_b: nn.Module = SqueezeExcitation(inner, se_hidden) if se_hidden > 0 else nn.ReLU(inplace=True)
        self.conv_c = nn.Conv3d(inner, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Sequential | None = None
        if spatial_stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.relu_a(self.bn_a(self.conv_a(x)))
        out = self.act_b(self.bn_b(self.conv_b(out)))
        out = self.bn_c(self.conv_c(out))
        return self.relu(out + shortcut)


class X3DStem(nn.Module):
    """1×3×3 conv (spatial stride 2), depthwise 5×1×1 temporal conv, BN, ReLU.

    As in the reference code, there is no BN/ReLU between the two convs: together they
    are one factored 5×3×3 conv.

    Args:
        out_channels: channels of both convs.
        temporal_kernel: kernel length of the depthwise temporal conv.
    """

    def __init__(self, out_channels: int, temporal_kernel: int = STEM_TEMPORAL_KERNEL) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(3, out_channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(
            out_channels,
            out_channels,
            (temporal_kernel, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            groups=out_channels,
            bias=False,
        )
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv_t(self.conv_xy(x))))


class X3D(ClipBackbone, nn.Module):
    """X3D network: stem, four stages of bottlenecks, conv5, pool, fc1 + ReLU, dropout, fc.

    :meth:`features` returns the fc1 activations (``num_features``, 2048 at
    ``width_mult=1``), so that ``forward(x) == fc(dropout(features(x)))`` and ``fc`` is
    the final classifier, like the other backbones.

    Args:
        stage_depths: blocks in res2..res5 (``(3, 5, 11, 7)`` is X3D-M).
        num_classes: outputs of the final linear layer; the model returns logits.
        width_mult: multiplier on every channel count (1.0 = Table 1's numbers),
            rounded to the nearest integer.
        dropout: dropout probability in front of ``fc`` (0.5 in the X3D recipe).
        zero_init_residual: zero the last BN of each block so blocks start as identity
            (the X3D training recipe does this).
    """

    def __init__(
        self,
        stage_depths: Sequence[int] = STAGE_DEPTHS,
        num_classes: int = 400,
        width_mult: float = 1.0,
        dropout: float = 0.5,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_builder_args(width_mult, num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if len(stage_depths) != len(STAGE_CHANNELS) or min(stage_depths) < 1:
            raise ValueError(f"stage_depths needs {len(STAGE_CHANNELS)} entries >= 1, got {tuple(stage_depths)}")

        self.stem = X3DStem(_scaled(STEM_CHANNELS, width_mult))
        in_channels = self.stem.conv_xy.out_channels
        stages = []
        for width, depth in zip(STAGE_CHANNELS, stage_depths):
            out_channels = _scaled(width, width_mult)
            inner = _scaled(BOTTLENECK_EXPANSION * out_channels)
            blocks = []
            for index in range(depth):
                blocks.append(
                    X3DBlock(
                        in_channels,
                        out_channels,
                        inner,
                        spatial_stride=2 if index == 0 else 1,
                        # SE in every other block, starting with the first.
                        se_hidden=se_channels(inner) if index % 2 == 0 else 0,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.res2, self.res3, self.res4, self.res5 = stages

        head_inner = _scaled(BOTTLENECK_EXPANSION * in_channels)  # 432 at width_mult=1
        self.conv5 = nn.Sequential(
            nn.Conv3d(in_channels, head_inner, 1, bias=False),
            nn.BatchNorm3d(head_inner),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = _scaled(HEAD_CHANNELS, width_mult)
        # No BN after fc1 and hence no bias either: the reference code's head.
        self.fc1 = nn.Linear(head_inner, self.num_features, bias=False)
        self.fc1_relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He init for convs (the reference code's c2_msra_fill), small normal for the head.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, X3DBlock):
                    nn.init.zeros_(m.bn_c.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc1 activations: ``(B, 3, T, H, W) -> (B, num_features)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"X3D expects input (B, 3, T, H, W), got shape {tuple(x.shape)}")
        x = self.stem(x)
        x = self.res5(self.res4(self.res3(self.res2(x))))
        x = torch.flatten(self.avgpool(self.conv5(x)), 1)
        return self.fc1_relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (no softmax)."""
        return self.fc(self.dropout(self.features(x)))


def x3d_m(
    num_classes: int = 400, width_mult: float = 1.0, dropout: float = 0.5, zero_init_residual: bool = False
) -> X3D:
    """X3D-M (3.79 M parameters, 4.73 GMACs at 3×16×224×224 and 6.18 at 3×16×256×256).

    Args: see :class:`X3D`.
    """
    return X3D(STAGE_DEPTHS, num_classes, width_mult, dropout, zero_init_residual)
