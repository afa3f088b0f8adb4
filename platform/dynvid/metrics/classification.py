"""Classification metrics of the video-recognition papers.

- **clip-1**: top-1 accuracy of one centre clip, centre crop per video (VA-RED² Sec. 4.3).
- **video-1 / video-5**: top-1 / top-5 accuracy of the video-level score, the average of
  the softmax scores of the 3K K-LeftCenterRight views (as in the SlowFast test protocol;
  averaging probabilities rather than logits keeps one over-confident view from
  dominating).
- **mAP**: the mean over classes of the average precision of ranking the videos by that
  class's score (the FCVID / ActivityNet protocol, used by LiteEval's Table 1).
"""

from __future__ import annotations

import torch

__all__ = ["topk_correct", "average_view_scores", "mean_average_precision", "AccuracyMeter"]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is among the top-k scores, for each k (k capped at C).

    The labels are compared on the scores' device (a model on the GPU with labels left on the
    host, or the reverse, would otherwise mix devices in one op), and the counts of every k
    come back to the host in one read."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores must be (N, C) and labels (N,), got {tuple(scores.shape)}, {tuple(labels.shape)}")
    if labels.device != scores.device:
        labels = labels.to(scores.device, non_blocking=True)
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    counts = torch.stack([hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]).tolist()
    return dict(zip(ks, counts))


def mean_average_precision(scores, targets) -> float:
    """mAP of ``scores`` (N, C) against ``targets``: (N,) class indices (single-label) or an
    (N, C) 0/1 matrix (multi-label). Per class, AP is the mean precision at the rank of each
    positive video, videos ranked by that class's score; classes with no positive are skipped."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if targets.ndim == 1:
        onehot = np.zeros_like(scores, dtype=bool)
        onehot[np.arange(len(targets)), targets] = True
    else:
        onehot = targets.astype(bool)
    if onehot.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} do not match")
    aps = []
    for c in range(scores.shape[1]):
        positives = onehot[:, c]
        if not positives.any():
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = positives[order]
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return float(np.mean(aps)) if aps else float("nan")


def average_view_scores(logits: torch.Tensor) -> torch.Tensor:
    """(N, V, C) logits of V views per video -> (N, C) mean softmax score per video."""
    if logits.ndim != 3:
        raise ValueError(f"expected (N, V, C) logits, got {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)


class AccuracyMeter:
    """Accumulates top-k hits over batches; ``compute()`` -> {"top1": ..., "top5": ...}."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = ks
        self.hits = {k: 0 for k in ks}
        self.count = 0

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        for k, n in topk_correct(scores.detach(), labels.detach(), self.ks).items():
            self.hits[k] += n
        self.count += int(labels.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("AccuracyMeter.compute() before any update")
        return {f"top{k}": self.hits[k] / self.count for k in self.ks}
