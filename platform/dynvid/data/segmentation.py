"""Video semantic segmentation dataset (Cityscapes / CamVid style folders), for ResQ.

ResQ (Abati et al., 2023; ``shared/papers/resq-residual-quantization.txt``, Sec. 5)
quantizes the residual between a key frame and the following frames of a video and
scores the result with mIoU on video segmentation. This module reads the folder
layout that ``dynvid data synth`` also writes::

    ROOT/classes.txt                                   line k = name of class k (line 1: "background")
    ROOT/{split}_videos.txt                            one video name per line
    ROOT/frames/{split}/{video}/{frame_id:06d}.png     RGB frames
    ROOT/labels/{split}/{video}/{frame_id:06d}.png     mode "L" (or "P"), uint8 class ids,
                                                       0 = background, ``ignore_index`` = ignore

The layout is checked when the dataset is built: a missing directory, list or label
file raises :class:`~dynvid.data.errors.DatasetError` naming the path (a bad line of
a list file, :class:`~dynvid.data.errors.AnnotationError` with its line). Label values
are checked when a label is read (or for all of them by :meth:`VideoSegmentation.verify_files`):
a value outside ``[0, num_classes)`` that is not ``ignore_index`` raises
:class:`AnnotationError` naming the label file.

Items follow :mod:`dynvid.data.coco_vid` (same helpers, same rules):

- ``mode="train"``: index ``i`` is video ``i``; a random clip of ``clip_len`` frames,
  ``frame_stride`` apart, then one random crop (``crop_size``; frames smaller than the
  crop are padded with 0 / ``ignore_index``) and one random horizontal flip, the same
  for every frame and its label. Randomness comes from a generator seeded with
  ``(seed, epoch, index)``; call :meth:`VideoSegmentation.set_epoch` each epoch.
- ``mode="test"``: full frames, windows that hold every frame of every video exactly
  once, in order. Padding frames at a video's tail (``valid=False``) have all labels
  set to ``ignore_index``, so accumulating a confusion matrix over every returned pixel
  counts each real frame once.
- Unreadable frame or label files go to ``bad_files`` (logged); in train mode the
  next video's clip is returned instead, in test mode the frame is zeroed with
  ``ignore_index`` labels and ``valid=False``. More than ``max_bad_fraction`` bad
  frames raises :class:`DatasetError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from dynvid.data.coco_vid import hflip_clip, read_rgb
from dynvid.data.errors import AnnotationError, BadFileLog, DatasetError, UnreadableFile
from dynvid.data.sampling import eval_windows, item_generator, sample_clip
from dynvid.data.synthetic import OBJECT_CLASSES, SceneConfig, SyntheticVideoSource, add_sensor_noise

__all__ = ["SyntheticSegmentation", "VideoSegmentation", "build_segmentation_dataset", "collate_segmentation", "read_label", "read_list_file", "pad_clip", "crop_clip"]

logger = logging.getLogger(__name__)


def read_list_file(path: str, what: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines of a text file as ``(line_number, text)``; missing file → DatasetError."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not UTF-8 text: {exc}") from exc
    return [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]


def read_label(path: str, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Decode a label PNG to an int64 ``(H, W)`` tensor, checking its values.

    Raises :class:`UnreadableFile` if the file cannot be decoded and
    :class:`AnnotationError` for a wrong mode or an out-of-range class id.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im) if mode in ("L", "P") else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableFile(path, f"{type(exc).__name__}: {exc}") from exc
    if arr is None:
        raise AnnotationError(path, f"label image mode is {mode!r}, expected 'L' (uint8 class ids) or 'P'")
    bad = (arr >= num_classes) & (arr != ignore_index)
    if bad.any():
        values = sorted(int(x) for x in np.unique(arr[bad]))
        raise AnnotationError(
            path,
            f"label values {values[:10]} outside [0, {num_classes}) and not ignore_index={ignore_index}",
        )
    return torch.from_numpy(arr.astype(np.int64))


def pad_clip(
    frames: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``(T, C, H, W)`` frames with 0 and ``(T, H, W)`` labels (a ``tv_tensors.Mask``) with
    ``ignore_index`` at the bottom/right up to at least ``size`` (``torchvision.transforms.v2``)."""
    ph = max(size[0] - frames.shape[-2], 0)
    pw = max(size[1] - frames.shape[-1], 0)
    if ph == 0 and pw == 0:
        return frames, labels
    padding = [0, 0, pw, ph]  # left, top, right, bottom
    return (TF.pad(frames, padding, fill=0.0),
            TF.pad(tv_tensors.Mask(labels), padding, fill=ignore_index).as_subclass(torch.Tensor))


