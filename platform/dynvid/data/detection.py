"""Detection clips, shared by the detection methods (Looking Fast and Slow, ANT): the embedded
synthetic scenes and COCO-style video.

Looking Fast and Slow's Sec. 3.3 trains on 6-step clips, "on a mix of video and image data.
For image data, we augment the image by cropping a specific region at each step and
shifting the crop between steps to mimic translations and zooms". :func:`shifted_crops` is that
augmentation; :class:`DetectionClips` serves both kinds of item from one source.

An item is ``(frames, target)``: ``frames`` float ``(T, 3, S, S)`` normalized with the
ImageNet statistics at the detector's input size ``S``; ``target`` a dict with per-frame
lists ``boxes`` (``(N, 4)`` xyxy, normalized to ``[0, 1]`` like the anchors) and ``labels``
(``(N,)`` 0-based class index), plus ``image_ids`` ``(T,)``, ``valid`` ``(T,)`` and
``orig_sizes`` ``(T, 2)`` (to map boxes back for COCO evaluation). :func:`collate` keeps
targets as a list, so ``len(batch[1])`` is the batch size, as the engine expects.

Sources:

- ``synthetic:detection`` (the embedded default): :class:`SyntheticDetectionSource`
  renders the procedural scenes of ``dynvid.data.synthetic`` in memory; the sprites'
  shapes are the classes, the renderer's boxes the ground truth. Image ids are
  ``video_index * 100000 + frame``.
- ``coco-vid:ROOT``: ``ROOT/annotations/{split}.json`` read by
  :class:`dynvid.data.coco_vid.CocoVideoDetection` (ImageNet-VID layout).

Choices: frames are squashed to ``S × S`` (SSD's fixed-shape resize, no letterbox); an
evaluation item is a whole video (its first ``eval_frames`` frames when set), so the
interleave schedule and the memory run across the video as at deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dynvid.data.coco_vid import IMAGENET_MEAN, IMAGENET_STD, CocoVideoDetection
from dynvid.data.errors import DatasetError
from dynvid.data.sampling import item_generator
from dynvid.data.synthetic import OBJECT_CLASSES, SceneConfig, SyntheticVideoSource

__all__ = ["DetectionClips", "SyntheticDetectionSource", "build_detection_dataset", "collate", "shifted_crops"]

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
FRAME_ID_BASE = 100_000


def _prepare(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8/float ``(T, 3, H, W)`` -> normalized float ``(T, 3, size, size)``."""
    x = frames.float()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - _MEAN) / _STD


def _normalize_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (boxes / boxes.new_tensor([w, h, w, h])).clamp(0, 1)


def shifted_crops(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, steps: int,
                  generator: torch.Generator | None = None, min_scale: float = 0.6, max_shift: float = 0.15):
    """One image as a ``steps``-frame clip of crops that translate and zoom (Sec. 3.3).

    A start and an end crop window are drawn (side ``min_scale``–1 of the image, centre
    moved by up to ``max_shift`` of the image side) and interpolated linearly across the
    steps. Each frame is ``torchvision.transforms.v2``'s resized crop of the image and its
    ``BoundingBoxes`` together (the window rounded to whole pixels), back to the image's
    size; boxes left narrower or lower than a pixel are dropped (``SanitizeBoundingBoxes``). Returns
    ``(frames (steps, 3, H, W), boxes [steps] (N_t, 4) xyxy pixels of the output frame,
    labels [steps])``.
    """
    _, H, W = image.shape
    r = torch.rand(6, generator=generator)
    scale0 = min_scale + (1 - min_scale) * float(r[0])
    scale1 = min(1.0, max(min_scale, scale0 + (float(r[1]) - 0.5) * 0.3))
    cx0, cy0 = 0.5 + (float(r[2]) - 0.5) * (1 - scale0), 0.5 + (float(r[3]) - 0.5) * (1 - scale0)
    cx1 = cx0 + (float(r[4]) - 0.5) * 2 * max_shift
    cy1 = cy0 + (float(r[5]) - 0.5) * 2 * max_shift
    img = image.float()
    box = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(H, W))
    sanitize = v2.SanitizeBoundingBoxes(min_size=1, labels_getter=lambda sample: sample["labels"])
    frames, out_boxes, out_labels = [], [], []
    for t in range(steps):
        a = t / max(1, steps - 1)
        s = scale0 + a * (scale1 - scale0)
        cw, ch = max(1, round(s * W)), max(1, round(s * H))
        left = min(max(round((cx0 + a * (cx1 - cx0)) * W - cw / 2), 0), W - cw)
        top = min(max(round((cy0 + a * (cy1 - cy0)) * H - ch / 2), 0), H - ch)
        frame = TF.resized_crop(img, top, left, ch, cw, [H, W], antialias=True)
        # the boxes follow the crop; clamped again after the resize, whose round-off can put an
        # edge a hair past the canvas (which SanitizeBoundingBoxes would take for an invalid box)
        moved = TF.clamp_bounding_boxes(TF.resized_crop(box, top, left, ch, cw, [H, W]))
        kept = sanitize({"boxes": moved, "labels": labels})
        frames.append(frame)
        out_boxes.append(kept["boxes"].as_subclass(torch.Tensor))
        out_labels.append(kept["labels"])
    return torch.stack(frames), out_boxes, out_labels


