"""Box operations for the SSD-style detectors of Looking Fast and Slow and ANT.

Boxes are ``(x1, y1, x2, y2)`` in pixels or normalised coordinates, rows of an ``(N, 4)``
tensor. Non-maximum suppression is torchvision's (``torchvision.ops.nms``, C++ on the CPU,
a CUDA kernel on a GPU); this module keeps what torchvision does not have:

- :func:`box_iou`: pairwise intersection over union with leading batch dimensions (a batch
  of images at once; ``torchvision.ops.box_iou`` takes one image), 0 for empty pairs.
- :func:`encode` / :func:`decode`: SSD box coding (Liu et al., SSD, Sec. 2.2; the
  TensorFlow Object Detection API's ``FasterRcnnBoxCoder`` that Looking Fast and Slow's
  SSDLite uses): centre offsets over the anchor size and log size ratios, multiplied by the
  scale factors (10, 10, 5, 5); the centre-size conversion is ``torchvision.ops.box_convert``.
- :func:`separate_groups`: the candidates of many images and classes moved apart, so that
  one NMS call serves all of them (torchvision's ``batched_nms`` does this per class with a
  float32 offset, which blurs normalised boxes once many images share a call, or with a
  Python loop over the classes beyond 4,000 boxes).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

__all__ = ["SCALE_FACTORS", "box_area", "box_iou", "decode", "encode", "separate_groups"]

SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)
"""(y, x, h, w) scale factors of the TF Object Detection API's SSD box coder, here in (x, y, w, h) order."""


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(..., N, 4)`` xyxy boxes (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(..., N, M)`` IoU of every box of ``a`` (..., N, 4) with every box of ``b`` (..., M, 4)
    (leading dimensions broadcast: a batch of images at once)."""
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"box_iou expects (N, 4) and (M, 4) boxes, got {tuple(a.shape)} and {tuple(b.shape)}")
    lt = torch.max(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.min(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return box_convert(boxes, "xyxy", "cxcywh").unbind(-1)


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


def separate_groups(boxes: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(..., K, 4)`` boxes of many images (the leading dimensions) moved apart per image and
    per group (``groups (..., K)``, e.g. the class, in ``[0, num_groups)``), as float64, so
    that one ``torchvision.ops.nms`` call over all of them never suppresses across images or
    groups: each image gets its own stretch of the x and y axes, ``num_groups`` of its own
    spans wide (the span of its valid boxes), one per group. Candidates not ``valid`` become
    empty boxes, which suppress nothing; so do non-finite boxes (a diverged or fp16 decode)
    and boxes beyond ±1e6, which would blur every image after them. float64 keeps normal
    boxes exact to ~1e-13 of the span (float32: ~1e-7 × images × classes). No value is read
    to the host."""
    lead, k = valid.shape[:-1], valid.shape[-1]
    b = boxes.double().reshape(-1, k, 4)
    ok = valid.reshape(-1, k) & torch.isfinite(b).all(-1) & (b.abs() <= 1e6).all(-1)
    inf = torch.tensor(float("inf"), dtype=b.dtype, device=b.device)
    lo = torch.where(ok[..., None], b, inf).amin((1, 2))  # per image
    hi = torch.where(ok[..., None], b, -inf).amax((1, 2))
    span = torch.where(ok.any(1), hi - lo + 1, torch.ones_like(hi))
    block = span * num_groups
    start = torch.cumsum(block, 0) - block  # where each image's stretch begins
    offset = start[:, None] + groups.reshape(-1, k).to(b.dtype) * span[:, None]
    shifted = b - torch.where(ok.any(1), lo, torch.zeros_like(lo))[:, None, None] + offset[..., None]
    return torch.where(ok[..., None], shifted, torch.zeros_like(shifted)).reshape(*lead, k, 4)
