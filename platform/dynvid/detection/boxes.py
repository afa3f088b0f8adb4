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
- :func:`greedy_keep`: the same greedy NMS on padded ``(..., N)`` score-sorted candidates of
  many images at once, all on the device (postprocessing a batch of frames).

NMS without a Python loop over boxes: the greedy rule "box ``i`` is kept unless a *kept*,
higher-scoring box overlaps it by more than the threshold" has exactly one solution, and
iterating ``keep ← valid ∧ ¬any_j(keep_j ∧ overlaps_{j,i})`` from ``keep = valid`` reaches it:
after ``n`` rounds the ``n`` best boxes are final (each depends only on better ones), and a
round that changes nothing is that solution. Each round is one tensor op over the IoU matrix
and costs one read of "changed?" to the host, instead of one read per box (a host–device
synchronisation each on a GPU); the rounds needed are the longest chain of boxes
suppressing or freeing each other, a handful in practice, ``N`` at worst. On the CPU, where a
read costs nothing, the same rule runs as the sequential pass over the IoU matrix instead
(fewer operations when many boxes are suppressed).
"""

from __future__ import annotations

import torch

__all__ = ["SCALE_FACTORS", "batched_nms", "box_area", "box_iou", "decode", "encode", "greedy_keep", "nms"]

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


def greedy_keep(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
                sequential: bool | None = None) -> torch.Tensor:
    """Greedy NMS over candidates already sorted by decreasing score: ``boxes (..., N, 4)``,
    ``valid (..., N)`` (padding and candidates below the score threshold are False: never
    kept, never suppress). Returns the ``(..., N)`` kept mask, on the device (see the module
    docstring for the rounds). ``sequential``: the one-pass rule (default: on the CPU only)."""
    n = boxes.shape[-2]
    # over[..., j, i]: the better box j overlaps the worse box i beyond the threshold
    over = (box_iou(boxes, boxes) > iou_threshold).triu_(1)
    if boxes.device.type == "cpu" if sequential is None else sequential:  # reads are free: one pass per image
        keep_np = valid.clone().reshape(-1, n).numpy()
        over_np = over.reshape(-1, n, n).numpy()
        for kept, rows in zip(keep_np, over_np):
            for i in range(n):
                if kept[i]:
                    kept &= ~rows[i]
        return torch.from_numpy(keep_np).reshape(valid.shape)
    keep = valid.clone()
    for _ in range(n):
        new = valid & ~(over & keep.unsqueeze(-1)).any(-2)
        if torch.equal(new, keep):  # the one read of each round
            break
        keep = new
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, by decreasing score. A box is dropped when its
    IoU with a kept, higher-scoring box exceeds ``iou_threshold``."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    keep = greedy_keep(boxes[order], torch.ones(len(order), dtype=torch.bool, device=boxes.device), iou_threshold)
    return order[keep]


def class_offsets(boxes: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(..., N, 1)`` shifts that move each class's boxes apart from every other class's, so one
    NMS pass serves all classes: ``class × (max − min + 1)`` over the (valid) boxes of each
    image (leading dimensions)."""
    if valid is None:
        span = boxes.amax((-2, -1)) - boxes.amin((-2, -1)) + 1
    else:
        inf = torch.tensor(float("inf"), dtype=boxes.dtype, device=boxes.device)
        hi = torch.where(valid[..., None], boxes, -inf).amax((-2, -1))
        lo = torch.where(valid[..., None], boxes, inf).amin((-2, -1))
        span = torch.where(valid.any(-1), hi - lo + 1, torch.ones_like(hi))
    return classes.to(boxes.dtype)[..., None] * span[..., None, None]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class (boxes of different classes never suppress each other): the
    boxes are shifted apart per class, so one pass serves all classes."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return nms(boxes + class_offsets(boxes, classes), scores, iou_threshold)
