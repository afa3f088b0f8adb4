"""SSDLite detection head as Looking Fast and Slow uses it (Sec. 3.1): SSDLite extra layers
(MobileNetV2 paper, Sec. 6.2: the SSD convolutions replaced by depthwise-separable ones) whose
feature maps all have a constant depth of 256 channels, so that one convolutional box
predictor is **shared** by every level; anchors with aspect ratios {1, 0.5, 2}.

Choices where the paper is vague: the pyramid starts from the backbone's last feature map
projected to 256 channels by a 1×1 convolution, then each extra level is 1×1 (128) →
depthwise 3×3 stride 2 → 1×1 (256), BatchNorm + ReLU6 throughout (the MobileNetV2 SSDLite
blocks); the shared predictor is a depthwise 3×3 + pointwise 1×1 per output (box codes, class
logits), with a bias, no normalisation; the class bias starts at RetinaNet's prior p = 0.01 so the
many background anchors do not swamp the first updates of a detector trained from scratch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import nms

from dynvid.detection.anchors import ASPECT_RATIOS, anchors_per_cell, ssd_anchors
from dynvid.detection.boxes import decode, separate_groups

__all__ = ["SSDLiteHead", "SharedBoxPredictor", "postprocess"]

DEPTH = 256
PRIOR = 0.01
"""Initial foreground probability of every anchor and class (the classification bias)."""


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class SharedBoxPredictor(nn.Module):
    """One depthwise-separable predictor applied to every 256-channel level."""

    def __init__(self, num_classes: int, num_anchors: int, channels: int = DEPTH) -> None:
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.box = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels),
                                 nn.Conv2d(channels, num_anchors * 4, 1))
        self.cls = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels),
                                 nn.Conv2d(channels, num_anchors * num_classes, 1))
        with torch.no_grad():  # RetinaNet's prior (Lin et al., Sec. 4.1): every anchor starts at p = 0.01
            self.cls[1].bias.fill_(-math.log((1 - PRIOR) / PRIOR))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H·W·A, C)`` logits and ``(B, H·W·A, 4)`` codes, cell by cell, anchors innermost."""
        b = x.shape[0]
        cls = self.cls(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes)
        box = self.box(x).permute(0, 2, 3, 1).reshape(b, -1, 4)
        return cls, box


class SSDLiteHead(nn.Module):
    """Extra layers + shared predictor on a backbone feature map.

    Args:
        in_channels: channels of the backbone (or memory) feature map.
        num_classes: object classes (sigmoid scores, no background column).
        num_levels: feature maps of the pyramid (the first is the input's resolution).
        aspect_ratios: anchor aspect ratios (Sec. 3.1: {1, 0.5, 2}).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int = 4,
                 aspect_ratios=ASPECT_RATIOS) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.aspect_ratios = tuple(aspect_ratios)
        self.project = _conv_bn(in_channels, DEPTH)
        self.extras = nn.ModuleList(
            nn.Sequential(_conv_bn(DEPTH, DEPTH // 2), _conv_bn(DEPTH // 2, DEPTH // 2, 3, 2, DEPTH // 2),
                          _conv_bn(DEPTH // 2, DEPTH)) for _ in range(num_levels - 1))
        self.predictor = SharedBoxPredictor(num_classes, anchors_per_cell(self.aspect_ratios))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """``(cls_logits (B, N, C), box_codes (B, N, 4), feature sizes)`` over all levels."""
        x = self.project(features)
        levels = [x]
        for block in self.extras:
            x = block(x)
            levels.append(x)
        outs = [self.predictor(level) for level in levels]
        sizes = [tuple(level.shape[-2:]) for level in levels]
        return torch.cat([c for c, _ in outs], 1), torch.cat([b for _, b in outs], 1), sizes

    def anchors(self, sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Normalised xyxy anchors matching the head's output order."""
        return ssd_anchors(sizes, self.aspect_ratios)


