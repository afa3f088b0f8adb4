"""ANT stage 1 (Sec. 3.1, 4.1): the weight-sharing supernet trained with the sandwich rule and
in-place knowledge distillation.

One step: the largest subnet learns the detection labels (focal + smooth-L1 on
EfficientDet's anchors); the smallest and ``sandwich_random`` random subnets learn the
largest subnet's detections (:func:`~.modules.inplace_distillation_loss`); the losses are
summed, so one optimizer step updates the shared weights for all of them. Before a subnet
is evaluated its BatchNorm statistics are recalibrated (:func:`~.modules.recalibrate_bn`).
"""

from __future__ import annotations

import random

import torch

from dynvid.detection.efficientdet import retina_anchors
from dynvid.detection.losses import detection_loss
from dynvid.methods.ant.model import ANTDetector
from dynvid.methods.ant.modules import inplace_distillation_loss, sandwich_configs

__all__ = ["detection_loss_batch", "sandwich_step"]


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
