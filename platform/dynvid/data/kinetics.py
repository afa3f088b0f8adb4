"""Kinetics-400 / Mini-Kinetics-200 / Moments-in-Time style video classification datasets.

Two annotation formats are read, both as real users have them:

- **Kinetics CSV** (``label,youtube_id,time_start,time_end,split``; extra columns such as
  ``is_cc`` are ignored). Video files are found by walking ``video_root`` once and
  matching file stems ``{youtube_id}_{time_start:06d}_{time_end:06d}`` (the naming of
  the common Kinetics downloaders) or plain ``{youtube_id}``, in any sub-folder layout
  (``{label}/…``, ``{split}/{label}/…``, flat). Class names come from ``classes`` /
  a ``classes.txt`` beside the CSV, else the sorted unique labels of the CSV (the
  Kinetics convention for class indices).
- **List file** (``path label`` per line, MMAction2 / PyTorchVideo ``LabeledVideoPaths``):
  ``path`` is relative to ``video_root`` (default: the list file's folder); ``label`` an
  integer class index.

Kinetics is scraped from YouTube and every copy misses some videos: a CSV row whose file
is absent is dropped and reported (``missing_videos``), and only when more than
``max_bad_fraction`` of the rows are missing does loading fail. A malformed line, a label
outside the class list, or a missing annotation file / video folder raises an error that
names the file and line.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynvid.data.clips import ClipSpec, VideoClipDataset
from dynvid.data.errors import AnnotationError, DatasetError
from dynvid.data.sampling import resampled_length
from dynvid.data.video_io import VideoInfo, probe_video, read_clip

__all__ = ["VideoRecord", "read_kinetics_csv", "read_list_file", "read_classes", "KineticsDataset"]

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video: where it is and its class index."""

    path: str
    label: int