class SyntheticDetectionSource:
    """Whole synthetic videos as ``(frames uint8 (T, 3, H, W), boxes [T], labels [T] 0-based)``."""

    def __init__(self, num_videos: int, split: str, scene: SceneConfig, seed: int = 0) -> None:
        self.videos = SyntheticVideoSource(num_videos, seed=seed, cfg=scene, split=split)
        self.classes = list(OBJECT_CLASSES)

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self, index: int) -> int:
        return self.videos.cfg.num_frames

    def read(self, index: int, positions: Sequence[int]):
        v = self.videos.get(index)
        frames = torch.from_numpy(v.frames[list(positions)]).permute(0, 3, 1, 2)
        boxes = [torch.from_numpy(v.boxes[p]).float() for p in positions]
        labels = [torch.from_numpy(v.box_classes[p]).long() for p in positions]
        ids = torch.tensor([index * FRAME_ID_BASE + p for p in positions], dtype=torch.int64)
        return frames, boxes, labels, ids, torch.ones(len(positions), dtype=torch.bool)

    def to_coco_gt(self, num_frames: int | None = None) -> dict:
        """COCO ground truth of every frame (the first ``num_frames`` per video when given)."""
        images, anns = [], []
        for i in range(len(self)):
            v = self.videos.get(i)
            T = len(v.boxes) if num_frames is None else min(num_frames, len(v.boxes))
            h, w = v.frames.shape[1:3]
            for t in range(T):
                image_id = i * FRAME_ID_BASE + t
                images.append({"id": image_id, "height": int(h), "width": int(w)})
                for box, label in zip(v.boxes[t], v.box_classes[t]):
                    x0, y0, x1, y1 = (float(c) for c in box)
                    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        cats = [{"id": k + 1, "name": n} for k, n in enumerate(self.classes)]
        return {"images": images, "annotations": anns, "categories": cats}


class DetectionClips(torch.utils.data.Dataset):
    """Training clips / evaluation videos for the interleaved detector.

    Args:
        source: a :class:`SyntheticDetectionSource`.
        size: the detector's input size (f0's resolution).
        clip_len: frames per training clip (the unroll, 6).
        frame_stride: step between a clip's frames, or ``(lo, hi)``: a step drawn per clip,
            uniformly in ``lo … hi`` (ANT trains its fusion at the key-frame distances its
            inference meets).
        mode: ``"train"`` (one random clip per video, or a shifted-crop clip of one of its
            frames with probability ``image_fraction``) or ``"eval"`` (whole videos).
        image_fraction: share of image items in training.
        eval_frames: evaluation frames per video (None = all).
        seed: base seed of the per-item generators.
    """

    def __init__(self, source: SyntheticDetectionSource, size: int, clip_len: int = 6,
                 frame_stride: int | tuple[int, int] = 1, mode: str = "train", image_fraction: float = 0.0,
                 eval_frames: int | None = None, seed: int = 0):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        lo, hi = (frame_stride, frame_stride) if isinstance(frame_stride, int) else tuple(frame_stride)
        if not 1 <= lo <= hi:
            raise ValueError(f"frame_stride must be >= 1 or a range (lo, hi) with 1 <= lo <= hi, got {frame_stride}")
        if lo == hi:  # a fixed stride: no draw, so the clips are those of an int stride
            frame_stride = lo
        self.source, self.size, self.clip_len, self.frame_stride = source, size, clip_len, frame_stride
        self.mode, self.image_fraction, self.eval_frames, self.seed, self.epoch = mode, image_fraction, eval_frames, seed, 0
        self.num_classes = len(source.classes)
        self.collate_fn = collate

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        n = self.source.num_frames(index)
        if self.mode == "eval":
            positions = list(range(n if self.eval_frames is None else min(n, self.eval_frames)))
            frames, boxes, labels, ids, valid = self.source.read(index, positions)
        else:
            g = item_generator(self.seed, self.epoch, index)
            if float(torch.rand(1, generator=g)) < self.image_fraction:
                p = int(torch.randint(n, (1,), generator=g))
                image, b, lab, pid, _ = self.source.read(index, [p])
                image = image[0].float() / 255.0 if image.dtype == torch.uint8 else image[0]
                frames, boxes, labels = shifted_crops(image, b[0], lab[0], self.clip_len, g)
                ids = pid.repeat(self.clip_len)
                valid = torch.ones(self.clip_len, dtype=torch.bool)
            else:
                stride = self.frame_stride
                if not isinstance(stride, int):  # drawn per clip (a fixed stride draws nothing)
                    stride = int(torch.randint(stride[0], stride[1] + 1, (1,), generator=g))
                span = (self.clip_len - 1) * stride + 1
                start = int(torch.randint(max(1, n - span + 1), (1,), generator=g))
                positions = [min(n - 1, start + k * stride) for k in range(self.clip_len)]
                frames, boxes, labels, ids, valid = self.source.read(index, positions)
        H, W = frames.shape[-2:]
        target = {
            "boxes": [_normalize_boxes(b, H, W) for b in boxes],
            "labels": labels,
            "image_ids": ids,
            "valid": valid,
            "orig_sizes": torch.tensor([[H, W]] * len(ids), dtype=torch.int64),
        }
        return _prepare(frames, self.size), target


