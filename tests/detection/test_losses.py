"""Tests of dynvid.detection.losses: anchor matching, focal loss, hard-negative mining and the
SSD loss on constructed cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dynvid.detection.boxes import encode
from torchvision.ops import sigmoid_focal_loss

from dynvid.detection.losses import detection_loss, hard_negative_mask, match_anchors

ANCHORS = torch.tensor([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=torch.float)


def test_matching_threshold_and_forced_best_anchor() -> None:
    gt = torch.tensor([[0, 0, 10, 10], [40, 40, 52, 52]], dtype=torch.float)
    matched = match_anchors(ANCHORS, gt)
    # anchors 0 and 1 overlap object 0 (IoU 1 and 0.9); anchor 3 overlaps object 1 only by
    # 4/(144+100-4) = 0.017 but is its best anchor, so it is forced; anchor 2 is background
    assert matched.tolist() == [0, 0, -1, 1]
    assert match_anchors(ANCHORS, torch.zeros(0, 4)).tolist() == [-1, -1, -1, -1]


def test_focal_loss_reduces_to_bce_and_down_weights_easy_examples() -> None:
    """What detection_loss assumes of torchvision's op: alpha=-1, gamma=0 is the plain sigmoid
    loss (SSD's), gamma=2 is Eq. 5's modulation."""
    logits = torch.tensor([[3.0, -2.0], [0.1, 0.2]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    plain = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0, reduction="none")
    assert torch.allclose(plain, F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))
    focal = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2.0, reduction="none")
    ratio = focal / plain
    assert ratio[0, 0] < ratio[1, 0]  # the confident correct prediction is down-weighted more
    p = torch.sigmoid(torch.tensor(3.0))
    assert focal[0, 0].item() == pytest.approx(plain[0, 0].item() * (1 - p.item()) ** 2, rel=1e-5)


def test_hard_negative_mining_picks_the_worst_negatives() -> None:
    loss = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3])
    positive = torch.tensor([True, False, False, False, False, False])
    assert hard_negative_mask(loss, positive, ratio=2).nonzero().flatten().tolist() == [2, 4]
    assert hard_negative_mask(loss, torch.zeros(6, dtype=torch.bool), ratio=3).sum() == 1  # at least one


def test_detection_loss_is_small_for_the_right_answer() -> None:
    gt, labels = torch.tensor([[1, 0, 11, 10]], dtype=torch.float), torch.tensor([1])
    matched = match_anchors(ANCHORS, gt)
    codes = torch.zeros(4, 4)
    codes[matched >= 0] = encode(gt[matched[matched >= 0]], ANCHORS[matched >= 0])
    good = torch.full((4, 2), -8.0)
    good[matched >= 0, 1] = 8.0
    for focal in (True, False):
        cls, loc = detection_loss(good, codes, ANCHORS, gt, labels, focal=focal)
        bad_cls, bad_loc = detection_loss(-good, torch.zeros(4, 4), ANCHORS, gt, labels, focal=focal)
        assert loc.item() == pytest.approx(0.0, abs=1e-6) and bad_loc > 0.1
        assert cls < 0.01 and bad_cls > 1.0
    codes.requires_grad_(True)
    logits = torch.zeros(4, 2, requires_grad=True)
    cls, loc = detection_loss(logits, codes, ANCHORS, gt, labels)
    (cls + loc).backward()
    assert logits.grad.abs().sum() > 0
