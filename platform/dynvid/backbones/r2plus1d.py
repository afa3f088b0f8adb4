"""R(2+1)D-18: Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", CVPR 2018 (Sec. 3.5, Table 1).

Every 3×3×3 conv of a ResNet-18 is factored into a 1×3×3 spatial conv, BN, ReLU and a
3×1×1 temporal conv, with ``mid`` channels chosen so the pair has about the parameters
of the 3D conv it replaces (Sec. 3.5):

    mid = (in * out * 3*3*3) // (in * 3*3 + 3 * out)

As in torchvision, one ``mid`` is computed per block from (block input, block output)
and used by both of its factored convs.

The blocks are torchvision's (``torchvision.models.video.resnet.BasicBlock`` with
``Conv2Plus1D``); dynvid assembles them with a width multiplier, which torchvision's
``VideoResNet`` and its stem (fixed at 45 → 64 channels) lack, so the stem is dynvid's. At
``width_mult=1`` the network is ``torchvision.models.video.r2plus1d_18`` (same keys, same
outputs: ``tests/backbones/test_torchvision_equality.py``), and its Kinetics-400 checkpoint
loads with ``strict=True``. At 3×16×112×112 the network costs
40.5 GMACs ("GFLOPs" in the video literature, see ``dynvid.metrics.cost``).

Input ``(B, 3, T, H, W)``; the stem halves H and W, layers 2-4 halve T, H and W.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D

from dynvid.backbones._common import ClipBackbone, check_builder_args, init_video_weights

__all__ = ["R2Plus1D", "R2Plus1dStem", "r2plus1d_18"]

# torchvision's channel numbers; a width multiplier scales all of them.
STEM_MID_CHANNELS = 45
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


def _scaled(channels: int, width_mult: float, divisor: int) -> int:
    """Round ``channels * width_mult`` to a multiple of ``divisor``, never below 90 % or 1."""
    value = channels * width_mult
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class R2Plus1dStem(nn.Sequential):
    """Factored 7×7 stem: 1×7×7 spatial conv (stride 2 in H, W), then 3×1×1 temporal conv."""

    def __init__(self, mid: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, (3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class R2Plus1D(ClipBackbone, nn.Module):
    """R(2+1)D network: stem, four stages of basic blocks, global average pool, linear head.

    Args:
        blocks_per_stage: number of basic blocks in layer1..layer4 (``(2, 2, 2, 2)`` is R(2+1)D-18).
        num_classes: outputs of the linear head; the model returns logits.
        width_mult: multiplier on every channel count (1.0 = torchvision's numbers).
        channel_divisor: scaled channel counts are rounded to a multiple of this.
            The default 1 keeps torchvision's numbers at ``width_mult=1``; 8 would
            round the stem's 45 channels to 48 and break checkpoint compatibility.
        zero_init_residual: zero the last BN of each block so blocks start as identity.
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 400,
        width_mult: float = 1.0,
        channel_divisor: int = 1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_builder_args(width_mult, num_classes)
        if len(blocks_per_stage) != len(STAGE_CHANNELS):
            raise ValueError(f"blocks_per_stage needs {len(STAGE_CHANNELS)} entries, got {blocks_per_stage}")
        widths = [_scaled(c, width_mult, channel_divisor) for c in STAGE_CHANNELS]
        self.stem = R2Plus1dStem(_scaled(STEM_MID_CHANNELS, width_mult, channel_divisor), widths[0])
        in_channels = widths[0]
        stages = []
        for width, stride, depth in zip(widths, STAGE_STRIDES, blocks_per_stage):
            downsample = None
            if stride != 1 or in_channels != width:  # torchvision's VideoResNet._make_layer shortcut
                downsample = nn.Sequential(nn.Conv3d(in_channels, width, kernel_size=1, stride=stride, bias=False),
                                           nn.BatchNorm3d(width))
            blocks = [BasicBlock(in_channels, width, Conv2Plus1D, stride, downsample)]
            blocks += [BasicBlock(width, width, Conv2Plus1D) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_video_weights(self)  # torchvision's, so training from scratch behaves the same
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2[1].weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head: ``(B, 3, T, H, W) -> (B, num_features)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"R2Plus1D expects input (B, 3, T, H, W), got shape {tuple(x.shape)}")
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (no softmax)."""
        return self.fc(self.features(x))


def r2plus1d_18(
    num_classes: int = 400,
    width_mult: float = 1.0,
    channel_divisor: int = 1,
    zero_init_residual: bool = False,
) -> R2Plus1D:
    """R(2+1)D-18 (31.5 M parameters, 40.5 GMACs at 3×16×112×112 for 400 classes).

    Args: see :class:`R2Plus1D`.
    """
    return R2Plus1D((2, 2, 2, 2), num_classes, width_mult, channel_divisor, zero_init_residual)
