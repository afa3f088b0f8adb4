"""Box operations for the SSD-style detectors of Looking Fast and Slow and ANT, in torch
(torchvision's ops cannot be imported beside the CPU torch here; see the notes).

Boxes are ``(x1, y1, x2, y2)`` in pixels or normalised coordinates, rows of an ``(N, 4)``
tensor.

- :func:`box_iou`: pairwise intersection over union.
- :func:`encode` / :func:`decode`: SSD box coding (Liu et al., SSD, Sec. 2.2; the
  TensorFlow Object Detection API's ``FasterRcnnBoxCoder`` that Looking Fast and Slow's
  SSDLite uses): centre offsets over the anchor size and log size ratios, multiplied by the
  scale factors (10, 10, 5, 5).
- :func:`batched_nms`: greedy non-maximum suppression per class, written in torch.
"""

from __future__ import annotations

import torch

__all__ = ["SCALE_FACTORS", "batched_nms", "box_area", "box_iou", "decode", "encode", "nms"]

SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)
"""(y, x, h, w) scale factors of the TF Object Detection API's SSD box coder, here in (x, y, w, h) order."""


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` xyxy boxes (0 for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"box_iou expects (N, 4) and (M, 4) boxes, got {tuple(a.shape)} and {tuple(b.shape)}")
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes: torch.Tensor, anchors: torch.Tensor, scale_factors=SCALE_FACTORS) -> torch.Tensor:
    """Regression targets ``(..., 4)`` = (tx, ty, tw, th) of ``boxes`` relative to ``anchors``:
    ``tx = sx·(x − xa)/wa``, ``tw = sw·log(w/wa)`` (and y, h alike)."""
    x, y, w, h = _centre_size(boxes)
    xa, ya, wa, ha = _centre_size(anchors)
    eps = 1e-8
    w, h, wa, ha = w.clamp_min(eps), h.clamp_min(eps), wa.clamp_min(eps), ha.clamp_min(eps)
    sx, sy, sw, sh = scale_factors
    return torch.stack([sx * (x - xa) / wa, sy * (y - ya) / ha, sw * torch.log(w / wa), sh * torch.log(h / ha)], -1)


def decode(codes: torch.Tensor, anchors: torch.Tensor, scale_factors=SCALE_FACTORS) -> torch.Tensor:
    """Inverse of :func:`encode`: xyxy boxes from regression outputs ``(..., 4)``."""
    xa, ya, wa, ha = _centre_size(anchors)
    sx, sy, sw, sh = scale_factors
    x = codes[..., 0] / sx * wa + xa
    y = codes[..., 1] / sy * ha + ya
    w = torch.exp(codes[..., 2] / sw) * wa
    h = torch.exp(codes[..., 3] / sh) * ha
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], -1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, by decreasing score. A box is dropped when its
    IoU with a kept, higher-scoring box exceeds ``iou_threshold``."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            suppressed = iou[i] > iou_threshold
            suppressed[: i + 1] = False
            keep &= ~suppressed
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class (boxes of different classes never suppress each other): the
    boxes are shifted apart per class, so one pass serves all classes."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)
