"""Semantic segmentation metrics: a confusion matrix accumulated over pixels, and mIoU from it
(per class ``TP / (TP + FP + FN)``, averaged over the classes present in the ground truth or
the predictions, the Cityscapes convention; ResQ Sec. 5.2).

Device handling: the counts live on the labels' device and predictions are moved there (a
no-op when they already are), so a GPU evaluation never mixes devices in one op (issue 20:
``confusion_matrix(logits.argmax(1).cpu(), cuda_labels)`` used to index a CPU tensor with CUDA
indices). :class:`ConfusionMatrix` counts without reading anything back to the host — no
boolean-mask indexing (its output size is data-dependent, a host sync on CUDA) and no
``bincount`` (which reads the largest index on CUDA) — and checks the class ids once, when
:meth:`ConfusionMatrix.compute` moves the matrix to the host at the end of an evaluation.
"""

from __future__ import annotations

import torch

__all__ = ["ConfusionMatrix", "confusion_matrix", "iou_per_class", "mean_iou"]


class ConfusionMatrix:
    """Accumulates a ``(num_classes, num_classes)`` int64 confusion matrix (rows = ground truth,
    columns = prediction) over batches, on the device of the first batch's labels, with no host
    sync per batch.

    Pixels whose target is ``ignore_index`` are skipped. A target or prediction outside
    ``[0, num_classes)`` is counted in one of two overflow bins rather than checked per batch
    (a check reads a value back to the host, a sync per frame on CUDA); :meth:`compute` raises
    if either bin is non-zero.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts: torch.Tensor | None = None  # (num_classes**2 + 2,): cells, bad targets, bad predictions

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add the pixels of ``pred``/``target`` (same shape, class ids). ``pred`` is moved to
        ``target``'s device (the labels decide, since they are what the loader delivered)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        n = self.num_classes
        if self.counts is None:
            self.counts = torch.zeros(n * n + 2, dtype=torch.long, device=target.device)
        dev = self.counts.device  # inputs are copied only when they live elsewhere (e.g. CPU predictions)
        t = (target if target.device == dev else target.to(dev, non_blocking=True)).reshape(-1).long()
        p = (pred if pred.device == dev else pred.to(dev, non_blocking=True)).reshape(-1).long()
        keep = (t != self.ignore_index).long()  # ignored pixels add 0 to whatever bin they point at
        bad_t = (t < 0) | (t >= n)
        bad_p = (p < 0) | (p >= n)
        cell = torch.where(bad_t, n * n, torch.where(bad_p, n * n + 1, t * n + p))
        self.counts.index_put_((cell,), keep, accumulate=True)
        return self

    def compute(self) -> torch.Tensor:
        """The matrix on the host (one device-to-host copy for the whole evaluation); raises
        ``ValueError`` naming the count of pixels whose class ids were out of range."""
        n = self.num_classes
        if self.counts is None:
            return torch.zeros(n, n, dtype=torch.long)
        counts = self.counts.cpu()
        _check_overflow(counts, n, self.ignore_index)
        return counts[: n * n].reshape(n, n)


def _check_overflow(counts: torch.Tensor, n: int, ignore_index: int) -> None:
    bad_t, bad_p = counts[n * n:].tolist()  # one read of both overflow bins
    if bad_t:
        raise ValueError(f"{bad_t} pixels have target class ids outside [0, {n}) (ignore_index={ignore_index})")
    if bad_p:
        raise ValueError(f"{bad_p} pixels have predicted class ids outside [0, {n}) (the model's "
                         f"output channels do not match num_classes={n}?)")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = ground truth, columns = prediction, over
    the pixels of ``pred``/``target`` (same shape, class ids) whose target is not ``ignore_index``,
    on ``target``'s device (``pred`` is moved there). One host read checks the class ids; over
    many batches :class:`ConfusionMatrix` avoids even that. Meta tensors (shape and device
    propagation without data) hold no values, so nothing is read or checked for them."""
    acc = ConfusionMatrix(num_classes, ignore_index).update(pred, target)
    if acc.counts.device.type != "meta":
        _check_overflow(acc.counts, num_classes, ignore_index)
    return acc.counts[: num_classes * num_classes].reshape(num_classes, num_classes)


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
