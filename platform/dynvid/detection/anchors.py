"""SSD anchors (Liu et al., SSD, Sec. 2.2) as used by Looking Fast and Slow's SSDLite
(Sec. 3.1, 4: aspect ratios {1, 0.5, 2}) and by ANT's detection head.

Feature map ``k`` of ``m`` gets the scale ``s_k = s_min + (s_max − s_min)(k − 1)/(m − 1)``;
each cell centre carries one anchor per aspect ratio ``a`` of width ``s_k·√a`` and height
``s_k/√a`` (normalised to the image), plus, as in SSD, an extra square anchor of scale
``√(s_k·s_{k+1})``. Anchors are in normalised xyxy coordinates, cell by cell, row-major,
the aspect ratios innermost, the order in which a head's ``(A·4, H, W)`` output is flattened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["ASPECT_RATIOS", "anchors_per_cell", "level_scales", "ssd_anchors"]

ASPECT_RATIOS = (1.0, 0.5, 2.0)
"""Looking Fast and Slow's anchor aspect ratios (width / height)."""


def level_scales(num_levels: int, s_min: float = 0.2, s_max: float = 0.95) -> list[float]:
    """``s_k`` for the ``num_levels`` feature maps, plus one past the last (for the extra square)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return [s_min, s_max]
    step = (s_max - s_min) / (num_levels - 1)
    return [s_min + step * k for k in range(num_levels)] + [1.0]


def anchors_per_cell(aspect_ratios: Sequence[float] = ASPECT_RATIOS) -> int:
    """Anchors at every cell: one per aspect ratio and the extra square one."""
    return len(aspect_ratios) + 1


def ssd_anchors(feature_sizes: Sequence[tuple[int, int]], aspect_ratios: Sequence[float] = ASPECT_RATIOS,
                s_min: float = 0.2, s_max: float = 0.95) -> torch.Tensor:
    """``(sum_k H_k·W_k·A, 4)`` normalised xyxy anchors for feature maps of ``(H_k, W_k)``."""
    if any(a <= 0 for a in aspect_ratios):
        raise ValueError(f"aspect ratios must be > 0, got {tuple(aspect_ratios)}")
    scales = level_scales(len(feature_sizes), s_min, s_max)
    out = []
    for k, (h, w) in enumerate(feature_sizes):
        s, s_next = scales[k], scales[k + 1]
        sizes = [(s * math.sqrt(a), s / math.sqrt(a)) for a in aspect_ratios]
        sizes.append((math.sqrt(s * s_next),) * 2)
        wh = torch.tensor(sizes)  # (A, 2)
        cy, cx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # (H·W, 1, 2)
        boxes = torch.cat([centres - wh / 2, centres + wh / 2], -1)  # (H·W, A, 4)
        out.append(boxes.reshape(-1, 4))
    return torch.cat(out)
