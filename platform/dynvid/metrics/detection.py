"""COCO-style detection metrics through pycocotools: mAP@0.5 (Looking Fast and Slow, Sec. 4,
over every frame of ImageNet VID) and AP@[.5:.95] (ANT, Sec. 4, as UA-DETRAC is evaluated).

Ground truth is the COCO-style JSON dict of ``CocoVideoDetection.to_coco_gt()`` (or a
``pycocotools.coco.COCO``); detections are rows ``{"image_id", "category_id", "bbox":
[x, y, w, h], "score"}`` in the ground truth's pixel coordinates (:func:`to_coco_detections`
turns a detector's xyxy boxes into them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import torch

__all__ = ["MatchTable", "ap50_from_matches", "coco_evaluate", "gather_from_ranks", "gt_subset", "match_detections",
           "to_coco_detections", "video_detection_rows"]

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


def gt_subset(gt: dict, image_ids) -> dict:
    """The COCO ground-truth dict ``gt`` with only the images ``image_ids`` and their
    annotations (categories and the rest kept): scoring the frames a run saw of a larger split."""
    keep = set(image_ids)
    return {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


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


def _coco(gt):
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(gt, detections: list[dict]) -> dict[str, float]:
    """``{"AP" (= AP@[.5:.95]), "AP50" (= mAP@0.5), "AP75", "AP_small", "AP_medium",
    "AP_large"}`` of ``detections`` against ``gt``; no detection at all scores 0."""
    from pycocotools.cocoeval import COCOeval

    gt = _coco(gt)
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


@dataclasses.dataclass
class MatchTable:
    """COCOeval's per-image matching at IoU 0.5 (area "all", 100 detections per image and
    class), kept so that mAP@0.5 can be recomputed for any multiset of the images without
    matching again (:func:`ap50_from_matches`): one entry per detection (``image``: index into
    ``image_ids``, ``category``: index into ``category_ids``, ``score``, ``tp``: matched to a
    ground-truth box, ``ignore``: matched to an ignored one) and ``positives[category, image]``,
    the image's non-ignored ground-truth boxes of that class."""

    image_ids: list[int]
    category_ids: list[int]
    image: np.ndarray
    category: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    ignore: np.ndarray
    positives: np.ndarray


def match_detections(gt, detections: list[dict]) -> MatchTable:
    """The :class:`MatchTable` of ``detections`` against ``gt`` (pycocotools' own matching)."""
    from pycocotools.cocoeval import COCOeval

    gt = _coco(gt)
    image_ids, category_ids = sorted(gt.getImgIds()), sorted(gt.getCatIds())
    img_index = {i: k for k, i in enumerate(image_ids)}
    cat_index = {c: k for k, c in enumerate(category_ids)}
    positives = np.zeros((len(category_ids), len(image_ids)), dtype=np.int64)
    cols: dict[str, list] = {"image": [], "category": [], "score": [], "tp": [], "ignore": []}
    if detections:
        unknown = sorted({d["image_id"] for d in detections} - set(image_ids))
        if unknown:
            raise ValueError(f"detections for image ids not in the ground truth: {unknown[:5]}")
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(detections), "bbox")
            ev.params.iouThrs = np.array([0.5])
            ev.evaluate()
        max_det = ev.params.maxDets[-1]
        for e in ev.evalImgs:
            if e is None or e["aRng"] != ev.params.areaRng[0] or e["maxDet"] != max_det:
                continue
            c, i = cat_index[e["category_id"]], img_index[e["image_id"]]
            positives[c, i] = int(np.sum(~np.asarray(e["gtIgnore"], dtype=bool)))
            n = len(e["dtScores"])
            cols["image"] += [i] * n
            cols["category"] += [c] * n
            cols["score"] += list(e["dtScores"])
            cols["tp"] += list(np.asarray(e["dtMatches"][0]) > 0)
            cols["ignore"] += list(np.asarray(e["dtIgnore"][0], dtype=bool))
    else:  # still count the positives: no detection scores 0, not "no class"
        for ann in gt.loadAnns(gt.getAnnIds()):
            if not ann.get("iscrowd", 0):
                positives[cat_index[ann["category_id"]], img_index[ann["image_id"]]] += 1
    return MatchTable(image_ids, category_ids, np.asarray(cols["image"], dtype=np.int64),
                      np.asarray(cols["category"], dtype=np.int64), np.asarray(cols["score"], dtype=np.float64),
                      np.asarray(cols["tp"], dtype=bool), np.asarray(cols["ignore"], dtype=bool), positives)


def ap50_from_matches(table: MatchTable, weights: np.ndarray | None = None) -> float:
    """mAP@0.5 as COCOeval accumulates it (101 recall points, precision made monotone,
    classes without positives left out), over the images of ``table`` each taken
    ``weights[image]`` times (non-negative integers; None: once each). A bootstrap replicate
    over videos gives each image its video's draw count; the copies of an image keep its
    matches, as re-numbered duplicates would under COCOeval."""
    w = np.ones(len(table.image_ids), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    if w.shape != (len(table.image_ids),) or (w < 0).any():
        raise ValueError(f"weights must be {len(table.image_ids)} non-negative counts, one per image")
    rec_thrs = np.linspace(0.0, 1.0, 101)
    per_class = []
    for c in range(len(table.category_ids)):
        npos = int((table.positives[c] * w).sum())
        if npos == 0:
            continue
        sel = (table.category == c) & ~table.ignore
        reps = w[table.image[sel]]
        score, tp = np.repeat(table.score[sel], reps), np.repeat(table.tp[sel], reps)
        order = np.argsort(-score, kind="mergesort")
        tps, fps = np.cumsum(tp[order]), np.cumsum(~tp[order])
        recall = tps / npos
        precision = tps / (tps + fps + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        idx = np.searchsorted(recall, rec_thrs, side="left")
        q = np.zeros(len(rec_thrs))
        ok = idx < len(precision)
        q[ok] = precision[idx[ok]]
        per_class.append(q.mean())
    return float(np.mean(per_class)) if per_class else 0.0
