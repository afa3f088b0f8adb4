"""Kinetics-400 / Mini-Kinetics-200 / Moments-in-Time style video classification datasets.

Two annotation formats are read, both as real users have them:

- **Kinetics CSV** (``label,youtube_id,time_start,time_end,split``; extra columns such as
  ``is_cc`` are ignored). Video files are found by walking ``video_root`` once and
  matching file stems ``{youtube_id}_{time_start:06d}_{time_end:06d}`` (the naming of
  the common Kinetics downloaders) or plain ``{youtube_id}``, in any sub-folder layout
  (``{label}/…``, ``{split}/{label}/…``, flat).
- **List file** (``path label`` per line, MMAction2 / PyTorchVideo ``LabeledVideoPaths``):
  ``path`` is relative to ``video_root`` (default: the list file's folder); ``label`` an
  integer class index.

Class indices come from the *training* split for every split: ``classes.txt`` beside the
training annotation, else the sorted labels of the training CSV (the Kinetics convention),
else 0 … the largest label of the training list. A val label outside that list is an
:class:`AnnotationError` naming the file, line and class. Files may start with a UTF-8
byte-order mark.

A row repeating an earlier row's video (same ``youtube_id`` and time range, or same list
path) with the same label is dropped — the first is kept — and reported once per load
(``duplicates``, ``dynvid data inspect``); with another label it is an error.

Kinetics is scraped from YouTube and every copy misses some videos. Every listed video is
probed when the dataset is built: missing and unreadable ones are dropped and recorded
(``bad_videos``), and loading fails only when together they are more than
``max_bad_fraction`` of the videos listed. The probe results are cached on disk
(:class:`~dynvid.data.video_io.ProbeCache`, one file per annotation): after the first
process on a machine, the driver and every worker probe only new or changed videos.

A malformed line, a label outside the class list, or a missing annotation file / video
folder raises an error that names the file and line.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from dynvid.data.clips import ClipSpec, VideoClipDataset
from dynvid.data.errors import AnnotationError, BadFileLog, DatasetError
from dynvid.data.sampling import resampled_length
from dynvid.data.video_io import ProbeCache, VideoDecodeError, VideoInfo, probe_video, probe_videos, read_clip

__all__ = [
    "VideoRecord",
    "Duplicate",
    "Annotation",
    "read_kinetics_csv",
    "read_list_file",
    "read_classes",
    "split_classes",
    "find_annotation",
    "KineticsDataset",
]

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
T = TypeVar("T")


def find_annotation(root: str | os.PathLike, split: str) -> Path | None:
    """``root/{split}.csv``, ``{split}_list.txt`` or ``{split}.txt``, the first that exists."""
    for name in (f"{split}.csv", f"{split}_list.txt", f"{split}.txt"):
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video: where it is and its class index."""

    path: str
    label: int


@dataclass(frozen=True)
class Duplicate:
    """A repeated annotation row (same video, same class): dropped, the first row is kept."""

    line: int
    first_line: int
    video: str  # the CSV key ``{youtube_id}_{start:06d}_{end:06d}`` or the list file's path


@dataclass
class Annotation:
    """What an annotation file lists, matched against the video folder."""

    records: list[VideoRecord]  # videos on disk, each once, in file order
    classes: list[str]
    missing: list[str]  # listed but absent: CSV keys, or list-file paths
    duplicates: list[Duplicate]  # repeated rows, dropped


def read_classes(path: str | os.PathLike) -> list[str]:
    """One class name per non-empty line, in index order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class list not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AnnotationError(path, f"duplicate class names {dup}")
    return names


def split_classes(train_annotation: str | os.PathLike) -> list[str]:
    """The class list every split indexes its labels by: ``classes.txt`` beside the training
    annotation, else the sorted labels of the training CSV (the Kinetics convention), else
    (list file) ``"0" … "max label"`` of the training list. Never a split's own labels: a
    val split that covers fewer classes would shift every index."""
    train_annotation = Path(train_annotation)
    if (train_annotation.parent / "classes.txt").is_file():
        return read_classes(train_annotation.parent / "classes.txt")
    if not train_annotation.is_file():
        raise DatasetError(f"annotation file not found: {train_annotation}")
    if train_annotation.suffix.lower() == ".csv":
        return sorted({label for _, label, _ in _parse_csv(train_annotation)})
    top = max((label for _, _, label in _parse_list(train_annotation, None, None)), default=-1)
    return [str(i) for i in range(top + 1)]


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


def _parse_csv(csv_path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, label, ``{youtube_id}_{start:06d}_{end:06d}``) per row, validated."""
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") would otherwise glue onto "label".
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing_cols = [c for c in KINETICS_COLUMNS if c not in header]
        if missing_cols:
            raise AnnotationError(csv_path, f"header lacks columns {missing_cols}; found {header}", line=1)
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):  # too many or too few fields
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
            yield line, label, f"{yid}_{start:06d}_{end:06d}"


