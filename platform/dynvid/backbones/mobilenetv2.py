"""MobileNetV2 (Sandler et al., CVPR 2018), a 2-D frame backbone: torchvision's network.

LiteEval's coarse CNN (Sec. 4.1: MobileNetV2 on 112×112 frames, 0.08 GFLOPs) and Looking
Fast and Slow's extractors use it. :class:`MobileNetV2` *is* ``torchvision.models.MobileNetV2``
(same modules, state-dict keys, width rule ``_make_divisible(c * width_mult, 8)`` and
initialisation, so torchvision's ImageNet weights load directly); dynvid adds only what it
needs: ``last_stride`` (Looking Fast and Slow's f1 removes the stride of the 160-channel
stage), the split into ``forward_features`` / ``forward_head`` and ``num_features``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv
from torchvision.ops import Conv2dNormActivation

from dynvid.backbones._common import check_builder_args

__all__ = ["ConvBNReLU", "MobileNetV2", "make_divisible", "mobilenet_v2"]

# t (expansion), c (output channels), n (repeats), s (first stride): Table 2 of the paper
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: the nearest multiple of ``divisor``, never 10% below ``value``."""
    return tv._make_divisible(value, divisor)


def ConvBNReLU(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> Conv2dNormActivation:
    """Conv2d → BatchNorm → ReLU6, torchvision's ``Conv2dNormActivation`` (keys ``0``, ``1``)."""
    return Conv2dNormActivation(cin, cout, kernel_size=kernel, stride=stride, groups=groups,
                                activation_layer=nn.ReLU6)


class MobileNetV2(tv.MobileNetV2):
    """torchvision's MobileNetV2 for ``(B, 3, H, W)`` frames; returns logits.

    Args:
        num_classes: classifier outputs.
        width_mult: channel multiplier (1.4 and 0.35 are Looking Fast and Slow's f0 and f1).
        dropout: dropout before the classifier (torchvision: 0.2).
        last_stride: stride of the 160-channel stage (2 in the paper; Looking Fast and Slow's
            f1 removes it, Sec. 3.1, so its output grid matches f0's at half the input size).
    """

    takes_clips = False  # a frame network: input (B, 3, H, W)

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 last_stride: int = 2) -> None:
        check_builder_args(width_mult, num_classes)
        setting = [[t, c, n, last_stride if c == 160 else s] for t, c, n, s in INVERTED_RESIDUAL_SETTING]
        super().__init__(num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting,
                         dropout=dropout)
        self.num_features = self.last_channel

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: ``(B, 3, H, W) -> (B, num_features)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"MobileNetV2 expects input (B, 3, H, W), got shape {tuple(x.shape)}")
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features."""
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (no softmax)."""
        return self.forward_head(self.forward_features(x))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNetV2 (3.5 M parameters and 0.30 GMACs at 224×224 for 1000 classes; 0.08 GMACs
    at 112×112, LiteEval Sec. 4.1). Args: see :class:`MobileNetV2`."""
    return MobileNetV2(num_classes, width_mult, **kwargs)
