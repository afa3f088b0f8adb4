"""ResNet-18/34/50/101 (He et al., CVPR 2016), 2-D frame backbones.

LiteEval's fine CNN is a ResNet-101 on 224×224 frames (Sec. 4.1: 7.82 GFLOPs per frame,
features from the penultimate layer). The layout and state-dict keys are torchvision's
``resnet*`` (``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1,2,3}``, ``downsample.{0,1}``, ``fc``),
the ResNet v1.5 variant (stride on the 3×3 convolution of a bottleneck), so its ImageNet
checkpoints load directly. The blocks are torchvision's (``BasicBlock``, ``Bottleneck``); dynvid
assembles them with ``width_mult``, which scales every stage's width and the stem (1.0 = the
paper's; torchvision's ``ResNet`` fixes them at 64–512), and splits features from the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchvision.models.resnet import BasicBlock, Bottleneck

from dynvid.backbones._common import check_builder_args

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101"]

STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(nn.Module):
    """ResNet for ``(B, 3, H, W)`` frames; returns logits.

    Args:
        block: torchvision's ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        num_classes: classifier outputs.
        width_mult: multiplier of every stage width (and of the 64-channel stem).
        zero_init_residual: zero the last BN of each block (torchvision's option).
    """

    takes_clips = False  # a frame network: input (B, 3, H, W)

    def __init__(self, block: type, layers: Sequence[int], num_classes: int = 1000, width_mult: float = 1.0,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        check_builder_args(width_mult, num_classes)
        widths = [max(1, int(round(w * width_mult))) for w in STAGE_WIDTHS]
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():  # torchvision's scheme
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def _make_layer(self, block: type, width: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != width * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, width * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(width * block.expansion))
        layers = [block(self.inplanes, width, stride, downsample)]
        self.inplanes = width * block.expansion
        layers += [block(self.inplanes, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (LiteEval's fine features): ``(B, 3, H, W) -> (B, num_features)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects input (B, 3, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (no softmax)."""
        return self.fc(self.forward_features(x))


def resnet18(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> ResNet:
    """ResNet-18 (11.7 M parameters, 1.82 GMACs at 224×224)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width_mult, **kwargs)


def resnet34(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> ResNet:
    """ResNet-34 (21.8 M parameters, 3.67 GMACs at 224×224)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, width_mult, **kwargs)


def resnet50(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> ResNet:
    """ResNet-50 (25.6 M parameters, 4.09 GMACs at 224×224)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width_mult, **kwargs)


def resnet101(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> ResNet:
    """ResNet-101 (44.5 M parameters, 7.80 GMACs at 224×224; LiteEval Sec. 4.1 quotes 7.82)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, width_mult, **kwargs)
