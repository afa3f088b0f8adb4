"""COCO-style video detection dataset (ImageNet-VID layout), for Looking Fast and Slow.

Looking Fast and Slow (Liu et al., 2019; ``shared/papers/looking-fast-and-slow-
interleaved-detection.txt``, Sec. 4) trains and evaluates an interleaved video
detector on ImageNet VID, scored with COCO mAP@0.5 over *every* frame. This module
reads that data in the COCO-style video JSON that ``dynvid data synth`` also writes.

Format (``ROOT/annotations/{split}.json``)::

    {"info": {...},
     "videos":      [{"id", "name", "width"?, "height"?, "length"?, "fps"?, "action"?}],
     "images":      [{"id", "video_id", "frame_id" (0-based), "file_name", "width"?, "height"?}],
     "annotations": [{"id", "image_id", "category_id" (1-based), "bbox": [x, y, w, h],
                      "video_id"?, "area"?, "iscrowd"?, "track_id"?}],
     "categories":  [{"id", "name"}]}

``file_name`` is relative to ``image_root`` (default: the parent of ``annotations/``)
and names a JPEG. Keys marked ``?`` are optional; everything else is checked when the
dataset is built and a bad entry raises :class:`~dynvid.data.errors.AnnotationError`
naming the file and the entry (``annotations[12].category_id=7 not in categories``).
Category ids must be exactly ``1..K`` so that labels index a ``K + 1``-way head with 0
as background; a file with gaps is rejected with a message saying so.

Choices, in one place:

- **Items.** ``mode="train"``: index ``i`` is video ``i`` (videos without frames are
  dropped with a warning); the item is a random clip of ``clip_len`` frames taken
  every ``frame_stride`` frames. The randomness (clip start and any random transform)
  comes from a ``torch.Generator`` seeded from ``(seed, epoch, index)``, so an item is
  the same whichever DataLoader worker builds it; call :meth:`set_epoch` each epoch
  to draw new clips. ``mode="test"``: items are the windows of :func:`eval_windows`,
  in order, which together hold every frame of every video exactly once.
- **Short videos / tails.** Missing frames are filled by repeating the last real
  frame and flagged ``valid=False``; an evaluator scores only valid frames.
- **Boxes** are converted to ``xyxy`` in pixels of the returned frame, clamped to the
  image, and boxes left with no area are dropped. ``iscrowd=1`` boxes are not
  training targets; they come separately as ``crowd_boxes`` and keep their flag in
  :meth:`CocoVideoDetection.to_coco_gt` (COCOeval ignores detections matched to them).
- **Unreadable images** (missing, truncated, not an image) are recorded in
  ``bad_files`` with a ``logging`` warning. In train mode the item is skipped and the
  next video's clip is returned (DataLoader-friendly: no ``None`` to filter). In test
  mode the window is still returned, with that frame zeroed, target-free and
  ``valid=False``, so the other frames are still evaluated exactly once; leave its
  image id out of COCOeval's ``params.imgIds``. Once more than ``max_bad_fraction``
  of all images are bad a :class:`~dynvid.data.errors.DatasetError` is raised. Each
  DataLoader worker keeps its own ``bad_files``; call :meth:`verify_images` in the
  main process for a complete list up front.

Transforms are pure functions plus thin classes, each class called as
``t(sample, generator=None) -> sample`` on the item dict, so a random transform draws
from the item's generator and applies one decision to all frames of the clip.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from dynvid.data.errors import AnnotationError, BadFileLog, DatasetError, UnreadableFile
from dynvid.data.sampling import eval_windows, item_generator, sample_clip

__all__ = [
    "CocoVideoDetection",
    "collate_detection",
    "UnreadableFile",
    "read_rgb",
    "xywh_to_xyxy",
    "resize_boxes",
    "hflip_boxes",
    "resize_clip",
    "hflip_clip",
    "normalize",
    "Resize",
    "RandomHorizontalFlip",
    "Normalize",
    "Compose",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------
# Image decoding (shared with dynvid.data.segmentation)
# --------------------------------------------------------------------------------------


def read_rgb(path: str) -> torch.Tensor:
    """Decode an image file to a ``(3, H, W)`` uint8 tensor; raises :class:`UnreadableFile`."""
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableFile(path, f"{type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------
# Detection transforms: functional
# --------------------------------------------------------------------------------------


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO ``[x, y, w, h]`` to ``[x1, y1, x2, y2]``."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def resize_boxes(boxes: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Scale ``xyxy`` pixel boxes from an ``in_hw`` frame to an ``out_hw`` frame."""
    sy, sx = out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def hflip_boxes(boxes: torch.Tensor, width: int, height: int = 1) -> torch.Tensor:
    """Mirror ``xyxy`` pixel boxes in a frame ``width`` pixels wide (``torchvision.transforms.v2``
    on ``BoundingBoxes``; the height does not enter a horizontal flip)."""
    flipped = TF.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)))
    return flipped.as_subclass(torch.Tensor)


