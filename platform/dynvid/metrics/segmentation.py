"""Semantic segmentation metrics: a confusion matrix accumulated over pixels, and mIoU from it
(per class ``TP / (TP + FP + FN)``, averaged over the classes present in the ground truth or
the predictions, the Cityscapes convention; ResQ Sec. 5.2)."""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = ground truth, columns = prediction, over
    the pixels of ``pred``/``target`` (same shape, class ids) whose target is not ``ignore_index``."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target class ids outside [0, {num_classes}) (ignore_index={ignore_index})")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu()


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """IoU of each class (NaN where a class is in neither the ground truth nor the predictions)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (see :func:`iou_per_class`); NaN for an empty matrix."""
    iou = iou_per_class(cm)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")