class CocoVideoSource:
    """A COCO-style video split read through :class:`CocoVideoDetection`, as a source of
    whole videos for :class:`DetectionClips`."""

    def __init__(self, ann_file: str, max_bad_fraction: float = 0.05) -> None:
        self.dataset = CocoVideoDetection(ann_file, clip_len=1, mode="test", max_bad_fraction=max_bad_fraction)
        cats = self.dataset.categories
        self.classes = [c["name"] for c in cats]
        self._index = [v for v, f in enumerate(self.dataset._frames) if f]

    def __len__(self) -> int:
        return len(self._index)

    def num_frames(self, index: int) -> int:
        return len(self.dataset._frames[self._index[index]])

    def read(self, index: int, positions: Sequence[int]):
        v = self._index[index]
        frames, boxes, labels, ids, valid = [], [], [], [], []
        for p in positions:  # one test window per frame: clip_len=1, windows in video order
            item = self.dataset._load(self._window(v, p), skip_bad=False)
            frames.append(item["frames"][0])
            boxes.append(item["boxes"][0])
            labels.append(item["labels"][0] - 1)
            ids.append(int(item["image_ids"][0]))
            valid.append(bool(item["valid"][0]))  # an unreadable frame is kept, zeroed, not scored
        return (torch.stack(frames), boxes, labels, torch.tensor(ids, dtype=torch.int64),
                torch.tensor(valid, dtype=torch.bool))

    def _window(self, v: int, p: int) -> int:
        if not hasattr(self, "_offsets"):
            self._offsets, total = {}, 0
            for u, frames in enumerate(self.dataset._frames):
                self._offsets[u] = total
                total += len(frames)
        return self._offsets[v] + p

    def to_coco_gt(self, num_frames: int | None = None) -> dict:
        gt = self.dataset.to_coco_gt()
        if num_frames is None:
            return gt
        keep = {f.image_id for frames in self.dataset._frames for f in frames[:num_frames]}
        return {**gt, "images": [i for i in gt["images"] if i["id"] in keep],
                "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack frames ``(B, T, 3, S, S)``; keep the targets as a list of ``B`` dicts. Videos of
    different lengths are padded to the longest by repeating their last frame, flagged
    ``valid=False`` (not scored)."""
    T = max(len(frames) for frames, _ in batch)
    out_frames, targets = [], []
    for frames, target in batch:
        pad = T - len(frames)
        if pad:
            frames = torch.cat([frames, frames[-1:].expand(pad, *frames.shape[1:])])
            target = dict(target)
            for key in ("boxes", "labels"):
                target[key] = list(target[key]) + [target[key][-1]] * pad
            for key in ("image_ids", "orig_sizes"):
                target[key] = torch.cat([target[key], target[key][-1:].expand(pad, *target[key].shape[1:])])
            target["valid"] = torch.cat([target["valid"], torch.zeros(pad, dtype=torch.bool)])
        out_frames.append(frames)
        targets.append(target)
    return torch.stack(out_frames), targets


def build_detection_dataset(spec: str, split: str, *, size: int, clip_len: int, mode: str, seed: int = 0,
                            image_fraction: float = 0.0, eval_frames: int | None = None,
                            num_videos: int = 0, scene: SceneConfig | None = None, content_seed: int = 0,
                            max_bad_fraction: float = 0.05,
                            frame_stride: int | tuple[int, int] = 1) -> DetectionClips:
    """``synthetic:detection`` or ``coco-vid:ROOT`` as :class:`DetectionClips`."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        if arg != "detection":
            raise DatasetError(f"dataset {spec!r}: the synthetic detection data is 'synthetic:detection'")
        source = SyntheticDetectionSource(num_videos, split, scene or SceneConfig(), content_seed)
    elif kind == "coco-vid":
        ann = Path(arg) / "annotations" / f"{split}.json"
        if not ann.is_file():
            raise DatasetError(f"dataset {spec!r}: no annotation file {ann} for split {split!r}")
        source = CocoVideoSource(str(ann), max_bad_fraction)
    else:
        raise DatasetError(f"dataset {spec!r}: the detection methods read 'synthetic:detection' or "
                           "'coco-vid:ROOT' (a COCO-style video JSON under ROOT/annotations/)")
    return DetectionClips(source, size, clip_len, frame_stride, mode, image_fraction, eval_frames, seed)