def resize_clip(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of float ``(T, C, H, W)`` frames to ``size=(H, W)``."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def hflip_clip(frames: torch.Tensor) -> torch.Tensor:
    """Mirror ``(..., H, W)`` frames (or label maps) left-right (``torchvision.transforms.v2``)."""
    return TF.horizontal_flip(frames)


def normalize(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on ``(T, C, H, W)`` frames."""
    m = frames.new_tensor(mean).view(1, -1, 1, 1)
    s = frames.new_tensor(std).view(1, -1, 1, 1)
    return (frames - m) / s


# --------------------------------------------------------------------------------------
# Detection transforms: classes, called as t(sample, generator=None) -> sample
# --------------------------------------------------------------------------------------

_BOX_KEYS = ("boxes", "crowd_boxes")


class Resize:
    """Resize every frame to a fixed ``size`` (``(H, W)`` or an int for square), scaling boxes."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        in_hw = tuple(sample["frames"].shape[-2:])
        sample["frames"] = resize_clip(sample["frames"], self.size)
        for key in _BOX_KEYS:
            sample[key] = [resize_boxes(b, in_hw, self.size) for b in sample[key]]
        return sample


class RandomHorizontalFlip:
    """With probability ``p`` mirror the whole clip (one decision for all its frames)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        if float(torch.rand((), generator=generator)) >= self.p:
            return sample
        height, width = sample["frames"].shape[-2:]
        sample["frames"] = hflip_clip(sample["frames"])
        for key in _BOX_KEYS:
            sample[key] = [hflip_boxes(b, width, height) for b in sample[key]]
        return sample


class Normalize:
    """Per-channel normalisation of the ``[0, 1]`` frames (ImageNet statistics by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        sample["frames"] = normalize(sample["frames"], self.mean, self.std)
        return sample


class Compose:
    """Apply transforms in order, passing the item's generator to each."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        for t in self.transforms:
            sample = t(sample, generator=generator)
        return sample


# --------------------------------------------------------------------------------------
# Annotation parsing and validation
# --------------------------------------------------------------------------------------


@dataclass
class _Frame:
    image_id: int
    frame_id: int
    path: str
    height: int | None
    width: int | None
    boxes: np.ndarray | None = None  # (N, 4) xyxy float32, iscrowd=0
    labels: np.ndarray | None = None  # (N,) int64
    track_ids: np.ndarray | None = None  # (N,) int64, -1 where absent
    crowd_boxes: np.ndarray | None = None  # (M, 4) xyxy float32, iscrowd=1


def _entry(path: str, entry: Any, where: str, required: Sequence[str]) -> dict:
    if not isinstance(entry, dict):
        raise AnnotationError(path, f"expected an object, got {type(entry).__name__}", key=where)
    for k in required:
        if k not in entry:
            raise AnnotationError(path, f"missing required key {k!r}", key=where)
    return entry


def _int(path: str, entry: dict, key: str, where: str, minimum: int | None = None) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnotationError(path, f"expected an integer, got {value!r}", key=f"{where}.{key}")
    if minimum is not None and value < minimum:
        raise AnnotationError(path, f"{value} < {minimum}", key=f"{where}.{key}")
    return value


def _load_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not UTF-8 text: {exc}") from exc
    if not isinstance(data, dict):
        raise AnnotationError(path, f"top level must be an object, got {type(data).__name__}")
    for key in ("videos", "images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(path, "missing required top-level key", key=key)
        if not isinstance(data[key], list):
            raise AnnotationError(path, f"expected a list, got {type(data[key]).__name__}", key=key)
    return data


def _parse(path: str, data: dict, image_root: str) -> tuple[list[dict], list[dict], list[list[_Frame]], dict]:
    """Validate ``data`` and group it: returns (categories, videos, frames per video, gt dict)."""
    categories = []
    for i, c in enumerate(data["categories"]):
        where = f"categories[{i}]"
        _entry(path, c, where, ("id", "name"))
        categories.append({"id": _int(path, c, "id", where, minimum=1), "name": str(c["name"])})
    ids = sorted(c["id"] for c in categories)
    if not ids:
        raise AnnotationError(path, "no categories", key="categories")
    if ids != list(range(1, len(ids) + 1)):
        raise AnnotationError(
            path, f"category ids must be exactly 1..{len(ids)} (labels index a K+1-way head), got {ids}",
            key="categories",
        )
    categories.sort(key=lambda c: c["id"])
    cat_ids = set(ids)

    videos, video_index = [], {}
    for i, v in enumerate(data["videos"]):
        where = f"videos[{i}]"
        _entry(path, v, where, ("id", "name"))
        vid = _int(path, v, "id", where)
        if vid in video_index:
            raise AnnotationError(path, f"duplicate video id {vid}", key=f"{where}.id")
        video_index[vid] = len(videos)
        videos.append(v)

    images: dict[int, tuple[int, _Frame, dict]] = {}
    seen_frames: dict[tuple[int, int], int] = {}
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        _entry(path, im, where, ("id", "video_id", "frame_id", "file_name"))
        iid = _int(path, im, "id", where)
        vid = _int(path, im, "video_id", where)
        fid = _int(path, im, "frame_id", where, minimum=0)
        if iid in images:
            raise AnnotationError(path, f"duplicate image id {iid}", key=f"{where}.id")
        if vid not in video_index:
            raise AnnotationError(path, f"video_id={vid} not in videos", key=f"{where}.video_id")
        if (vid, fid) in seen_frames:
            raise AnnotationError(
                path, f"frame_id={fid} of video {vid} already used by images[{seen_frames[vid, fid]}]",
                key=f"{where}.frame_id",
            )
        seen_frames[vid, fid] = i
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise AnnotationError(
                path, f"expected a non-empty string, got {im['file_name']!r}", key=f"{where}.file_name"
            )
        h = _int(path, im, "height", where, minimum=1) if "height" in im else None
        w = _int(path, im, "width", where, minimum=1) if "width" in im else None
        frame = _Frame(iid, fid, os.path.join(image_root, im["file_name"]), h, w)
        images[iid] = (vid, frame, {"boxes": [], "labels": [], "tracks": [], "crowd": []})

    gt_annotations = []
    ann_ids: set[int] = set()
    for i, a in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        _entry(path, a, where, ("id", "image_id", "category_id", "bbox"))
        aid = _int(path, a, "id", where)
        if aid in ann_ids:
            raise AnnotationError(path, f"duplicate annotation id {aid}", key=f"{where}.id")
        ann_ids.add(aid)
        iid = _int(path, a, "image_id", where)
        if iid not in images:
            raise AnnotationError(path, f"image_id={iid} not in images", key=f"{where}.image_id")
        cid = _int(path, a, "category_id", where)
        if cid not in cat_ids:
            raise AnnotationError(path, f"category_id={cid} not in categories", key=f"{where}.category_id")
        vid, _, acc = images[iid]
        if "video_id" in a and _int(path, a, "video_id", where) != vid:
            raise AnnotationError(
                path, f"video_id={a['video_id']} but image {iid} belongs to video {vid}", key=f"{where}.video_id"
            )
        box = a["bbox"]
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in box)
        ):
            raise AnnotationError(path, f"bbox={box!r} is not 4 finite numbers [x, y, w, h]", key=f"{where}.bbox")
        if box[2] <= 0 or box[3] <= 0:
            raise AnnotationError(path, f"bbox={box!r} has non-positive width or height", key=f"{where}.bbox")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool):
            raise AnnotationError(path, f"iscrowd={crowd!r}, expected 0 or 1", key=f"{where}.iscrowd")
        track = _int(path, a, "track_id", where) if "track_id" in a else -1
        xyxy = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        if crowd:
            acc["crowd"].append(xyxy)
        else:
            acc["boxes"].append(xyxy)
            acc["labels"].append(cid)
            acc["tracks"].append(track)
        ann = dict(a)
        ann.setdefault("area", float(box[2] * box[3]))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("video_id", vid)
        gt_annotations.append(ann)

    per_video: list[list[_Frame]] = [[] for _ in videos]
    for vid, frame, acc in images.values():
        frame.boxes = np.asarray(acc["boxes"], dtype=np.float32).reshape(-1, 4)
        frame.labels = np.asarray(acc["labels"], dtype=np.int64)
        frame.track_ids = np.asarray(acc["tracks"], dtype=np.int64)
        frame.crowd_boxes = np.asarray(acc["crowd"], dtype=np.float32).reshape(-1, 4)
        per_video[video_index[vid]].append(frame)
    for frames in per_video:
        frames.sort(key=lambda f: f.frame_id)

    gt = {
        "info": data.get("info", {}),
        "videos": videos,
        "images": list(data["images"]),
        "annotations": gt_annotations,
        "categories": categories,
    }
    return categories, videos, per_video, gt


def _clamp_boxes(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


class CocoVideoDetection(Dataset):
    """Video object detection clips from a COCO-style video JSON.

    Args:
        ann_file: ``ROOT/annotations/{split}.json``.
        image_root: directory ``file_name`` is relative to; default the parent of the
            ``annotations/`` directory (``ROOT``).
        clip_len: frames per item (``T``).
        frame_stride: step between the frames of a clip, in frames.
        mode: ``"train"`` (one random clip per video) or ``"test"`` (every frame once,
            in order, see :func:`eval_windows`).
        transform: called as ``transform(sample, generator=g)`` on the item dict, whose
            ``frames`` are float ``[0, 1]`` at the original size; e.g.
            ``Compose([Resize((320, 320)), RandomHorizontalFlip(), Normalize()])``.
        max_bad_fraction: fraction of unreadable images tolerated before
            :class:`DatasetError` is raised.
        seed: base seed of the per-item generators (see :meth:`set_epoch`).

    An item is a dict: ``frames`` float ``(T, 3, H, W)``; ``boxes`` list of ``T``
    float32 ``(N, 4)`` xyxy pixel boxes; ``labels`` list of ``T`` int64 ``(N,)``
    category ids (1-based); ``track_ids`` list of ``T`` int64 ``(N,)`` (-1 if absent);
    ``crowd_boxes`` list of ``T`` float32 ``(M, 4)``; ``image_ids``, ``frame_ids`` int64
    ``(T,)``; ``video_id`` int; ``valid`` bool ``(T,)``; ``orig_sizes`` int64 ``(T, 2)``
    (``H, W`` of the file, to map predictions back for :meth:`to_coco_gt`).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        clip_len: int = 1,
        frame_stride: int = 1,
        mode: str = "train",
        transform: Callable | None = None,
        max_bad_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if clip_len < 1 or frame_stride < 1:
            raise ValueError(f"clip_len and frame_stride must be >= 1, got {clip_len}, {frame_stride}")
        self.ann_file = str(ann_file)
        if image_root is None:
            image_root = Path(self.ann_file).resolve().parent.parent
        self.image_root = str(image_root)
        self.clip_len, self.frame_stride, self.mode = clip_len, frame_stride, mode
        self.transform = transform
        self.seed, self.epoch = seed, 0

        data = _load_json(self.ann_file)
        self._categories, self._videos, self._frames, self._gt = _parse(self.ann_file, data, self.image_root)
        num_images = sum(len(f) for f in self._frames)
        self._bad = BadFileLog(num_images, max_bad_fraction, self.ann_file)

        for v, frames in zip(self._videos, self._frames):
            if not frames:
                logger.warning("%s: video id %s (%r) has no images; skipped", self.ann_file, v["id"], v["name"])
        if mode == "train":
            self._items = [(v, None, None) for v, frames in enumerate(self._frames) if frames]
        else:
            self._items = [
                (v, pos, valid)
                for v, frames in enumerate(self._frames)
                for pos, valid in eval_windows(len(frames), clip_len, frame_stride)
            ]

    # ---- metadata -----------------------------------------------------------------

    @property
    def categories(self) -> list[dict]:
        """``[{"id", "name"}]`` sorted by id (ids are ``1..num_classes``)."""
        return [dict(c) for c in self._categories]

    @property
    def num_classes(self) -> int:
        """Number of object categories ``K``, background excluded."""
        return len(self._categories)

    @property
    def videos(self) -> list[dict]:
        """The JSON's video entries, each with ``num_frames`` (images found) added."""
        return [{**v, "num_frames": len(f)} for v, f in zip(self._videos, self._frames)]

    @property
    def bad_files(self) -> list[str]:
        """Paths found unreadable so far (in this process)."""
        return list(self._bad.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the per-item seeds (new random clips each epoch)."""
        self.epoch = int(epoch)

    def to_coco_gt(self, as_coco: bool = False):
        """Ground truth for COCO evaluation, in original image pixels.

        Returns the validated JSON dict (``area`` and ``iscrowd`` filled in where the
        file omitted them), or with ``as_coco=True`` a ``pycocotools.coco.COCO``.
        """
        gt = json.loads(json.dumps(self._gt))  # deep copy, callers may mutate
        if not as_coco:
            return gt
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        return coco

    def verify_images(self) -> list[str]:
        """Decode every image once, recording unreadable ones; returns ``bad_files``.

        Raises :class:`DatasetError` as soon as the bad fraction passes the limit.
        """
        for frames in self._frames:
            for f in frames:
                if f.path in self._bad:
                    continue
                try:
                    read_rgb(f.path)
                except UnreadableFile as exc:
                    self._bad.record(exc.path, exc.reason)
        return self.bad_files

    # ---- items ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "test":
            return self._load(index, skip_bad=False)
        return self._bad.first_readable(index, len(self), lambda i: self._load(i, skip_bad=True), self.ann_file)

    def _load(self, index: int, skip_bad: bool) -> dict:
        g = item_generator(self.seed, self.epoch, index)
        v, pos, valid = self._items[index]
        frames = self._frames[v]
        if pos is None:
            pos, valid = sample_clip(len(frames), self.clip_len, self.frame_stride, g)
        valid = list(valid)

        decoded: dict[int, torch.Tensor | None] = {}
        for p in dict.fromkeys(pos):
            path = frames[p].path
            try:
                if path in self._bad:
                    raise UnreadableFile(path, self._bad.files[path])
                decoded[p] = read_rgb(path)
            except UnreadableFile as exc:
                if skip_bad:
                    raise
                self._bad.record(exc.path, exc.reason)
                decoded[p] = None
        images, boxes, labels, tracks, crowd = [], [], [], [], []
        shape = self._clip_shape(v, pos, decoded)
        for t, p in enumerate(pos):
            f, img = frames[p], decoded[p]
            if img is None:  # unreadable, test mode: keep the slot, score nothing
                valid[t] = False
                img = torch.zeros(3, *shape, dtype=torch.uint8)
                empty = np.zeros((0, 4), np.float32)
                fb, fl, ft, fc = empty, np.zeros(0, np.int64), np.zeros(0, np.int64), empty
            else:
                if tuple(img.shape[1:]) != shape:
                    names = ", ".join(frames[q].path for q in dict.fromkeys(pos))
                    raise DatasetError(f"{self.ann_file}: frames of one clip differ in size: {names}")
                if (f.height, f.width) != (None, None) and (f.height, f.width) != shape:
                    raise AnnotationError(
                        self.ann_file, f"height/width=({f.height}, {f.width}) but {f.path} is {shape}",
                        key=f"image id {f.image_id}",
                    )
                fb = _clamp_boxes(f.boxes, *shape)
                keep = (fb[:, 2] > fb[:, 0]) & (fb[:, 3] > fb[:, 1])
                fb, fl, ft = fb[keep], f.labels[keep], f.track_ids[keep]
                fc = _clamp_boxes(f.crowd_boxes, *shape)
            images.append(img)
            boxes.append(torch.from_numpy(fb.copy()))
            labels.append(torch.from_numpy(fl.copy()))
            tracks.append(torch.from_numpy(ft.copy()))
            crowd.append(torch.from_numpy(fc.copy()))

        sample = {
            "frames": torch.stack(images).float().div_(255.0),
            "boxes": boxes,
            "labels": labels,
            "track_ids": tracks,
            "crowd_boxes": crowd,
            "image_ids": torch.tensor([frames[p].image_id for p in pos], dtype=torch.int64),
            "frame_ids": torch.tensor([frames[p].frame_id for p in pos], dtype=torch.int64),
            "video_id": int(self._videos[v]["id"]),
            "valid": torch.tensor(valid, dtype=torch.bool),
            "orig_sizes": torch.tensor([shape] * len(pos), dtype=torch.int64),
        }
        if self.transform is not None:
            sample = self.transform(sample, generator=g)
        return sample

    def _clip_shape(self, v: int, pos: list[int], decoded: dict) -> tuple[int, int]:
        for img in decoded.values():
            if img is not None:
                return tuple(img.shape[1:])
        for p in pos:  # the whole window is unreadable: fall back on the JSON
            f = self._frames[v][p]
            if f.height and f.width:
                return (f.height, f.width)
        video = self._videos[v]
        if isinstance(video.get("height"), int) and isinstance(video.get("width"), int):
            return (video["height"], video["width"])
        raise DatasetError(
            f"{self.ann_file}: every frame of a window of video {video['id']} is unreadable and the "
            f"JSON gives no size: {', '.join(self._frames[v][p].path for p in pos)}"
        )


def collate_detection(batch: Sequence[dict]) -> dict:
    """Batch items: tensors stacked on a new dim 0, per-frame box lists kept as ``[B][T]``."""
    out: dict[str, Any] = {}
    for key in ("frames", "image_ids", "frame_ids", "valid", "orig_sizes"):
        out[key] = torch.stack([b[key] for b in batch])
    out["video_id"] = torch.tensor([b["video_id"] for b in batch], dtype=torch.int64)
    for key in ("boxes", "labels", "track_ids", "crowd_boxes"):
        out[key] = [b[key] for b in batch]
    return out
