"""Tests of dynvid.detection.boxes and anchors: IoU, SSD box coding, NMS and anchor layout,
on constructed cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dynvid.detection.anchors import anchors_per_cell, level_scales, ssd_anchors
from torchvision.ops import nms

from dynvid.detection.boxes import box_iou, decode, encode, separate_groups


def test_iou_of_constructed_boxes() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    assert box_iou(a, b).tolist() == [[pytest.approx(1 / 7), 1.0, 0.0, 0.0]]  # 1 / (4 + 4 - 1)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(a, torch.zeros(3))


def test_encode_decode_round_trip_and_known_code() -> None:
    anchors = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 3.0]])
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 8.0, 4.0]])
    codes = encode(boxes, anchors)
    # box 0 is the anchor moved right by half its width: tx = 10 · 1/2, same size
    assert codes[0].tolist() == pytest.approx([5.0, 0.0, 0.0, 0.0])
    assert codes[1, 2].item() == pytest.approx(5 * math.log(2))  # twice as wide
    assert torch.allclose(decode(codes, anchors), boxes, atol=1e-5)


def test_separated_groups_suppress_only_within_their_image_and_class() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95], dtype=torch.float64)
    valid = torch.ones(4, dtype=torch.bool)
    one_class = separate_groups(boxes, torch.zeros(4, dtype=torch.long), valid, 2)
    assert one_class.dtype == torch.float64
    assert nms(one_class, scores, 0.5).tolist() == [3, 2]  # 3 beats 0 (IoU 0.9) which would beat 1
    classes = torch.tensor([0, 1, 0, 1])
    # per class: {0, 2} do not overlap; in class 1, 3 suppresses 1 (IoU 72 / 118 = 0.61)
    assert sorted(nms(separate_groups(boxes, classes, valid, 2), scores, 0.5).tolist()) == [0, 2, 3]
    # two images of the same boxes: nothing crosses from one image to the other
    two = separate_groups(torch.stack([boxes, boxes]), torch.stack([classes, classes]),
                          torch.ones(2, 4, dtype=torch.bool), 2)
    assert sorted(nms(two.reshape(-1, 4), scores.repeat(2), 0.5).tolist()) == [0, 2, 3, 4, 6, 7]
    # an invalid candidate becomes an empty box: kept by NMS (masked by the caller), suppressing nothing
    invalid = torch.tensor([False, True, True, True])
    apart = separate_groups(boxes, classes, invalid, 2)
    assert apart[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert sorted(nms(apart, torch.tensor([0.99, 0.8, 0.7, 0.95], dtype=torch.float64), 0.5).tolist()) == [0, 2, 3]


def test_anchor_layout_and_scales() -> None:
    anchors = ssd_anchors([(2, 3), (1, 1)])
    assert anchors_per_cell() == 4 and anchors.shape == ((2 * 3 + 1) * 4, 4)
    assert level_scales(2) == pytest.approx([0.2, 0.95, 1.0])
    first = anchors[:4]  # cell (row 0, col 0) of level 0: centre (1/6, 1/4)
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centres, torch.tensor([[1 / 6, 0.25]] * 4))
    wh = first[:, 2:] - first[:, :2]
    assert wh[0].tolist() == pytest.approx([0.2, 0.2])  # ratio 1
    assert (wh[1, 0] / wh[1, 1]).item() == pytest.approx(0.5) and (wh[2, 0] / wh[2, 1]).item() == pytest.approx(2.0)
    assert wh[3, 0].item() == pytest.approx(math.sqrt(0.2 * 0.95))  # the extra square anchor
    assert anchors[4:8].mean(0)[0] > first.mean(0)[0]  # next cell is to the right (row-major)
    with pytest.raises(ValueError):
        ssd_anchors([(2, 2)], aspect_ratios=(1.0, 0.0))


def test_postprocess_keeps_the_top_k_candidates_before_nms():
    from dynvid.detection.ssdlite import postprocess

    anchors = torch.rand(50, 2) * 0.5
    anchors = torch.cat([anchors, anchors + 0.3], 1)
    logits = torch.linspace(-1, 3, 50 * 2).view(1, 50, 2)  # every pair above the threshold
    capped = postprocess(logits, torch.zeros(1, 50, 4), anchors, 0.05, 1.0, 1000, pre_nms_top_k=10)[0]
    assert len(capped["scores"]) == 10  # IoU threshold 1.0: NMS drops nothing, the cap does
    assert torch.allclose(capped["scores"], torch.sigmoid(logits.flatten()).topk(10).values)
