"""SSD training targets and losses, shared by Looking Fast and Slow and ANT.

- :func:`match_anchors`: each anchor takes the ground-truth box it overlaps most if the IoU is
  at least ``iou_threshold`` (0.5, SSD Sec. 2.2), and every ground-truth box takes its
  best-overlapping anchor whatever the IoU, so no object is left without a positive.
- the focal loss is ``torchvision.ops.sigmoid_focal_loss``: per-class sigmoid
  cross-entropy with the focal modulation ``α_t (1 − p_t)^γ`` (Lin et al., "Focal Loss",
  Eq. 5; α = 0.25, γ = 2); with ``alpha=-1`` and ``gamma=0`` it is the plain sigmoid loss
  (SSD's, with hard-negative mining).
- :func:`hard_negative_mask`: SSD's hard-example mining (Sec. 2.2): the negatives with the
  highest classification loss, at most ``ratio`` (3) per positive.
- :func:`detection_loss`: classification over all positives and the mined negatives (all
  anchors with the focal loss, which needs no mining) plus smooth-L1 localisation on the
  positives, both normalised by the number of positives.
- :func:`detection_loss_batched`: :func:`detection_loss` of every image of a batch in one
  pass (ground truth padded per image), with no read to the host: the per-image loop reads
  the positives' count and indexes with masks, each a host–device synchronisation on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from dynvid.detection.boxes import box_iou, encode

__all__ = ["detection_loss", "detection_loss_batched", "hard_negative_mask", "match_anchors"]


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """``(A,)`` index of the matched ground-truth box per anchor, −1 for background."""
    matched = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matched
    iou = box_iou(anchors, gt_boxes)  # (A, G)
    best_iou, best_gt = iou.max(1)
    matched[best_iou >= iou_threshold] = best_gt[best_iou >= iou_threshold]
    best_anchor = iou.argmax(0)  # (G,): every object keeps at least its best anchor
    matched[best_anchor] = torch.arange(gt_boxes.shape[0], device=anchors.device)
    return matched


def hard_negative_mask(cls_loss: torch.Tensor, positive: torch.Tensor, ratio: float = 3.0) -> torch.Tensor:
    """``(A,)`` bool: the ``ratio × #positives`` negatives with the highest loss (at least one)."""
    negatives = ~positive
    k = int(min(negatives.sum().item(), max(1, ratio * int(positive.sum()))))
    mask = torch.zeros_like(positive)
    if k > 0:
        loss = cls_loss.detach().masked_fill(positive, float("-inf"))
        mask[loss.topk(k).indices] = True
    return mask


