"""The clip-classification dataset shared by every video source (files, synthetic scenes).

A subclass says how to list videos and read frames; this base does the sampling,
the transforms, the three evaluation modes and the bad-video policy, so the Kinetics
loader and the in-memory synthetic dataset behave identically.

Modes (``mode=``):

- ``"train"``: one random clip, TSN augmentation -> ``(clip (C, T, H, W), label)``.
- ``"val"``: the centre clip, centre crop -> ``(clip (C, T, H, W), label)``; accuracy over
  these items is the papers' **clip-1**.
- ``"test"``: K uniform clips × left/centre/right crops -> ``(views (3K, C, T, H, W), label)``;
  averaging the model's scores over the views gives **video-1 / video-5**
  (K-LeftCenterRight, VA-RED² thesis Sec. 4.3; see :mod:`dynvid.data.views`).

Bad videos: a file that cannot be decoded is skipped — the item falls through to the next
video — and recorded in ``bad_videos`` with its path and reason, with one warning per file.
When the bad videos known to this process exceed ``max_bad_fraction`` of the dataset, the
next item raises :class:`~dynvid.data.errors.DatasetError` listing them: a few broken files
in a scraped dataset are normal; a broken mount is not, and must not train silently on
what is left. File-backed subclasses find missing and unreadable files when they are built
(:class:`~dynvid.data.kinetics.KineticsDataset` probes every video) and start the count
with them; a file that fails only later, mid-stream, is added when an item meets it. (With
DataLoader workers each worker counts the files it met.)

Randomness: train-mode item ``i`` in epoch ``e`` draws from ``default_rng([seed, e, i])``,
so augmentation is reproducible whatever the number of loader workers; call
:meth:`set_epoch` each epoch.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dynvid.data.errors import BadFileLog, UnreadableFile, check_max_bad_fraction
from dynvid.data.sampling import random_clip_indices, uniform_clip_indices
from dynvid.data.transforms import EvalViewsTransform, TrainClipTransform, resize_short_side

__all__ = ["ClipSpec", "VideoClipDataset", "MODES"]

MODES = ("train", "val", "test")


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut and shaped (the paper-facing knobs of a video dataset).

    Attributes:
        clip_len: frames per clip (R(2+1)D in VA-RED² Table 4.1: 8 or 16).
        stride: temporal stride between sampled frames, in target-fps frames.
        target_fps: resample videos to this rate before sampling; None keeps each file's.
        crop_size: square crop fed to the network.
        train_short_side: short side before the TSN multi-scale crop (training).
        test_short_side: short side before the left/centre/right crops (testing).
        num_test_clips: K of K-LeftCenterRight (thesis: 10 on Kinetics, 3 on Moments).
        num_test_crops: 3 (left/centre/right) or 1 (centre).
        flip_prob: horizontal-flip probability in training. Flipping turns "move left"
            into "move right": datasets whose classes depend on direction (the synthetic
            actions, Something-Something) must use 0.
    """

    clip_len: int = 16
    stride: int = 2
    target_fps: float | None = None
    crop_size: int = 112
    train_short_side: int = 128
    test_short_side: int = 112
    num_test_clips: int = 10
    num_test_crops: int = 3
    flip_prob: float = 0.5


class VideoClipDataset(Dataset):
    """Base class: subclasses implement the ``_video_*`` methods."""

    def __init__(self, spec: ClipSpec, mode: str = "train", seed: int = 0, max_bad_fraction: float = 0.05):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.spec = spec
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.max_bad_fraction = check_max_bad_fraction(max_bad_fraction)
        # Created on first use (len() needs the subclass), or by a subclass that finds bad
        # files up front (KineticsDataset probes every video).
        self._bad: BadFileLog | None = None
        self.train_transform = TrainClipTransform(
            crop_size=spec.crop_size, short_side=spec.train_short_side, flip_prob=spec.flip_prob
        )
        num_crops = spec.num_test_crops if mode == "test" else 1
        self.eval_transform = EvalViewsTransform(
            crop_size=spec.crop_size, short_side=spec.test_short_side, num_crops=num_crops
        )

    # ---- what a video source provides -------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def classes(self) -> list[str]: ...

    @abstractmethod
    def video_label(self, index: int) -> int: ...

    @abstractmethod
    def video_name(self, index: int) -> str:
        """A path or id that identifies the video in error messages and reports."""

    @abstractmethod
    def video_num_frames(self, index: int) -> int:
        """Frame count in the target frame rate. May raise UnreadableFile (e.g. VideoDecodeError)."""

    @abstractmethod
    def read_frames(self, index: int, frame_indices: np.ndarray, short_side: int) -> np.ndarray:
        """uint8 (T, H, W, 3) frames at ``frame_indices`` (target-fps units), resized so the
        short side is ``short_side`` (or left for the transform to resize). May raise
        UnreadableFile (e.g. VideoDecodeError)."""

    # ---- the shared part ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def bad_videos(self) -> dict[str, str]:
        """Missing or unreadable videos known so far in this process: path (or id) -> reason."""
        return self._bad.files if self._bad is not None else {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int):
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for dataset of {n} videos")
        if self._bad is None:
            self._bad = BadFileLog(n, self.max_bad_fraction, type(self).__name__)
        return self._bad.first_readable(index, n, self._item, f"{type(self).__name__} ({n} videos)")

    def _item(self, i: int):
        name = self.video_name(i)
        if name in self._bad:
            raise UnreadableFile(name, self._bad.files[name])
        return self._load(i), self.video_label(i)

    def _load(self, i: int) -> torch.Tensor:
        spec = self.spec
        num_frames = self.video_num_frames(i)
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = random_clip_indices(num_frames, spec.clip_len, spec.stride, rng)
            frames = self._frames(i, idx, spec.train_short_side)
            return self.train_transform(frames, rng)
        num_clips = spec.num_test_clips if self.mode == "test" else 1
        clips = uniform_clip_indices(num_frames, spec.clip_len, spec.stride, num_clips)
        views = [self.eval_transform(self._frames(i, idx, spec.test_short_side)) for idx in clips]
        out = torch.cat(views)  # (K * crops, C, T, H, W)
        return out if self.mode == "test" else out[0]

    def _frames(self, i: int, idx: np.ndarray, short_side: int) -> torch.Tensor:
        frames = torch.from_numpy(np.ascontiguousarray(self.read_frames(i, idx, short_side)))
        if min(frames.shape[1:3]) != short_side:
            frames = resize_short_side(frames, short_side)
        return frames