def read_classes(path: str | os.PathLike) -> list[str]:
    """One class name per non-empty line, in index order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class list not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AnnotationError(path, f"duplicate class names {dup}")
    return names


def _index_videos(video_root: Path) -> dict[str, str]:
    """Map file stem -> path for every video file under ``video_root``."""
    index: dict[str, str] = {}
    stack = [video_root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.name.lower().endswith(VIDEO_EXTENSIONS) and not entry.name.startswith("."):
                    index.setdefault(os.path.splitext(entry.name)[0], entry.path)
    return index


def read_kinetics_csv(
    csv_path: str | os.PathLike,
    video_root: str | os.PathLike,
    classes: list[str] | None = None,
) -> tuple[list[VideoRecord], list[str], list[str]]:
    """Parse a Kinetics CSV. Returns (records found on disk, class names, missing video ids)."""
    csv_path, video_root = Path(csv_path), Path(video_root)
    if not csv_path.is_file():
        raise DatasetError(f"annotation file not found: {csv_path}")
    if not video_root.is_dir():
        raise DatasetError(f"video folder not found: {video_root}")
    rows: list[tuple[int, str, str]] = []  # (line, label, stem)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing_cols = [c for c in KINETICS_COLUMNS if c not in header]
        if missing_cols:
            raise AnnotationError(csv_path, f"header lacks columns {missing_cols}; found {header}", line=1)
        for row in reader:
            line = reader.line_num
            if None in row or any(row[c] is None for c in KINETICS_COLUMNS):
                raise AnnotationError(csv_path, f"expected {len(header)} fields, got {row}", line=line)
            label, yid = row["label"].strip(), row["youtube_id"].strip()
            if not label or not yid:
                raise AnnotationError(csv_path, "empty label or youtube_id", line=line)
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError:
                raise AnnotationError(
                    csv_path,
                    f"time_start/time_end must be numbers, got {row['time_start']!r}, {row['time_end']!r}",
                    line=line,
                ) from None
            rows.append((line, label, f"{yid}_{start:06d}_{end:06d}"))
    if classes is None:
        classes = sorted({label for _, label, _ in rows})
    class_index = {name: i for i, name in enumerate(classes)}
    videos = _index_videos(video_root)
    records, missing = [], []
    for line, label, stem in rows:
        if label not in class_index:
            raise AnnotationError(csv_path, f"unknown class {label!r} (not in the {len(classes)} classes)", line=line)
        path = videos.get(stem) or videos.get(stem[:-14])  # plain {youtube_id}
        if path is None:
            missing.append(stem)
        else:
            records.append(VideoRecord(path, class_index[label]))
    return records, list(classes), missing


def read_list_file(
    list_path: str | os.PathLike, video_root: str | os.PathLike | None = None, num_classes: int | None = None
) -> list[VideoRecord]:
    """Parse ``path label`` lines (paths relative to ``video_root``, default the file's folder)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DatasetError(f"annotation file not found: {list_path}")
    root = Path(video_root) if video_root is not None else list_path.parent
    records = []
    for line_no, raw in enumerate(list_path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise AnnotationError(list_path, f"expected '<path> <integer label>', got {raw!r}", line=line_no)
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise AnnotationError(
                list_path, f"label {label} outside [0, {num_classes if num_classes is not None else '∞'})",
                line=line_no,
            )
        records.append(VideoRecord(str(root / parts[0]), label))
    return records


class KineticsDataset(VideoClipDataset):
    """Clip dataset over video files listed in a Kinetics CSV or a ``path label`` list.

    Args:
        annotation: the CSV (``.csv``) or list file (anything else).
        video_root: folder holding the videos (CSV: searched recursively; list: paths are
            relative to it). Default: for a CSV ``<dir>/videos/<split>`` or ``<dir>/<split>``
            or ``<dir>``, the first that exists (``split`` = the CSV's stem); for a list file
            its folder.
        classes: class names in index order; default ``classes.txt`` beside the
            annotation if present, else (CSV) the sorted labels.
        spec: clip sampling / crop settings.
        mode: "train", "val" (clip-1) or "test" (K × 3 views).
        max_bad_fraction: tolerated fraction of missing or undecodable videos.
    """

    def __init__(
        self,
        annotation: str | os.PathLike,
        video_root: str | os.PathLike | None = None,
        classes: list[str] | None = None,
        spec: ClipSpec = ClipSpec(),
        mode: str = "train",
        seed: int = 0,
        max_bad_fraction: float = 0.05,
    ):
        super().__init__(spec, mode=mode, seed=seed, max_bad_fraction=max_bad_fraction)
        annotation = Path(annotation)
        self.annotation = annotation
        if classes is None and (annotation.parent / "classes.txt").is_file():
            classes = read_classes(annotation.parent / "classes.txt")
        self.missing_videos: list[str] = []
        if annotation.suffix.lower() == ".csv":
            root = Path(video_root) if video_root is not None else self._default_csv_root(annotation)
            self.records, self._classes, self.missing_videos = read_kinetics_csv(annotation, root, classes)
            total = len(self.records) + len(self.missing_videos)
            if self.missing_videos:
                log.warning("%s: %d of %d videos not found under %s (e.g. %s)", annotation,
                            len(self.missing_videos), total, root, self.missing_videos[0])
            if len(self.missing_videos) > max_bad_fraction * total:
                raise DatasetError(
                    f"{annotation}: {len(self.missing_videos)} of {total} videos are missing under {root}, "
                    f"more than max_bad_fraction={max_bad_fraction:g} (first: {self.missing_videos[:5]})"
                )
        else:
            n = len(classes) if classes is not None else None
            self.records = read_list_file(annotation, video_root, num_classes=n)
            self._classes = classes if classes is not None else [
                str(i) for i in range(max((r.label for r in self.records), default=-1) + 1)
            ]
        if not self.records:
            raise DatasetError(f"{annotation}: no videos to load")
        self._info: dict[int, VideoInfo] = {}

    @staticmethod
    def _default_csv_root(csv_path: Path) -> Path:
        base, split = csv_path.parent, csv_path.stem
        for cand in (base / "videos" / split, base / split, base):
            if cand.is_dir():
                return cand
        return base

    def __len__(self) -> int:
        return len(self.records)

    @property
    def classes(self) -> list[str]:
        return self._classes

    def video_label(self, index: int) -> int:
        return self.records[index].label

    def video_name(self, index: int) -> str:
        return self.records[index].path

    def info(self, index: int) -> VideoInfo:
        if index not in self._info:
            self._info[index] = probe_video(self.records[index].path)
        return self._info[index]

    def video_num_frames(self, index: int) -> int:
        info = self.info(index)
        return resampled_length(info.num_frames, info.fps, self.spec.target_fps)

    def read_frames(self, index: int, frame_indices: np.ndarray, short_side: int) -> np.ndarray:
        return read_clip(
            self.records[index].path,
            frame_indices,
            target_fps=self.spec.target_fps,
            short_side=short_side,
            info=self.info(index),
        )
