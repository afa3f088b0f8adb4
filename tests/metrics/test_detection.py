"""Tests of dynvid.metrics.detection (COCO evaluation through pycocotools) on constructed
ground truth and detections whose APs are known."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pycocotools")

from dynvid.metrics.detection import (ap50_from_matches, coco_evaluate, gt_subset, match_detections,  # noqa: E402
                                     to_coco_detections)


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


def test_gt_subset_scores_only_the_frames_kept() -> None:
    dets = to_coco_detections(1, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), torch.tensor([0.9]), torch.tensor([0]))
    assert coco_evaluate(_gt(), dets)["AP50"] == pytest.approx(0.5)  # image 2's class-b box is missed
    sub = gt_subset(_gt(), {1})
    assert [im["id"] for im in sub["images"]] == [1] and [a["image_id"] for a in sub["annotations"]] == [1]
    assert sub["categories"] == _gt()["categories"]
    assert coco_evaluate(sub, dets)["AP50"] == pytest.approx(1.0)  # class b has no box left to miss


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


def _random_set(seed: int, images: int = 12, classes: int = 3):
    """Ground truth and noisy detections (jittered true boxes, false positives, misses) with
    distinct random scores, so COCOeval's ordering has no ties."""
    g = torch.Generator().manual_seed(seed)
    gt = {"images": [{"id": i + 1, "width": 100, "height": 100} for i in range(images)], "annotations": [],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)]}
    dets = []
    for i in range(images):
        for _ in range(int(torch.randint(0, 4, (1,), generator=g))):
            x, y = (torch.rand(2, generator=g) * 60).tolist()
            w, h = (10 + torch.rand(2, generator=g) * 30).tolist()
            c = int(torch.randint(0, classes, (1,), generator=g))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": c + 1,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            if float(torch.rand(1, generator=g)) < 0.8:  # found, more or less well
                jitter = (torch.randn(4, generator=g) * 6).tolist()
                box = torch.tensor([[x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]]])
                dets += to_coco_detections(i + 1, box, torch.rand(1, generator=g), torch.tensor([c]))
        for _ in range(int(torch.randint(0, 3, (1,), generator=g))):  # false positives
            x, y = (torch.rand(2, generator=g) * 70).tolist()
            dets += to_coco_detections(i + 1, torch.tensor([[x, y, x + 20, y + 20]]), torch.rand(1, generator=g),
                                       torch.randint(0, classes, (1,), generator=g))
    return gt, dets


def _copies(gt: dict, dets: list[dict], counts: list[int]) -> tuple[dict, list[dict]]:
    """The data set in which image i appears counts[i] times, each copy under a new id."""
    out = {"images": [], "annotations": [], "categories": gt["categories"]}
    rows = []
    for i, n in enumerate(counts):
        for k in range(n):
            new = 1000 * (k + 1) + i + 1
            out["images"].append({"id": new, "width": 100, "height": 100})
            for a in gt["annotations"]:
                if a["image_id"] == i + 1:
                    out["annotations"].append({**a, "id": len(out["annotations"]) + 1, "image_id": new})
            rows += [{**d, "image_id": new} for d in dets if d["image_id"] == i + 1]
    return out, rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap50_from_matches_is_cocoevals_on_the_data_and_on_redrawn_copies(seed) -> None:
    gt, dets = _random_set(seed)
    table = match_detections(gt, dets)
    full = coco_evaluate(gt, dets)["AP50"]
    assert 0.05 < full < 0.95  # neither trivial end
    assert ap50_from_matches(table) == pytest.approx(full, abs=1e-9)
    # a bootstrap draw: images twice, once or not at all, scored by COCOeval on re-numbered copies
    counts = [int(v) for v in torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(seed + 10))]
    copies_gt, copies_dets = _copies(gt, dets, counts)
    assert ap50_from_matches(table, counts) == pytest.approx(coco_evaluate(copies_gt, copies_dets)["AP50"], abs=1e-9)


def test_match_table_checks_its_input() -> None:
    gt, dets = _random_set(0)
    table = match_detections(gt, dets)
    with pytest.raises(ValueError, match="non-negative counts"):
        ap50_from_matches(table, [1] * 3)
    with pytest.raises(ValueError, match="image ids"):
        match_detections(gt, to_coco_detections(99, torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long)))
    empty = match_detections(gt, [])
    assert empty.positives.sum() == len(gt["annotations"]) and ap50_from_matches(empty) == 0.0
