"""DDRNet (Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic
Segmentation of Road Scenes", 2021): the segmentation network of ResQ's Cityscapes
experiments (``shared/papers/resq-residual-quantization.txt``, Sec. 5.2, Table 2, Fig. 7:
DDRNet-23-slim).

Layout (DDRNet-23, Fig. 3/4 and Table 1 of the DDRNet paper; ``planes`` = 32 for "slim", 64 for
DDRNet-23):

- ``conv1``: two 3×3 stride-2 convs (1/4), ``layer1``: 2 basic blocks (``planes``),
  ``layer2``: 2 basic blocks (2·planes, 1/8).
- Two branches from 1/8: the low-resolution branch ``layer3`` (4·planes, 1/16) → ``layer4``
  (8·planes, 1/32) → ``layer5`` (one bottleneck, 16·planes, 1/64); the high-resolution branch
  ``layer3_``, ``layer4_`` (2·planes, 1/8) → ``layer5_`` (one bottleneck, 4·planes).
- Bilateral fusion after stages 3 and 4: high → low by strided 3×3 convs (``down3``, ``down4``),
  low → high by a 1×1 conv (``compression3``, ``compression4``) and bilinear upsampling.
- ``spp``: the Deep Aggregation Pyramid Pooling Module (average pools of kernel 5/9/17 and a
  global one, fused hierarchically), upsampled to 1/8 and added to the high-resolution branch.
- ``final_layer``: the segmentation head (BN-ReLU-3×3 conv-BN-ReLU-1×1 conv) at 1/8; logits are
  upsampled bilinearly to the input size.

State-dict keys follow the authors' released code (``conv1``, ``layer3_``, ``compression3``,
``down3``, ``spp.scale1`` …), so its checkpoints map by name. Not built: the auxiliary head
of training (``augment``), a choice: the embedded data trains without it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DDRNet", "ddrnet23", "ddrnet23_slim"]

BN_MOMENTUM = 0.1


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), _bn(planes))
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, no_relu: bool = True) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _bn(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), _bn(out))
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


def _layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    layers = [block(inplanes, planes, stride)]
    inplanes = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(inplanes, planes, 1, no_relu=(i == blocks - 1)))
    return nn.Sequential(*layers)


def _bn_relu_conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [_bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module (DDRNet Sec. 3.3)."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int) -> None:
        super().__init__()
        pool = [(5, 2, 2), (9, 4, 4), (17, 8, 8)]
        self.scale0 = nn.Sequential(*_bn_relu_conv(inplanes, branch_planes, 1))
        for i, (k, s, p) in enumerate(pool, start=1):
            setattr(self, f"scale{i}", nn.Sequential(nn.AvgPool2d(k, s, p), *_bn_relu_conv(inplanes, branch_planes, 1)))
        self.scale4 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_bn_relu_conv(inplanes, branch_planes, 1))
        for i in range(1, 5):
            setattr(self, f"process{i}", nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3)))
        self.compression = nn.Sequential(*_bn_relu_conv(branch_planes * 5, outplanes, 1))
        self.shortcut = nn.Sequential(*_bn_relu_conv(inplanes, outplanes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        for i in range(1, 5):
            up = F.interpolate(getattr(self, f"scale{i}")(x), size=size, mode="bilinear", align_corners=False)
            outs.append(getattr(self, f"process{i}")(up + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    def __init__(self, inplanes: int, interplanes: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = _bn(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = _bn(interplanes)
        self.conv2 = nn.Conv2d(interplanes, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(x)))


class DDRNet(nn.Module):
    """DDRNet-23 family; ``forward(x)`` returns ``(B, num_classes, H, W)`` logits at the input size.

    Args:
        num_classes: segmentation classes.
        planes: base width (32: DDRNet-23-slim, 64: DDRNet-23).
        spp_planes: DAPPM branch width (128).
        head_planes: segmentation-head width (64 slim, 128 full).
        layers: basic blocks per stage (DDRNet-23: 2, 2, 2, 2).
    """

    def __init__(self, num_classes: int = 19, planes: int = 32, spp_planes: int = 128, head_planes: int = 64,
                 layers: tuple[int, int, int, int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        if num_classes < 1 or planes < 1:
            raise ValueError(f"num_classes and planes must be >= 1, got {num_classes}, {planes}")
        high = planes * 2
        self.num_classes = num_classes
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, 3, 2, 1), _bn(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 2, 1), _bn(planes), nn.ReLU(inplace=True))
        self.layer1 = _layer(BasicBlock, planes, planes, layers[0])
        self.layer2 = _layer(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.layer3 = _layer(BasicBlock, planes * 2, planes * 4, layers[2], stride=2)
        self.layer4 = _layer(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, high, 1, bias=False), _bn(high))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, high, 1, bias=False), _bn(high))
        self.down3 = nn.Sequential(nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False), _bn(planes * 4))
        self.down4 = nn.Sequential(
            nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False), _bn(planes * 4), nn.ReLU(inplace=True),
            nn.Conv2d(planes * 4, planes * 8, 3, 2, 1, bias=False), _bn(planes * 8))
        self.layer3_ = _layer(BasicBlock, planes * 2, high, 2)
        self.layer4_ = _layer(BasicBlock, high, high, 2)
        self.layer5_ = _layer(Bottleneck, high, high, 1)
        self.layer5 = _layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.layer2(F.relu(self.layer1(self.conv1(x))))  # 1/8
        hi_size = x.shape[-2:]

        # Bilateral fusion exchanges the branches' stage outputs: each side receives the other's
        # output from *before* this exchange (as the authors' code does).
        low = self.layer3(F.relu(x))  # 1/16
        high = self.layer3_(F.relu(x))  # 1/8
        low, high = (low + self.down3(F.relu(high)),
                     high + F.interpolate(self.compression3(F.relu(low)), size=hi_size, mode="bilinear",
                                          align_corners=False))

        low = self.layer4(F.relu(low))  # 1/32
        high = self.layer4_(F.relu(high))
        low, high = (low + self.down4(F.relu(high)),
                     high + F.interpolate(self.compression4(F.relu(low)), size=hi_size, mode="bilinear",
                                          align_corners=False))

        high = self.layer5_(F.relu(high))
        low = F.interpolate(self.spp(self.layer5(F.relu(low))), size=hi_size, mode="bilinear", align_corners=False)
        logits = self.final_layer(high + low)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def ddrnet23_slim(num_classes: int = 19) -> DDRNet:
    """DDRNet-23-slim (5.7 M parameters with 19 classes): ResQ's Fig. 7 network."""
    return DDRNet(num_classes, planes=32, spp_planes=128, head_planes=64)


def ddrnet23(num_classes: int = 19) -> DDRNet:
    """DDRNet-23 (20.1 M parameters with 19 classes)."""
    return DDRNet(num_classes, planes=64, spp_planes=128, head_planes=128)