def _parse_list(list_path: Path, num_classes: int | None, classes_from: str | None) -> Iterator[tuple[int, str, int]]:
    """(line, path as written, label) per ``path label`` line, validated."""
    text = list_path.read_text(encoding="utf-8-sig")  # a byte-order mark would hide the first line
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise AnnotationError(list_path, f"expected '<path> <integer label>', got {raw!r}", line=line_no)
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            source = f" (the classes of {classes_from})" if classes_from else ""
            raise AnnotationError(
                list_path, f"label {label} outside [0, {num_classes if num_classes is not None else '∞'}){source}",
                line=line_no,
            )
        yield line_no, parts[0], label


def _drop_duplicates(path: Path, rows: Iterable[tuple[int, str, T]]) -> tuple[list[tuple[int, str, T]], list[Duplicate]]:
    """Keep the first row of each video key; a repeat with another label is an error."""
    first: dict[str, tuple[int, T]] = {}
    kept, dups = [], []
    for line, key, label in rows:
        if key not in first:
            first[key] = (line, label)
            kept.append((line, key, label))
        elif first[key][1] == label:
            dups.append(Duplicate(line, first[key][0], key))
        else:
            raise AnnotationError(
                path, f"{key} is listed again with label {label!r}; line {first[key][0]} gives {first[key][1]!r}",
                line=line,
            )
    return kept, dups


def read_kinetics_csv(
    csv_path: str | os.PathLike,
    video_root: str | os.PathLike,
    classes: list[str] | None = None,
    classes_from: str | None = None,
) -> Annotation:
    """Parse a Kinetics CSV and find its videos under ``video_root``.

    Args:
        csv_path: the annotation.
        video_root: searched recursively for ``{key}.*`` or ``{youtube_id}.*``.
        classes: class names in index order; default the sorted labels of this CSV.
        classes_from: where ``classes`` came from, for the unknown-class error.
    """
    csv_path, video_root = Path(csv_path), Path(video_root)
    if not csv_path.is_file():
        raise DatasetError(f"annotation file not found: {csv_path}")
    if not video_root.is_dir():
        raise DatasetError(f"video folder not found: {video_root}")
    rows, duplicates = _drop_duplicates(csv_path, ((line, key, label) for line, label, key in _parse_csv(csv_path)))
    if classes is None:
        classes, classes_from = sorted({label for _, _, label in rows}), str(csv_path)
    classes_from = classes_from or "the given class list"
    class_index = {name: i for i, name in enumerate(classes)}
    videos = _index_videos(video_root)
    records, missing = [], []
    for line, key, label in rows:
        if label not in class_index:
            raise AnnotationError(
                csv_path, f"unknown class {label!r} (not among the {len(classes)} classes of {classes_from})", line=line
            )
        path = videos.get(key) or videos.get(key[:-14])  # plain {youtube_id}
        if path is None:
            missing.append(key)
        else:
            records.append(VideoRecord(path, class_index[label]))
    return Annotation(records, list(classes), missing, duplicates)


