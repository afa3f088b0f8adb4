"""Pieces every backbone builder shares: argument checks and the weight initialisation."""

from __future__ import annotations

from torch import nn


def check_builder_args(width_mult: float, num_classes: int) -> None:
    """The checks every builder makes on its common keyword arguments."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


def init_video_weights(model: nn.Module) -> None:
    """torchvision's video-ResNet scheme: Kaiming (fan-out) convs, unit BN, N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ClipBackbone:
    """The registry interface of the 3-D (clip) networks, whose ``features`` and ``fc`` follow
    torchvision's video models: ``forward_features`` (pooled) and ``forward_head`` (logits),
    the same calls a 2-D frame network (MobileNetV2, ResNet) answers."""

    takes_clips = True  # input (B, 3, T, H, W)

    def forward_features(self, x):
        """Pooled features ``(B, num_features)``."""
        return self.features(x)

    def forward_head(self, features):
        """Logits from pooled features (dropout first where the network has it)."""
        dropout = getattr(self, "dropout", None)
        return self.fc(dropout(features) if dropout is not None else features)