def crop_clip(
    frames: torch.Tensor, labels: torch.Tensor, top: int, left: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same ``size=(h, w)`` window at ``(top, left)`` of every frame and label
    (``torchvision.transforms.v2``'s crop of the frames and of the label ``Mask``)."""
    h, w = size
    return (TF.crop(frames, top, left, h, w),
            TF.crop(tv_tensors.Mask(labels), top, left, h, w).as_subclass(torch.Tensor))


def collate_segmentation(items: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Batch items as ``(frames (B, T, 3, H, W), labels (B, T, H, W), meta)``, ``meta`` holding
    ``valid (B, T)``, ``frame_ids (B, T)``, ``video_index (B,)`` and the ``video`` names: the
    ``(inputs, targets, …)`` shape the engine's training loop counts samples by."""
    meta = {"valid": torch.stack([it["valid"] for it in items]),
            "frame_ids": torch.stack([it["frame_ids"] for it in items]),
            "video_index": torch.tensor([it["video_index"] for it in items]),
            "video": [it["video"] for it in items]}
    return (torch.stack([it["frames"] for it in items]), torch.stack([it["labels"] for it in items]), meta)


@dataclass
class _Video:
    name: str
    frame_ids: list[int]
    frame_paths: list[str]
    label_paths: list[str]


class _SegmentationItems(Dataset):
    """What both segmentation datasets share: class names in ``self._classes``, the epoch
    mixed into the per-item seeds, and the item count from ``self._items``."""

    @property
    def classes(self) -> list[str]:
        """Class names; index = class id (0 = background)."""
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (``len(classes)``)."""
        return len(self._classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the per-item seeds (new random clips each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)


class VideoSegmentation(_SegmentationItems):
    """Clips of RGB frames with per-pixel class labels.

    Args:
        root: dataset root (holds ``classes.txt``, ``{split}_videos.txt``, ``frames/``, ``labels/``).
        split: split name, e.g. ``"train"``, ``"val"``.
        clip_len: frames per item (``T``).
        frame_stride: step between the frames of a clip, in frames.
        mode: ``"train"`` (random clip, crop, flip) or ``"test"`` (every frame once, full size).
        crop_size: train-mode crop ``(h, w)`` or an int for square; ``None`` keeps full frames.
        ignore_index: label value excluded from loss and metrics.
        max_bad_fraction: fraction of unreadable frames tolerated before :class:`DatasetError`.
        seed: base seed of the per-item generators (see :meth:`set_epoch`).
        hflip_prob: train-mode probability of mirroring a clip.

    An item is a dict: ``frames`` float ``(T, 3, H, W)`` in ``[0, 1]``; ``labels``
    int64 ``(T, H, W)``; ``frame_ids`` int64 ``(T,)``; ``valid`` bool ``(T,)``;
    ``video`` the video name; ``video_index`` its position in ``{split}_videos.txt``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        clip_len: int = 1,
        frame_stride: int = 1,
        mode: str = "train",
        crop_size: int | Sequence[int] | None = None,
        ignore_index: int = 255,
        max_bad_fraction: float = 0.05,
        seed: int = 0,
        hflip_prob: float = 0.5,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if clip_len < 1 or frame_stride < 1:
            raise ValueError(f"clip_len and frame_stride must be >= 1, got {clip_len}, {frame_stride}")
        self.root, self.split = str(root), split
        self.clip_len, self.frame_stride, self.mode = clip_len, frame_stride, mode
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.ignore_index, self.hflip_prob = ignore_index, hflip_prob
        self.seed, self.epoch = seed, 0

        if not os.path.isdir(self.root):
            raise DatasetError(f"dataset root not found: {self.root}")
        classes_path = os.path.join(self.root, "classes.txt")
        self._classes = self._read_classes(classes_path)
        if 0 <= ignore_index < len(self._classes):
            raise ValueError(
                f"ignore_index={ignore_index} is a class id ({self._classes[ignore_index]!r} in {classes_path})"
            )
        self._videos = self._read_videos()
        num_frames = sum(len(v.frame_ids) for v in self._videos)
        self._bad = BadFileLog(num_frames, max_bad_fraction, os.path.join(self.root, f"{split}_videos.txt"))

        if mode == "train":
            self._items = [(v, None, None) for v in range(len(self._videos))]
        else:
            self._items = [
                (v, pos, valid)
                for v, video in enumerate(self._videos)
                for pos, valid in eval_windows(len(video.frame_ids), clip_len, frame_stride)
            ]

    # ---- layout ---------------------------------------------------------------------

    @staticmethod
    def _read_classes(path: str) -> list[str]:
        if not os.path.isfile(path):
            raise DatasetError(f"class list not found: {path}")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            raise AnnotationError(path, "no classes")
        for i, name in enumerate(lines):
            if not name:
                raise AnnotationError(path, f"empty class name for class id {i}", line=i + 1)
        return lines

    def _read_videos(self) -> list[_Video]:
        list_path = os.path.join(self.root, f"{self.split}_videos.txt")
        entries = read_list_file(list_path, "video list")
        if not entries:
            raise AnnotationError(list_path, "no videos listed")
        frames_dir = os.path.join(self.root, "frames", self.split)
        labels_dir = os.path.join(self.root, "labels", self.split)
        for d in (frames_dir, labels_dir):
            if not os.path.isdir(d):
                raise DatasetError(f"directory not found: {d}")
        videos, seen = [], {}
        for line, name in entries:
            if name in seen:
                raise AnnotationError(list_path, f"video {name!r} already listed on line {seen[name]}", line=line)
            seen[name] = line
            fdir, ldir = os.path.join(frames_dir, name), os.path.join(labels_dir, name)
            for d in (fdir, ldir):
                if not os.path.isdir(d):
                    raise AnnotationError(list_path, f"video {name!r}: directory not found: {d}", line=line)
            ids = []
            for fname in os.listdir(fdir):
                if not fname.endswith(".png"):
                    continue
                stem = fname[: -len(".png")]
                if not stem.isdigit():
                    raise DatasetError(f"frame file name is not {{frame_id:06d}}.png: {os.path.join(fdir, fname)}")
                ids.append((int(stem), fname))
            if not ids:
                raise DatasetError(f"no .png frames in {fdir} (video {name!r}, {list_path}:{line})")
            ids.sort()
            label_names = set(os.listdir(ldir))
            for _, fname in ids:
                if fname not in label_names:
                    raise DatasetError(f"label file not found: {os.path.join(ldir, fname)}")
            videos.append(
                _Video(
                    name,
                    [i for i, _ in ids],
                    [os.path.join(fdir, f) for _, f in ids],
                    [os.path.join(ldir, f) for _, f in ids],
                )
            )
        return videos

    # ---- metadata -------------------------------------------------------------------

    @property
    def videos(self) -> list[str]:
        """Video names in list-file order."""
        return [v.name for v in self._videos]

    @property
    def bad_files(self) -> list[str]:
        """Paths found unreadable so far (in this process)."""
        return list(self._bad.files)

    def verify_files(self) -> list[str]:
        """Read every frame and label once: unreadable ones go to ``bad_files`` (raising
        past the limit); a bad label value raises :class:`AnnotationError`. Returns ``bad_files``."""
        for video in self._videos:
            for fp, lp in zip(video.frame_paths, video.label_paths):
                try:
                    self._read_pair(fp, lp)
                except UnreadableFile as exc:
                    self._bad.record(exc.path, exc.reason)
        return self.bad_files

    # ---- items ----------------------------------------------------------------------

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "test":
            return self._load(index, skip_bad=False)
        return self._bad.first_readable(
            index, len(self), lambda i: self._load(i, skip_bad=True), f"{self.root} split {self.split!r}"
        )

    def _read_pair(self, frame_path: str, label_path: str) -> tuple[torch.Tensor, torch.Tensor]:
        for path in (frame_path, label_path):
            if path in self._bad:
                raise UnreadableFile(path, self._bad.files[path])
        image = read_rgb(frame_path)
        label = read_label(label_path, len(self._classes), self.ignore_index)
        if tuple(label.shape) != tuple(image.shape[1:]):
            raise AnnotationError(
                label_path, f"label size {tuple(label.shape)} != frame size {tuple(image.shape[1:])} of {frame_path}"
            )
        return image, label

    def _load(self, index: int, skip_bad: bool) -> dict:
        g = item_generator(self.seed, self.epoch, index)
        v, pos, valid = self._items[index]
        video = self._videos[v]
        if pos is None:
            pos, valid = sample_clip(len(video.frame_ids), self.clip_len, self.frame_stride, g)
        valid = list(valid)

        decoded = {}
        for p in dict.fromkeys(pos):
            try:
                decoded[p] = self._read_pair(video.frame_paths[p], video.label_paths[p])
            except UnreadableFile as exc:
                if skip_bad:
                    raise
                self._bad.record(exc.path, exc.reason)
                decoded[p] = None
        good = [d for d in decoded.values() if d is not None]
        if not good:
            raise DatasetError(
                f"every frame of a window of video {video.name!r} is unreadable: "
                + ", ".join(video.frame_paths[p] for p in dict.fromkeys(pos))
            )
        shape = tuple(good[0][1].shape)
        images, labels = [], []
        for t, p in enumerate(pos):
            if decoded[p] is None:
                valid[t] = False
                image = torch.zeros(3, *shape, dtype=torch.uint8)
                label = torch.full(shape, self.ignore_index, dtype=torch.int64)
            else:
                image, label = decoded[p]
                if tuple(label.shape) != shape:
                    raise DatasetError(
                        f"frames of one clip differ in size: "
                        + ", ".join(video.frame_paths[q] for q in dict.fromkeys(pos))
                    )
                if self.mode == "test" and not valid[t]:
                    label = torch.full(shape, self.ignore_index, dtype=torch.int64)  # tail padding: count once
            images.append(image)
            labels.append(label)
        frames = torch.stack(images).float().div_(255.0)
        label_clip = torch.stack(labels)

        if self.mode == "train":
            if self.crop_size is not None:
                frames, label_clip = pad_clip(frames, label_clip, self.crop_size, self.ignore_index)
                h, w = frames.shape[-2:]
                top = int(torch.randint(0, h - self.crop_size[0] + 1, (1,), generator=g))
                left = int(torch.randint(0, w - self.crop_size[1] + 1, (1,), generator=g))
                frames, label_clip = crop_clip(frames, label_clip, top, left, self.crop_size)
            if float(torch.rand((), generator=g)) < self.hflip_prob:
                frames, label_clip = hflip_clip(frames), hflip_clip(label_clip)
        return {
            "frames": frames.contiguous(),
            "labels": label_clip.contiguous(),
            "frame_ids": torch.tensor([video.frame_ids[p] for p in pos], dtype=torch.int64),
            "valid": torch.tensor(valid, dtype=torch.bool),
            "video": video.name,
            "video_index": v,
        }


class SyntheticSegmentation(_SegmentationItems):
    """The embedded segmentation data: synthetic scenes (:mod:`dynvid.data.synthetic`) with their
    per-pixel class masks as labels (0 background, ``k`` = ``OBJECT_CLASSES[k - 1]``), rendered on
    the fly, deterministic from ``(content_seed, split, index)``. Items, modes and windows are
    those of :class:`VideoSegmentation` (``mode="test"``: every frame of the first
    ``max_frames`` of each video exactly once, in windows of ``clip_len``); nothing is unreadable.
    The scene's sensor noise (``scene.noise_std``, ``scene.shot_noise``) is added to the frames
    an item returns only, each exactly as in the whole noisy video (labels are the clean masks).

    Args:
        num_videos: videos in the split.
        split: split name (its videos differ from every other split's).
        scene: how the scenes look (size, frames, sprites).
        clip_len, mode, seed, hflip_prob: as :class:`VideoSegmentation`.
        content_seed: seed of the scenes themselves.
        max_frames: test mode scores the first ``max_frames`` frames of each video (None: all).
    """

    ignore_index = 255

    def __init__(self, num_videos: int, split: str = "train", scene=None, clip_len: int = 1, mode: str = "train",
                 seed: int = 0, content_seed: int = 0, hflip_prob: float = 0.5, max_frames: int | None = None) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if clip_len < 1 or num_videos < 1:
            raise ValueError(f"clip_len and num_videos must be >= 1, got {clip_len}, {num_videos}")
        self.source = SyntheticVideoSource(num_videos, seed=content_seed, cfg=scene or SceneConfig(), split=split)
        self.split, self.clip_len, self.mode, self.seed, self.hflip_prob = split, clip_len, mode, seed, hflip_prob
        self.epoch = 0
        self._classes = ["background", *OBJECT_CLASSES]
        frames = self.source.cfg.num_frames if max_frames is None else min(max_frames, self.source.cfg.num_frames)
        self.frames_per_video = frames
        if mode == "train":
            self._items = [(v, None, None) for v in range(num_videos)]
        else:
            self._items = [(v, pos, valid) for v in range(num_videos) for pos, valid in eval_windows(frames, clip_len, 1)]

    @property
    def videos(self) -> list[str]:
        return [f"{self.split}_{i:05d}" for i in range(len(self.source))]

    @property
    def bad_files(self) -> list[str]:
        """Always empty: rendered frames cannot be unreadable."""
        return []

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        v, pos, valid = self._items[index]
        g = item_generator(self.seed, self.epoch, index)
        if pos is None:
            pos, valid = sample_clip(self.frames_per_video, self.clip_len, 1, g)
        video = self.source.get(v, noise=False)  # noise below, on the frames returned only
        c = self.source.cfg
        raw = add_sensor_noise(video.frames[pos], pos, self.source.seed, self.source.video_index(v), c.noise_std,
                               c.shot_noise)
        frames = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.from_numpy(video.masks[pos].astype(np.int64))
        labels[~torch.tensor(valid)] = self.ignore_index  # tail padding counts once
        if self.mode == "train" and float(torch.rand((), generator=g)) < self.hflip_prob:
            frames, labels = hflip_clip(frames), hflip_clip(labels)
        return {"frames": frames.contiguous(), "labels": labels.contiguous(),
                "frame_ids": torch.tensor(pos, dtype=torch.int64), "valid": torch.tensor(valid, dtype=torch.bool),
                "video": self.videos[v], "video_index": v}


def build_segmentation_dataset(spec: str, split: str, *, clip_len: int, mode: str, seed: int = 0, scene=None,
                               content_seed: int = 0, num_videos: int = 0, max_frames: int | None = None,
                               crop_size: int | None = None, max_bad_fraction: float = 0.05):
    """``synthetic:segmentation`` (the embedded scenes) or ``video-seg:ROOT`` (the Cityscapes /
    CamVid style folders of :class:`VideoSegmentation`, as ``dynvid data synth --task segmentation``
    writes them). Its ``collate_fn`` is :func:`collate_segmentation`."""
    dataset = _build_segmentation(spec, split, clip_len, mode, seed, scene, content_seed, num_videos, max_frames,
                                  crop_size, max_bad_fraction)
    dataset.collate_fn = collate_segmentation
    return dataset


def _build_segmentation(spec, split, clip_len, mode, seed, scene, content_seed, num_videos, max_frames, crop_size,
                        max_bad_fraction):
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        if arg != "segmentation":
            raise DatasetError(f"dataset {spec!r}: the synthetic segmentation data is 'synthetic:segmentation'")
        return SyntheticSegmentation(num_videos, split, scene, clip_len, mode, seed, content_seed,
                                     max_frames=max_frames)
    if kind == "video-seg":
        return VideoSegmentation(arg, split, clip_len, 1, mode, crop_size=crop_size if mode == "train" else None,
                                 max_bad_fraction=max_bad_fraction, seed=seed)
    raise DatasetError(f"dataset {spec!r}: ResQ reads 'synthetic:segmentation' or 'video-seg:ROOT' (folders "
                       "ROOT/frames, ROOT/labels, ROOT/classes.txt, ROOT/{split}_videos.txt)")
