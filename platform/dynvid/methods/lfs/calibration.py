"""Score calibration of the interleaved detector: one scale of confidence for f0 and f1.

Looking Fast and Slow scores mAP@0.5 over every frame of every video (Sec. 4), so the
detections of all frames are ranked together, whichever extractor made them. The paper's
two extractors share the memory and the head and it says nothing about their scores; on the
embedded scenes, trained from scratch, they are on different scales: f1's detections score
lower than f0's at the same precision. A schedule that mixes them then ranks f0's false
positives above f1's true ones, and scores *below both extractors alone* (issue 23, measured
on the speed-change detector: fixed τ = 4 scored 0.074 mAP@0.5 over all frames while its f0
frames alone scored 0.128 and its f1 frames 0.101). Every interleaving policy, fixed or
learned, is judged by that pooled ranking, so this is the detector's defect, not the
policy's.

The remedy is Platt scaling (Platt, 1999), per extractor and per class: a detection of class
``k`` from extractor ``i`` gets the score ``σ(a_ik · z + b_ik)`` for its score's logit ``z``,
with ``(a_ik, b_ik)`` the logistic regression of "this detection matches a ground-truth box at
IoU 0.5" (COCO's matching, :func:`dynvid.metrics.detection.match_detections`) on ``z``. It is
monotone per extractor and class, so the ranking within f0 only or f1 only does not change;
what changes is how the two interleave. The detector applies it to the detections of the
frame's extractor after post-processing (:meth:`~.model.InterleavedDetector.calibrate_detections`):
the threshold, NMS and the per-frame cap still act on the raw scores, so the detections kept
are the same (a calibrated threshold would drop the low-precision detections that still add
recall: f0 only fell from 0.116 to 0.094 mAP@0.5 that way), and the cost is one
element-wise map of at most ``lfs.max_detections`` scores per frame.

Choices:

- Fitted on training-split videos (``lfs.calibration_videos``: the first ones of the
  synthetic data, evenly spaced ones of a real dataset), never on the validation videos
  that are scored: the calibration is part of the detector.
- The detections to fit come from a seeded random schedule (each frame after the first runs
  f0 with probability 1/2, Sec. 3.3's training schedule), so f1's frames are seen with
  memories of every age, as the policies leave them, rather than only just after f0.
- They are the detections the detector keeps (``lfs.score_threshold``, NMS, the cap), with
  raw scores.
- A weak Gaussian prior pulls each class towards the identity (``prior`` × the detections'
  count in the Newton step), so a class with few detections keeps its raw scores instead of
  an extreme fit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dynvid.methods.lfs.evaluation import run_videos
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, unwrap
from dynvid.metrics.detection import gt_subset, match_detections, video_detection_rows

__all__ = ["BernoulliPolicy", "fit_score_calibration", "platt_fit"]


def platt_fit(logits: np.ndarray, labels: np.ndarray, prior: float = 1e-3, iters: int = 100) -> tuple[float, float]:
    """``(a, b)`` of the logistic regression ``P(label = 1 | z) = σ(a·z + b)`` by Newton's method,
    with a Gaussian prior of weight ``prior × len(z)`` towards the identity ``(1, 0)``. Empty
    input, or labels of one class only, leave the identity's direction to the prior."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape or z.ndim != 1:
        raise ValueError(f"logits and labels must be 1-D and of one length, got {z.shape} and {y.shape}")
    if len(z) == 0:
        return 1.0, 0.0
    theta, anchor = np.array([1.0, 0.0]), np.array([1.0, 0.0])
    lam = prior * len(z)
    X = np.stack([z, np.ones_like(z)], 1)

    def loss(t: np.ndarray) -> float:  # the negative log-likelihood and the prior
        u = X @ t
        return float(np.sum(np.logaddexp(0.0, u) - y * u) + 0.5 * lam * np.sum((t - anchor) ** 2))

    current = loss(theta)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ theta, -40, 40)))
        grad = X.T @ (p - y) + lam * (theta - anchor)
        hess = (X * (p * (1 - p))[:, None]).T @ X + (lam + 1e-9) * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # damped: a full Newton step from a saturated start can overshoot and diverge
        for _halving in range(30):
            trial = loss(theta - step)
            if trial <= current:
                break
            step = step / 2
        else:
            break
        theta, current = theta - step, trial
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


