"""Static backbones and their registry.

Every builder in :data:`BACKBONES` takes ``num_classes`` and ``width_mult`` keyword
arguments and returns an ``nn.Module`` whose ``forward`` returns logits, with a
``features(x) -> (B, num_features)`` method and a ``num_features`` attribute.
State-dict keys follow torchvision where torchvision has the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dynvid.backbones.r2plus1d import R2Plus1D, r2plus1d_18

__all__ = ["BACKBONES", "R2Plus1D", "build_backbone", "list_backbones", "r2plus1d_18"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "r2plus1d_18": r2plus1d_18,
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