def read_list_file(
    list_path: str | os.PathLike,
    video_root: str | os.PathLike | None = None,
    classes: list[str] | None = None,
    classes_from: str | None = None,
) -> Annotation:
    """Parse ``path label`` lines (paths relative to ``video_root``, default the file's folder).

    Args:
        classes: class names in index order (labels must index it); default ``"0" … "max label"``.
        classes_from: where ``classes`` came from, for the out-of-range error.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DatasetError(f"annotation file not found: {list_path}")
    root = Path(video_root) if video_root is not None else list_path.parent
    n = len(classes) if classes is not None else None
    rows, duplicates = _drop_duplicates(list_path, _parse_list(list_path, n, classes_from))
    if classes is None:
        classes = [str(i) for i in range(max((label for _, _, label in rows), default=-1) + 1)]
    records, missing = [], []
    for _, rel, label in rows:
        path = str(root / rel)
        if os.path.isfile(path):
            records.append(VideoRecord(path, label))
        else:
            missing.append(path)
    return Annotation(records, list(classes), missing, duplicates)


class KineticsDataset(VideoClipDataset):
    """Clip dataset over video files listed in a Kinetics CSV or a ``path label`` list.

    Every listed video is probed at construction (a thread pool; a few ms a video, progress
    printed for large sets; the annotation's :class:`ProbeCache` answers for files unchanged
    since an earlier construction in any process on the machine): missing and unreadable
    ones are dropped and recorded in ``bad_videos`` (path or CSV key -> reason), and
    :class:`DatasetError` is raised when they are more than ``max_bad_fraction`` of the
    (de-duplicated) videos listed.

    Args:
        annotation: the CSV (``.csv``) or list file (anything else).
        video_root: folder holding the videos (CSV: searched recursively; list: paths are
            relative to it). Default: for a CSV ``<dir>/videos/<split>`` or ``<dir>/<split>``
            or ``<dir>``, the first that exists (``split`` = the CSV's stem); for a list file
            its folder.
        classes: class names in index order; default :func:`split_classes` of
            ``train_annotation`` (``classes.txt`` beside it, else its labels).
        spec: clip sampling / crop settings.
        mode: "train", "val" (clip-1) or "test" (K × 3 views).
        max_bad_fraction: tolerated fraction of missing or unreadable videos, in [0, 1].
        train_annotation: the training split's annotation, whose labels define the class
            indices of every split; default ``annotation`` itself.
        probe_threads: threads probing the videos (default ``min(16, cpu count)``).
        probe_cache_dir: folder of the probe cache; default ``$DYNVID_CACHE_DIR/probe``, else
            ``~/.cache/dynvid/probe``.
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
        train_annotation: str | os.PathLike | None = None,
        probe_threads: int | None = None,
        probe_cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__(spec, mode=mode, seed=seed, max_bad_fraction=max_bad_fraction)
        annotation = Path(annotation)
        self.annotation = annotation
        source = Path(train_annotation) if train_annotation is not None else annotation
        classes_from = "the given class list"
        if classes is None and (source.parent / "classes.txt").is_file():
            classes, classes_from = read_classes(source.parent / "classes.txt"), str(source.parent / "classes.txt")
        elif classes is None and source != annotation:
            classes, classes_from = split_classes(source), str(source)
        if annotation.suffix.lower() == ".csv":
            root = Path(video_root) if video_root is not None else self._default_csv_root(annotation)
            listed = read_kinetics_csv(annotation, root, classes, classes_from)
        else:
            root = Path(video_root) if video_root is not None else annotation.parent
            listed = read_list_file(annotation, root, classes, classes_from)
        self._classes = listed.classes
        self.missing_videos: list[str] = listed.missing
        self.duplicates: list[Duplicate] = listed.duplicates
        if self.duplicates:
            shown = ", ".join(f"line {d.line} repeats line {d.first_line}" for d in self.duplicates[:3])
            log.warning("%s: %d duplicate rows dropped, the first of each kept (%s)", annotation,
                        len(self.duplicates), shown)
        total = len(listed.records) + len(listed.missing)
        if total == 0:
            raise DatasetError(f"{annotation}: no videos listed")

        # Probe every video now: an unreadable file counts against max_bad_fraction before
        # training starts, not only when some epoch happens to read it.
        infos = probe_videos([r.path for r in listed.records], probe_threads,
                             _ProgressPrinter(annotation, len(listed.records)),
                             cache=ProbeCache(annotation.resolve(), probe_cache_dir))
        self.records: list[VideoRecord] = []
        self._info: dict[int, VideoInfo] = {}
        self.unreadable_videos: dict[str, str] = {}
        for rec, info in zip(listed.records, infos):
            if isinstance(info, VideoDecodeError):
                self.unreadable_videos[rec.path] = info.reason
            else:
                self._info[len(self.records)] = info
                self.records.append(rec)
        self._bad = BadFileLog(total, self.max_bad_fraction, str(annotation))
        self._bad.add({key: f"not found under {root}" for key in self.missing_videos})
        self._bad.add(self.unreadable_videos)
        bad = self._bad.files
        if len(bad) > self.max_bad_fraction * total:
            shown = "; ".join(f"{p} ({r})" for p, r in list(bad.items())[:5])
            raise DatasetError(
                f"{annotation}: {len(bad)} of {total} videos are missing or unreadable "
                f"({len(self.missing_videos)} missing under {root}, {len(self.unreadable_videos)} unreadable), "
                f"more than max_bad_fraction={self.max_bad_fraction:g}; first: {shown}"
            )
        if not self.records:
            raise DatasetError(f"{annotation}: none of the {total} videos listed is readable")
        if bad:  # only under the threshold: over it, the error above is the one line a job prints
            log.warning("%s: %d of %d videos skipped (%d missing under %s, %d unreadable), e.g. %s",
                        annotation, len(bad), total, len(self.missing_videos), root,
                        len(self.unreadable_videos), next(iter(bad)))

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


class _ProgressPrinter:
    """Prints probing progress of large datasets to stderr every ``every_s`` seconds."""

    def __init__(self, what: Path, total: int, min_total: int = 2000, every_s: float = 10.0):
        self.what, self.enabled, self.every_s = what, total >= min_total, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or done == total:
            self.last = now
            print(f"[dynvid] {self.what}: probed {done}/{total} videos ({now - self.start:.0f}s)",
                  file=sys.stderr, flush=True)
