"""Tests of dynvid.metrics.detection (COCO evaluation through pycocotools) on constructed
ground truth and detections whose APs are known."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pycocotools")

from dynvid.metrics.detection import coco_evaluate, to_coco_detections  # noqa: E402


def _gt() -> dict:
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def test_perfect_detections_score_one() -> None:
    dets = to_coco_detections(1, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), torch.tensor([0.9]), torch.tensor([0]))
    dets += to_coco_detections(2, torch.tensor([[50.0, 50.0, 80.0, 80.0]]), torch.tensor([0.8]), torch.tensor([1]))
    assert dets[0]["bbox"] == [10.0, 10.0, 40.0, 40.0] and dets[1]["category_id"] == 2
    m = coco_evaluate(_gt(), dets)
    assert m["AP50"] == pytest.approx(1.0) and m["AP"] == pytest.approx(1.0)


def test_loose_box_passes_at_05_but_not_at_strict_thresholds() -> None:
    # IoU of [10,10,50,50] with [10,10,50,60]: 1600 / 2000 = 0.8; category 2 missed entirely
    dets = to_coco_detections(1, torch.tensor([[10.0, 10.0, 50.0, 60.0]]), torch.tensor([0.9]), torch.tensor([0]))
    m = coco_evaluate(_gt(), dets)
    assert m["AP50"] == pytest.approx(0.5)  # class a perfect, class b zero
    # class a is found at IoU thresholds .50-.80 (7 of 10), class b never
    assert m["AP"] == pytest.approx(0.35, abs=0.01)
    assert coco_evaluate(_gt(), [])["AP50"] == 0.0
    with pytest.raises(ValueError, match="image ids"):
        coco_evaluate(_gt(), to_coco_detections(9, torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long)))
