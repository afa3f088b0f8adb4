"""COCO-style detection metrics through pycocotools: mAP@0.5 (Looking Fast and Slow, Sec. 4,
over every frame of ImageNet VID) and AP@[.5:.95] (ANT, Sec. 4, as UA-DETRAC is evaluated).

Ground truth is the COCO-style JSON dict of ``CocoVideoDetection.to_coco_gt()`` (or a
``pycocotools.coco.COCO``); detections are rows ``{"image_id", "category_id", "bbox":
[x, y, w, h], "score"}`` in the ground truth's pixel coordinates (:func:`to_coco_detections`
turns a detector's xyxy boxes into them).
"""

from __future__ import annotations

import contextlib
import io

import torch

__all__ = ["coco_evaluate", "gather_from_ranks", "to_coco_detections", "video_detection_rows"]

_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def to_coco_detections(image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                       label_offset: int = 1) -> list[dict]:
    """COCO result rows of one image from xyxy ``boxes`` and 0-based ``labels`` (category
    ``label + label_offset``, COCO ids being 1-based)."""
    rows = []
    for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        rows.append({"image_id": int(image_id), "category_id": int(c) + label_offset,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
    return rows


def video_detection_rows(dets: list[dict], target: dict) -> list[dict]:
    """COCO rows of one video's per-frame detections (normalized xyxy ``boxes``, ``scores``,
    ``labels``), scaled to each frame's ``orig_sizes``; frames flagged ``valid=False`` (padding)
    are skipped."""
    rows = []
    for t, d in enumerate(dets):
        if not bool(target["valid"][t]):
            continue
        h, w = (int(v) for v in target["orig_sizes"][t])
        boxes = d["boxes"].clamp(0, 1) * d["boxes"].new_tensor([w, h, w, h])
        rows.extend(to_coco_detections(int(target["image_ids"][t]), boxes, d["scores"], d["labels"]))
    return rows


def gather_from_ranks(obj):
    """Every rank's ``obj`` (a list, one per rank) under ``torch.distributed`` with more than one
    rank, else ``None``: each rank evaluated its shard of the videos, and detections are scored
    once over all of them."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def coco_evaluate(gt, detections: list[dict]) -> dict[str, float]:
    """``{"AP" (= AP@[.5:.95]), "AP50" (= mAP@0.5), "AP75", "AP_small", "AP_medium",
    "AP_large"}`` of ``detections`` against ``gt``; no detection at all scores 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(gt, COCO):
        coco = COCO()
        coco.dataset = gt
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        gt = coco
    if not detections:
        return {name: 0.0 for name in _NAMES}
    known = set(gt.getImgIds())
    unknown = sorted({d["image_id"] for d in detections} - known)
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {unknown[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: max(0.0, float(v)) for name, v in zip(_NAMES, ev.stats[:6])}
