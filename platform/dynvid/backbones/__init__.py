"""Static backbones and their registry.

Every builder in :data:`BACKBONES` takes ``num_classes`` and ``width_mult`` keyword
arguments and returns an ``nn.Module`` whose ``forward`` returns logits, with
``forward_features(x) -> (B, num_features)`` (pooled), ``forward_head(features) -> logits``,
a ``num_features`` attribute and ``takes_clips``: True for 3-D clip networks (input
``(B, 3, T, H, W)``), False for 2-D frame networks (``(B, 3, H, W)``).
State-dict keys follow torchvision where torchvision has the same network.

Dense-prediction networks are not in the registry (they return per-pixel logits):
:class:`DDRNet` (``ddrnet23_slim``, ``ddrnet23``), ResQ's segmentation network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dynvid.backbones.ddrnet import DDRNet, ddrnet23, ddrnet23_slim
from dynvid.backbones.efficientnet import EfficientNet, EfficientNetSupernet, efficientnet_b0
from dynvid.backbones.i3d import I3D, i3d
from dynvid.backbones.mobilenetv2 import MobileNetV2, mobilenet_v2
from dynvid.backbones.r2plus1d import R2Plus1D, r2plus1d_18
from dynvid.backbones.resnet import ResNet, resnet18, resnet34, resnet50, resnet101
from dynvid.backbones.x3d import X3D, x3d_m

__all__ = [
    "BACKBONES",
    "DDRNet",
    "EfficientNet",
    "EfficientNetSupernet",
    "I3D",
    "MobileNetV2",
    "R2Plus1D",
    "ResNet",
    "X3D",
    "build_backbone",
    "ddrnet23",
    "ddrnet23_slim",
    "efficientnet_b0",
    "i3d",
    "list_backbones",
    "mobilenet_v2",
    "r2plus1d_18",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "x3d_m",
]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "efficientnet_b0": efficientnet_b0,  # ANT's backbone (its supernet: EfficientNetSupernet)
    "i3d": i3d,  # I3D-InceptionV2
    "mobilenet_v2": mobilenet_v2,
    "r2plus1d_18": r2plus1d_18,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "x3d_m": x3d_m,
}


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(BACKBONES)


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` with the builder's keyword arguments."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}") from None
    return builder(**kwargs)