@torch.no_grad()
def postprocess(cls_logits: torch.Tensor, box_codes: torch.Tensor, anchors: torch.Tensor,
                score_threshold: float = 0.05, iou_threshold: float = 0.6, max_detections: int = 100,
                pre_nms_top_k: int = 1000, device: torch.device | str | None = None) -> list[dict]:
    """Per image: decoded boxes (anchor coordinates), scores and labels after per-class NMS of
    the ``pre_nms_top_k`` best-scoring (anchor, class) pairs above ``score_threshold`` (the
    cap keeps an unsure detector's NMS from growing quadratically; torchvision's RetinaNet
    keeps 1000 per level), best first.

    All images of the batch are processed together on the logits' device: the candidates of
    every image and class are moved apart (:func:`~dynvid.detection.boxes.separate_groups`)
    and torchvision's NMS runs with static shapes (the candidates below the threshold take
    part as empty boxes that suppress nothing): on a GPU one CUDA kernel for the whole batch,
    on the CPU one C++ call per image (NMS compares every pair it is given: per image is
    B × k² pairs instead of (B·k)²). The detections come back on ``device`` (None: the
    logits' device) with one read to the host for the whole batch, plus the one torchvision's
    CUDA kernel makes for its mask. On the CPU, where a read costs nothing, the candidates
    are first cut to the most any image has above ``score_threshold``."""
    B, N, C = cls_logits.shape
    k = min(pre_nms_top_k, N * C)
    target = cls_logits.device if device is None else torch.device(device)
    if k == 0:
        empty = dict(boxes=torch.zeros(0, 4, device=target), scores=torch.zeros(0, device=target),
                     labels=torch.zeros(0, dtype=torch.long, device=target))
        return [dict(empty) for _ in range(B)]
    scores, flat = torch.sigmoid(cls_logits).reshape(B, N * C).topk(k, dim=1)  # best first
    valid = scores > score_threshold
    if cls_logits.device.type == "cpu":  # a read is free here: NMS over the candidates above the threshold only
        k = max(1, int(valid.sum(1).max()))  # they come first (best first); an unsure detector has few
        scores, flat, valid = scores[:, :k], flat[:, :k], valid[:, :k]
    labels = flat % C
    boxes = decode(box_codes, anchors).gather(1, (flat // C)[..., None].expand(B, k, 4))
    apart = separate_groups(boxes, labels, valid, C)
    if cls_logits.device.type == "cpu":  # one call per image: NMS compares every pair it is given
        flat_keep = torch.cat([nms(apart[b], scores[b].to(apart.dtype), iou_threshold) + b * k for b in range(B)])
    else:  # one kernel for the batch: the pairs are compared in parallel, the mask read back once
        flat_keep = nms(apart.reshape(-1, 4), scores.reshape(-1).to(apart.dtype), iou_threshold)
    keep = torch.zeros(B * k, dtype=torch.bool, device=boxes.device).index_fill_(0, flat_keep, True).view(B, k)
    keep &= valid
    keep &= keep.cumsum(1) <= max_detections
    # the kept candidates first (still best first), the first max_detections of them read back
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :min(k, max_detections)]
    packed = torch.cat([boxes.float(), scores.float()[..., None], labels.float()[..., None]], -1)
    packed = packed.gather(1, order[..., None].expand(*order.shape, 6))
    counts = keep.sum(1, keepdim=True).to(packed.dtype)[:, None].expand(B, 1, 6)
    packed = torch.cat([counts, packed], 1)
    if target != packed.device:
        packed = packed.to(target)
    n_kept = [int(n) for n in packed[:, 0, 0].tolist()]  # on the host now (or the one read)
    return [{"boxes": packed[b, 1:1 + n, :4].to(boxes.dtype), "scores": packed[b, 1:1 + n, 4].to(scores.dtype),
             "labels": packed[b, 1:1 + n, 5].long()} for b, n in enumerate(n_kept)]