def detection_loss(cls_logits: torch.Tensor, box_codes: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor,
                   gt_labels: torch.Tensor, *, focal: bool = True, neg_ratio: float = 3.0,
                   iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classification, localisation)`` losses of one image.

    Args:
        cls_logits: ``(A, C)`` per-class logits (sigmoid; no background column).
        box_codes: ``(A, 4)`` predicted box codes (see ``boxes.encode``).
        anchors: ``(A, 4)`` anchors, in the coordinates of ``gt_boxes``.
        gt_boxes: ``(G, 4)`` ground-truth xyxy boxes; ``gt_labels``: ``(G,)`` in ``[0, C)``.
        focal: focal loss over all anchors; False = sigmoid loss with hard-negative mining.
    """
    matched = match_anchors(anchors, gt_boxes, iou_threshold)
    positive = matched >= 0
    targets = torch.zeros_like(cls_logits)
    if positive.any():
        targets[positive, gt_labels[matched[positive]]] = 1.0
    per_elem = sigmoid_focal_loss(cls_logits, targets, reduction="none") if focal else \
        sigmoid_focal_loss(cls_logits, targets, alpha=-1, gamma=0.0, reduction="none")
    per_anchor = per_elem.sum(1)
    num_pos = max(1, int(positive.sum()))
    if focal:
        cls = per_anchor.sum() / num_pos
    else:
        keep = positive | hard_negative_mask(per_anchor, positive, neg_ratio)
        cls = per_anchor[keep].sum() / num_pos
    if positive.any():
        target_codes = encode(gt_boxes[matched[positive]], anchors[positive])
        loc = F.smooth_l1_loss(box_codes[positive], target_codes, reduction="sum", beta=1.0) / num_pos
    else:
        loc = box_codes.sum() * 0.0
    return cls, loc


def detection_loss_batched(cls_logits: torch.Tensor, box_codes: torch.Tensor, anchors: torch.Tensor,
                           gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor], *, focal: bool = True,
                           neg_ratio: float = 3.0, iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classification (B,), localisation (B,))``: :func:`detection_loss` of each image of a
    batch, computed together with no read to the host.

    Args:
        cls_logits: ``(B, A, C)``; box_codes: ``(B, A, 4)``; anchors: ``(A, 4)``.
        gt_boxes, gt_labels: per image ``(G_b, 4)`` boxes and ``(G_b,)`` labels (any device:
            they are padded where they are and moved to the logits' device in one copy).
        focal, neg_ratio: as :func:`detection_loss` (without focal: the ``neg_ratio ×
            #positives`` hardest negatives of each image, at least one, chosen by rank).

    Matching is :func:`match_anchors`'s, per image: the best ground truth per anchor at IoU
    ``>= iou_threshold``, then every box takes its best anchor (when two boxes share one, the
    later box wins, as the sequential assignment does)."""
    B, A, C = cls_logits.shape
    if len(gt_boxes) != B or len(gt_labels) != B:
        raise ValueError(f"{B} images of logits but {len(gt_boxes)} box and {len(gt_labels)} label lists")
    device = cls_logits.device
    G = max(1, max(len(g) for g in gt_boxes))
    # one (B, G, 6) table per batch [box, label, valid], padded on the targets' device, one copy
    rows = [torch.cat([g.reshape(-1, 4).float(), lab.reshape(-1, 1).float(), torch.ones_like(lab.reshape(-1, 1),
                                                                                         dtype=torch.float32)], 1)
            for g, lab in zip(gt_boxes, gt_labels)]
    table = torch.stack([torch.cat([r, r.new_zeros(G - len(r), 6)]) for r in rows]).to(device)
    boxes, labels, valid = table[..., :4].to(anchors.dtype), table[..., 4].long(), table[..., 5] > 0
    iou = box_iou(anchors, boxes).masked_fill(~valid[:, None, :], -1.0)  # (B, A, G); padding never matches
    best_iou, best_gt = iou.max(2)
    matched = torch.where(best_iou >= iou_threshold, best_gt, torch.full_like(best_gt, -1))
    gt_index = torch.arange(G, device=device).expand(B, G)
    forced = torch.full_like(matched, -1).scatter_reduce(
        1, iou.argmax(1), torch.where(valid, gt_index, torch.full_like(gt_index, -1)), "amax")
    matched = torch.where(forced >= 0, forced, matched)
    positive = matched >= 0
    idx = matched.clamp_min(0)
    targets = torch.zeros_like(cls_logits).scatter(2, labels.gather(1, idx)[..., None],
                                                   positive[..., None].to(cls_logits.dtype))
    num_pos = positive.sum(1).clamp_min(1).to(torch.float32)
    if focal:
        cls = sigmoid_focal_loss(cls_logits, targets, reduction="none").sum((1, 2)) / num_pos
    else:
        per_anchor = sigmoid_focal_loss(cls_logits, targets, alpha=-1, gamma=0.0, reduction="none").sum(2)  # (B, A)
        npos, nneg = positive.sum(1), (~positive).sum(1)
        k = torch.minimum(nneg, (neg_ratio * npos).floor().long().clamp_min(1))  # hard_negative_mask's count
        order = per_anchor.detach().masked_fill(positive, float("-inf")).argsort(1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(A, device=device).expand(B, A))
        keep = positive | ((rank < k[:, None]) & ~positive)
        cls = (per_anchor * keep).sum(1) / num_pos
    matched_boxes = boxes.gather(1, idx[..., None].expand(B, A, 4))
    loc = F.smooth_l1_loss(box_codes, encode(matched_boxes, anchors), reduction="none", beta=1.0).sum(2)
    loc = (loc * positive).sum(1) / num_pos
    return cls, loc
