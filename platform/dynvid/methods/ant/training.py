"""ANT's two training stages (Sec. 3.1, 3.2, 4.1).

Stage 1 (:func:`sandwich_step`): the weight-sharing supernet trained with the sandwich rule
and in-place knowledge distillation.

One step: the largest subnet learns the detection labels (focal + smooth-L1 on
EfficientDet's anchors); the smallest and ``sandwich_random`` random subnets learn the
largest subnet's detections (:func:`~.modules.inplace_distillation_loss`); the losses are
summed, so one optimizer step updates the shared weights for all of them. Before a subnet
is evaluated its BatchNorm statistics are recalibrated (:func:`~.modules.recalibrate_bn`).

Stage 2 (:func:`gate_step`): fusion modules and gates trained with the supernet on clips
with a fixed schedule of one key frame in ``key_every`` (3). Key frames run the full
network; non-key frames run fusion + Gumbel gates and learn the labels plus a KD loss
between their fused stage inputs and the golden ones (the same frame through the full
network, no gradient). Choice: a width-cost term ``cost_weight · mean_s E[ratio_s / 6]``
(over the gates' straight-through one-hots) keeps the gates from always picking the full
width; the paper does not state its cost objective.
"""

from __future__ import annotations

import random

import torch

from dynvid.detection.efficientdet import retina_anchors
from dynvid.detection.losses import detection_loss
from dynvid.methods.ant.model import ANTDetector
from dynvid.methods.ant.modules import inplace_distillation_loss, sandwich_configs

__all__ = ["detection_loss_batch", "gate_step", "sandwich_step"]


def detection_loss_batch(cls: torch.Tensor, box: torch.Tensor, anchors: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """Focal classification + smooth-L1 localisation, averaged over the images of a batch;
    ``targets[b]`` holds normalized xyxy ``boxes`` and 0-based ``labels``."""
    total = cls.new_zeros(())
    for b, t in enumerate(targets):
        c, loc = detection_loss(cls[b], box[b], anchors, t["boxes"].to(cls.device), t["labels"].to(cls.device),
                                focal=True)
        total = total + c + loc
    return total / len(targets)


def sandwich_step(model: ANTDetector, frames: torch.Tensor, targets: list[dict], rng: random.Random,
                  num_random: int = 2, kd_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed loss of one sandwich step and its parts (see the module docstring)."""
    configs = sandwich_configs(rng, num_random)
    cls, box, _ = model.forward_static(frames, configs[0])
    anchors = retina_anchors(model.last_sizes, tuple(frames.shape[-2:])).to(frames.device)
    largest = detection_loss_batch(cls, box, anchors, targets)
    teacher = (cls.detach(), box.detach())
    kd_total = cls.new_zeros(())
    for config in configs[1:]:
        s_cls, s_box, _ = model.forward_static(frames, config)
        kd_total = kd_total + inplace_distillation_loss(s_cls, s_box, *teacher)
    loss = largest + kd_weight * kd_total
    return loss, {"loss": float(loss.detach()), "largest_loss": float(largest.detach()),
                  "kd_loss": float(kd_total.detach()) / max(1, len(configs) - 1)}


def gate_step(model: ANTDetector, clips: torch.Tensor, targets: list[list[dict]], tau: float, key_every: int = 3,
              kd_weight: float = 1.0, cost_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-2 loss over clips ``(B, T, 3, H, W)`` with ``targets[b][t]`` per frame."""
    from torch.nn import functional as F

    from dynvid.backbones.efficientnet import RATIOS

    B, T = clips.shape[:2]
    widths = torch.tensor(RATIOS, dtype=clips.dtype, device=clips.device) / max(RATIOS)
    det_total, kd_total, cost_total, nonkey = clips.new_zeros(()), clips.new_zeros(()), clips.new_zeros(()), 0
    key = None
    for t in range(T):
        frame_targets = [targets[b][t] for b in range(B)]
        if t % key_every == 0:
            cls, box, outs = model.forward_static(clips[:, t])
            key = model.key_features(outs)
        else:
            cls, box, _, d = model.forward_nonkey(clips[:, t], key, tau=tau, details=True)
            with torch.no_grad():
                golden = model.key_features(model.forward_static(clips[:, t])[2])
            kd_total = kd_total + sum(F.mse_loss(f, g) for f, g in zip(d["fused"], golden)) / len(golden)
            cost_total = cost_total + torch.stack([(oh * widths).sum(1).mean() for oh in d["onehots"]]).mean()
            nonkey += 1
        anchors = retina_anchors(model.last_sizes, tuple(clips.shape[-2:])).to(clips.device)
        det_total = det_total + detection_loss_batch(cls, box, anchors, frame_targets)
    det, kd, cost = det_total / T, kd_total / max(1, nonkey), cost_total / max(1, nonkey)
    loss = det + kd_weight * kd + cost_weight * cost
    return loss, {"loss": float(loss.detach()), "det_loss": float(det.detach()), "kd_loss": float(kd.detach()),
                  "width": float(cost.detach())}