class BernoulliPolicy:
    """f0 with probability ``p`` on each frame after the first, from a seeded generator (the
    schedule the calibration is fitted on)."""

    name = "calibration schedule"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        self.p, self.generator = p, torch.Generator().manual_seed(seed)

    def reset(self, batch: int) -> None:
        pass

    def next_actions(self, t: int, candidate, previous, actions: torch.Tensor) -> torch.Tensor:
        f0 = torch.rand(len(actions), generator=self.generator) < self.p
        return torch.where(f0, F0, F1).long()


@torch.no_grad()
def fit_score_calibration(model: InterleavedDetector, loader, gt: dict, *, score_threshold: float, nms_iou: float,
                          max_detections: int, seed: int = 0, prior: float = 1e-3, policy=None,
                          progress: Callable[[str], None] | None = None) -> tuple[torch.Tensor, dict]:
    """Fit ``model``'s ``score_calibration`` on the videos of ``loader`` (items ``(frames,
    targets)`` as the validation loader gives them) against their COCO ground truth ``gt``
    (which may hold more images: only the frames seen are scored), set it, and return
    ``(calibration (2, 2, C), stats)``; ``stats`` has, per extractor, the detections and
    matches it was fitted on. The fit starts from the identity (a calibration already set is
    replaced) and runs the detector in eval mode (its mode is restored after). ``policy``: the
    schedule whose detections are fitted (default :class:`BernoulliPolicy` ``(0.5, seed)``)."""
    m = unwrap(model)
    C = m.score_calibration.shape[-1]
    cats = sorted(c["id"] for c in gt["categories"])
    if len(cats) != C:
        raise ValueError(f"the ground truth has {len(cats)} categories, the detector {C} classes")
    m.score_calibration.copy_(m.identity_calibration(C).to(m.score_calibration))
    policy = policy or BernoulliPolicy(0.5, seed)
    rows: dict[int, list] = {F0: [], F1: []}
    seen: set[int] = set()
    was = m.training
    m.eval()  # BatchNorm on its running statistics, which a training-mode pass would also overwrite
    try:
        for frames, targets in loader:
            dets, actions = run_videos(m, frames, policy, score_threshold=score_threshold, nms_iou=nms_iou,
                                       max_detections=max_detections)
            for b, target in enumerate(targets):
                # valid frames only: a padded frame repeats the video's last image id
                ran = {int(i): int(a) for i, a, ok in zip(target["image_ids"].tolist(), actions[b].tolist(),
                                                            target["valid"].tolist()) if ok}
                seen.update(ran)
                for r in video_detection_rows(dets[b], target):
                    rows[ran[r["image_id"]]].append(r)
    finally:
        m.train(was)
    gt = gt_subset(gt, seen)
    cal = m.identity_calibration(C).double()
    stats = {}
    for i, name in ((F0, "f0"), (F1, "f1")):
        table = match_detections(gt, rows[i])
        keep = ~table.ignore
        z = np.log(np.clip(table.score, 1e-7, 1 - 1e-7) / np.clip(1 - table.score, 1e-7, None))
        for k in range(C):
            sel = keep & (table.category == k)
            cal[i, 0, k], cal[i, 1, k] = platt_fit(z[sel], table.tp[sel], prior)
        stats[name] = {"detections": int(keep.sum()), "matched": int(table.tp[keep].sum())}
    m.score_calibration.copy_(cal.to(m.score_calibration))
    if progress is not None:
        progress(f"score calibration on {sum(s['detections'] for s in stats.values())} detections: "
                 + "; ".join(f"{n} scale {cal[i, 0].mean():.2f} bias {cal[i, 1].mean():+.2f} (class means, "
                             f"{stats[n]['matched']}/{stats[n]['detections']} matched)"
                             for i, n in ((F0, "f0"), (F1, "f1"))))
    return m.score_calibration.detach().clone(), stats
