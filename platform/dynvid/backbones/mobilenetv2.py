"""MobileNetV2 (Sandler et al., CVPR 2018), a 2-D frame backbone.

LiteEval's coarse CNN (Sec. 4.1: MobileNetV2 on 112×112 frames, 0.08 GFLOPs) and Looking
Fast and Slow's extractors use it. The layout and state-dict keys are torchvision's
``mobilenet_v2`` (``features.{i}``, ``classifier.1``), so its ImageNet checkpoint loads
directly; channel counts follow torchvision's ``_make_divisible(c * width_mult, 8)``.
"""

from __future__ import annotations

import torch
from torch import nn

from dynvid.backbones._common import check_builder_args

__all__ = ["MobileNetV2", "mobilenet_v2"]

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
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going 10% below it
    (the rule of the TensorFlow and torchvision MobileNets)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNReLU(nn.Sequential):
    """Conv2d → BatchNorm → ReLU6 (keys ``0``, ``1``, as torchvision's Conv2dNormActivation)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand 1×1 (if t > 1) → depthwise 3×3 → linear 1×1 projection; identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for ``(B, 3, H, W)`` frames; returns logits.

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
        super().__init__()
        check_builder_args(width_mult, num_classes)
        cin = make_divisible(STEM_CHANNELS * width_mult)
        last = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = make_divisible(c * width_mult)
            if c == 160:
                s = last_stride
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNReLU(cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.num_features = last
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:  # torchvision's scheme
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

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
