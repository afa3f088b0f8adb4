"""Dataset specs → dataset objects, and the in-memory synthetic action dataset.

A spec names where the videos are:

- ``synthetic:actions`` — the embedded default: procedural scenes
  (:mod:`dynvid.data.synthetic`) generated on the fly, deterministically from the seed,
  with no disk round trip. They go through exactly the same sampling and transforms as
  files (:class:`~dynvid.data.clips.VideoClipDataset`).
- ``kinetics:s3://bucket/prefix`` (or just ``s3://…``) — the same folder on S3; the engine
  mirrors it to a local cache first (:func:`dynvid.engine.storage.fetch_dataset`).
- ``kinetics:DIR`` (or just ``DIR``) — Kinetics-style folder: ``DIR/{split}.csv`` or
  ``DIR/{split}_list.txt``, optional ``DIR/classes.txt``, videos under
  ``DIR/videos/{split}``, ``DIR/{split}`` or ``DIR`` (what ``dynvid data synth`` writes).
  Every split's class indices come from ``classes.txt`` or the training split's
  annotation (``data.train_split``), never from the split's own labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynvid.config import DataConfig
from dynvid.data.clips import ClipSpec, VideoClipDataset
from dynvid.data.errors import DatasetError, check_max_bad_fraction
from dynvid.data.kinetics import KineticsDataset, find_annotation
from dynvid.data.synthetic import ACTION_CLASSES, DEFAULT_SENSOR_NOISE, SceneConfig, SyntheticVideoSource

__all__ = ["SyntheticActions", "clip_spec", "build_clip_dataset", "build_test_dataset", "parse_spec", "scene_config"]

SPEC_KINDS = ("synthetic", "kinetics")


class SyntheticActions(VideoClipDataset):
    """Synthetic action clips, generated in memory (the embedded default dataset)."""

    def __init__(
        self,
        num_videos: int,
        split: str = "train",
        scene: SceneConfig = SceneConfig(),
        spec: ClipSpec = ClipSpec(),
        mode: str = "train",
        seed: int = 0,
        content_seed: int = 0,
    ):
        super().__init__(spec, mode=mode, seed=seed)
        self.source = SyntheticVideoSource(num_videos, seed=content_seed, cfg=scene, split=split)
        self.scene = scene
        self._cached: tuple[int, np.ndarray] | None = None  # test mode reads one video K times

    def __len__(self) -> int:
        return len(self.source)

    @property
    def classes(self) -> list[str]:
        return list(ACTION_CLASSES)

    def video_label(self, index: int) -> int:
        return int(self.source.label(index))

    def video_name(self, index: int) -> str:
        return f"synthetic:{self.source.split}/{index}"

    def video_num_frames(self, index: int) -> int:
        return self.scene.num_frames

    def read_frames(self, index: int, frame_indices: np.ndarray, short_side: int) -> np.ndarray:
        ids = np.minimum(frame_indices, self.scene.num_frames - 1)  # past the end: the last frame
        if self.mode != "test":  # one clip per item: render only its frames
            return self.source.frames(index, ids)
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self.source.get(index).frames)
        return self._cached[1][ids]


#: The embedded data at laptop scale, shared by the methods' ``embedded`` presets: 54×72
#: synthetic scenes, 48×48 crops (multi-scale from a 54 short side for training), 1,920
#: training videos, 16 clips per batch with one decoding process.
LAPTOP_SCENES = [
    "data.crop_size=48",
    "data.train_short_side=54",
    "data.test_short_side=48",
    "data.synthetic_height=54",
    "data.synthetic_width=72",
    "data.synthetic_train_videos=1920",
    "data.batch_size=16",
    "data.loader_workers=1",
]


def parse_spec(spec: str) -> tuple[str, str]:
    """``"kind:arg"`` → (kind, arg); a bare path means ``kinetics:PATH``."""
    kind, sep, arg = spec.partition(":")
    if sep and kind in SPEC_KINDS:
        return kind, arg
    if spec.startswith("s3://"):
        return "kinetics", spec
    if not sep or Path(spec).exists():
        return "kinetics", spec
    raise DatasetError(f"dataset spec {spec!r}: unknown kind {kind!r}; valid: {', '.join(SPEC_KINDS)} (e.g. synthetic:actions, kinetics:/data/k400)")


def clip_spec(cfg: DataConfig, default_flip_prob: float = 0.5) -> ClipSpec:
    return ClipSpec(
        clip_len=cfg.clip_len,
        stride=cfg.stride,
        target_fps=cfg.target_fps,
        crop_size=cfg.crop_size,
        train_short_side=cfg.train_short_side,
        test_short_side=cfg.test_short_side,
        num_test_clips=cfg.num_test_clips,
        num_test_crops=cfg.num_test_crops,
        flip_prob=default_flip_prob if cfg.flip_prob is None else cfg.flip_prob,
    )


def scene_config(cfg: DataConfig) -> SceneConfig:
    """The synthetic scenes of ``cfg`` (``synthetic_*`` fields)."""
    base = SceneConfig()
    k = cfg.synthetic_object_scale
    if k <= 0:
        raise DatasetError(f"data.synthetic_object_scale must be > 0, got {k}")
    kind, _, name = cfg.dataset.partition(":")
    std, shot = DEFAULT_SENSOR_NOISE.get(name, (0.0, 0.0)) if kind == "synthetic" else (0.0, 0.0)  # the default
    std = std if cfg.synthetic_noise_std is None else cfg.synthetic_noise_std
    shot = shot if cfg.synthetic_shot_noise is None else cfg.synthetic_shot_noise
    if std < 0 or shot < 0:
        raise DatasetError(f"data.synthetic_noise_std and data.synthetic_shot_noise must be >= 0, got {std}, {shot}")
    return SceneConfig(height=cfg.synthetic_height, width=cfg.synthetic_width, num_frames=cfg.synthetic_frames,
                       max_distractors=cfg.synthetic_max_distractors,
                       actor_size=tuple(min(0.5, v * k) for v in base.actor_size),
                       distractor_size=tuple(min(0.5, v * k) for v in base.distractor_size),
                       noise_std=std, shot_noise=shot, speed_changes=cfg.synthetic_speed_changes,
                       transients=cfg.synthetic_transients, cuts=cfg.synthetic_cuts,
                       fades=cfg.synthetic_fades)


def build_clip_dataset(cfg: DataConfig, split: str, mode: str, seed: int = 0) -> VideoClipDataset:
    """The clip dataset for ``split`` in ``mode`` ("train", "val" = clip-1, "test" = K×3 views)."""
    check_max_bad_fraction(cfg.max_bad_fraction)  # also for data that never reads a file
    kind, arg = parse_spec(cfg.dataset)
    if kind == "synthetic":
        spec = clip_spec(cfg, default_flip_prob=0.0)  # classes are defined by direction
        if arg != "actions":
            raise DatasetError(f"dataset {cfg.dataset!r}: synthetic classification data is 'synthetic:actions'")
        scene = scene_config(cfg)
        n = cfg.synthetic_train_videos if split == cfg.train_split else cfg.synthetic_val_videos
        return SyntheticActions(
            n, split=split, scene=scene, spec=spec, mode=mode, seed=seed, content_seed=cfg.synthetic_seed
        )
    spec = clip_spec(cfg)
    if arg.startswith("s3://"):
        raise DatasetError(f"dataset {cfg.dataset!r} is on S3: mirror it first with "
                           "dynvid.engine.storage.fetch_dataset (the training engine does this)")
    root = Path(arg)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (from dataset spec {cfg.dataset!r})")
    annotation = find_annotation(root, split)
    if annotation is None:
        raise DatasetError(f"{root}: no annotation for split {split!r} (looked for {split}.csv, {split}_list.txt, {split}.txt)")
    # Every split indexes its labels by the training split's classes (or classes.txt).
    train_annotation = find_annotation(root, cfg.train_split)
    if train_annotation is None and not (root / "classes.txt").is_file():
        raise DatasetError(
            f"{root}: no annotation for the training split {cfg.train_split!r} and no classes.txt; "
            f"the class indices of split {split!r} come from one of them"
        )
    return KineticsDataset(annotation, spec=spec, mode=mode, seed=seed, max_bad_fraction=cfg.max_bad_fraction,
                           train_annotation=train_annotation)


def build_test_dataset(cfg: DataConfig, max_videos: int | None = None, seed: int = 0) -> torch.utils.data.Dataset:
    """The K-LeftCenterRight test set (``mode="test"`` on the val split), cut to its first
    ``max_videos`` videos (``train.test_videos``) when given."""
    test = build_clip_dataset(cfg, cfg.val_split, "test", seed=seed)
    if max_videos is not None and max_videos < len(test):
        test = torch.utils.data.Subset(test, range(max_videos))
    return test
