"""Video files: encode (mp4/H.264) and decode clips with PyAV.

Decoding is the hot path of every real-data run, so the reader does only what a clip needs:

- **Seek** to the key frame before the clip's first timestamp, then decode forward; frames
  before the clip are decoded (H.264 needs them) but never converted to RGB.
- **Frame-rate resampling**: a clip is described in a *target* frame rate (Kinetics
  pipelines commonly resample to a fixed rate, e.g. 30 fps). Target frame ``k`` is at time
  ``k / target_fps``; the decoded frame whose timestamp is nearest is taken, so a 25 fps
  file read at 30 fps repeats frames and a 60 fps file read at 30 fps skips them.
- **Temporal stride** is applied in target-fps frame units (``stride=8`` with 8 frames
  spans 64 target frames).
- **Resize at decode time** (optional): libswscale resizes the few frames that are kept
  while converting to RGB, which is far cheaper than converting at full size and resizing
  in torch.
- **Display rotation**: phones store portrait video as landscape frames plus a display
  matrix (or, as older FFmpeg builds exported it, a ``rotate`` tag). :func:`probe_video`
  decodes the first frame to read it (FFmpeg attaches the matrix to decoded frames; PyAV
  exposes no stream-level accessor), :class:`VideoInfo` gives the displayed size, and every
  frame is turned upright by quarter turns before it is returned, as ``ffmpeg``'s autorotate
  does. Mirroring in the matrix is ignored (no camera writes it).

Every PyAV/FFmpeg failure surfaces as :class:`VideoDecodeError` naming the file, so a
corrupt video can be skipped and reported by the dataset instead of raising a raw
traceback from deep inside PyAV.

**Probe cache**: every process that builds a dataset (the driver, then each Ray Train
worker for each split, at every stage) would probe all its videos again — minutes for
Kinetics. :class:`ProbeCache` keeps the results of one video list on disk
(``$DYNVID_CACHE_DIR/probe``, default ``~/.cache/dynvid/probe``), keyed by each file's
absolute path, size and modification time, so a later process probes only new or changed
files.

Writing is atomic (temporary file in the same directory, then ``os.replace``): an
interrupted ``dynvid data synth`` never leaves a truncated mp4 under its final name.
Key frames are placed every 2 seconds by default, close to what YouTube (the source of
Kinetics) uses, which keeps seeks cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np

from dynvid.atomic import atomic_path, atomic_write_bytes
from dynvid.data.errors import UnreadableFile

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "probe_video",
    "probe_videos",
    "ProbeCache",
    "display_rotation",
    "read_clip",
    "read_video",
    "write_video",
    "short_side_size",
]


log = logging.getLogger(__name__)


class VideoDecodeError(UnreadableFile):
    """A video file cannot be opened or decoded. ``path`` names the file; ``transient`` is
    True when the operating system reported the failure (missing file, I/O error, permission,
    too many open files), which may pass, rather than FFmpeg rejecting the file's bytes."""

    def __init__(self, path: str | os.PathLike, reason: str, transient: bool = False) -> None:
        super().__init__(path, reason)
        self.transient = transient

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.transient))

    def __str__(self) -> str:
        return f"cannot decode video {self.path}: {self.reason}"


@dataclass(frozen=True)
class VideoInfo:
    """What a clip sampler needs to know about a video file.

    ``width`` and ``height`` are the displayed size, after ``rotation``: the counter-clockwise
    angle (0, 90, 180 or 270) by which the stored frames are turned for display.
    """

    path: str
    num_frames: int
    fps: float
    duration: float  # seconds
    width: int
    height: int
    codec: str
    rotation: int = 0


def display_rotation(matrix_degrees: float | None, rotate_tag: str | None = None) -> int:
    """The counter-clockwise quarter-turn angle (0, 90, 180, 270) that shows a video upright.

    Sign conventions, as FFmpeg documents them: the display-matrix angle
    (``av_display_rotation_get``, PyAV's ``VideoFrame.rotation``, ffprobe's "rotation") is
    counter-clockwise; the legacy ``rotate`` tag is clockwise — an iPhone portrait video has
    ``rotate=90`` and a matrix angle of -90, and ``ffmpeg`` displays it turned 90°
    clockwise (``transpose=clock``). The matrix wins when both are present; angles are
    rounded to the nearest quarter turn.

    Args:
        matrix_degrees: the display-matrix angle, counter-clockwise; 0 or None when absent.
        rotate_tag: the stream's ``rotate`` metadata value (clockwise degrees), if any.
    """
    ccw = float(matrix_degrees or 0.0)
    if ccw == 0.0 and rotate_tag:
        try:
            ccw = -float(rotate_tag)
        except ValueError:
            ccw = 0.0
    return int(round(ccw / 90.0)) % 4 * 90


def _av_error_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the container header and decode the first frame (its display rotation, and a
    check that the stream decodes at all): a few milliseconds for a Kinetics-sized H.264 file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file does not exist", transient=True)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoDecodeError(path, "unknown frame rate")
            fps = float(rate)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            num_frames = int(stream.frames)
            if num_frames <= 0:
                num_frames = int(round(duration * fps)) if duration > 0 else 0
            if num_frames <= 0:  # no usable header: count by demuxing
                num_frames = sum(1 for p in container.demux(stream) if p.size)
                duration = num_frames / fps
                container.seek(0)
            if duration <= 0:
                duration = num_frames / fps
            stream.thread_count = 1  # one frame: frame threading would only add start-up cost
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoDecodeError(path, "no decodable frame")
            rotation = display_rotation(first.rotation, stream.metadata.get("rotate"))
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            return VideoInfo(
                path=path,
                num_frames=num_frames,
                fps=fps,
                duration=duration,
                width=width,
                height=height,
                codec=stream.codec_context.name,
                rotation=rotation,
            )
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, ZeroDivisionError) as exc:
        raise VideoDecodeError(path, _av_error_reason(exc), transient=isinstance(exc, OSError)) from None


def probe_videos(
    paths: Sequence[str | os.PathLike],
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache: ProbeCache | None = None,
) -> list[VideoInfo | VideoDecodeError]:
    """:func:`probe_video` for many files, in order: each item is the info or the error.

    FFmpeg releases the GIL while it opens and decodes, so a small thread pool scales with
    the cores and hides latency on network mounts (240k Kinetics videos at a few ms each
    are 10–15 minutes serially).

    Args:
        paths: video files.
        threads: pool size; default ``min(16, cpu count)``.
        progress: called as ``progress(done, total)`` after each file.
        cache: results of an earlier probe of these files; files whose size and modification
            time are unchanged are not probed again, and the cache is rewritten with this
            probe's results when anything changed.
    """
    known = cache.load() if cache is not None else {}

    def one(path: str | os.PathLike) -> tuple[VideoInfo | VideoDecodeError, str | None, _Entry | None]:
        path = os.fspath(path)
        key, stamp = None, None
        if cache is not None:
            try:
                st = os.stat(path)  # before probing: a file changed meanwhile is re-probed next time
                key, stamp = os.path.abspath(path), (st.st_size, st.st_mtime_ns)
            except OSError:
                pass  # probe_video names the problem; nothing to cache
        hit = known.get(key) if key is not None else None
        if hit is not None and hit[:2] == stamp:
            return _from_entry(path, hit), key, hit
        try:
            result: VideoInfo | VideoDecodeError = probe_video(path)
        except VideoDecodeError as exc:
            result = exc
        if stamp is None or getattr(result, "transient", False):
            return result, None, None
        value = result.reason if isinstance(result, VideoDecodeError) else _info_values(result)
        return result, key, (*stamp, value)

    threads = threads or min(16, os.cpu_count() or 1)
    out: list[VideoInfo | VideoDecodeError] = []
    entries: dict[str, _Entry] = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for result, key, entry in pool.map(one, paths):
            out.append(result)
            if entry is not None:
                entries[key] = entry  # type: ignore[index]
            if progress is not None:
                progress(len(out), len(paths))
    if cache is not None:
        reused = sum(1 for key, entry in entries.items() if known.get(key) is entry)
        log.info("%s: %d of %d probe results reused from %s", cache.name, reused, len(out), cache.path)
        if entries != known:
            cache.save(entries)
    return out


# ---- probe cache ----------------------------------------------------------------------------

_INFO_FIELDS = [f.name for f in dataclasses.fields(VideoInfo) if f.name != "path"]
_CACHE_VERSION = 1  # bump when probe_video's results change for the same file
_Entry = tuple  # (size, mtime_ns, [VideoInfo field values but path] or the failure reason)
_warned_folders: set[str] = set()


def _probe_cache_folder() -> Path:
    """``$DYNVID_CACHE_DIR/probe``, else ``$XDG_CACHE_HOME/dynvid/probe`` (as the storage
    caches), else ``~/.cache/dynvid/probe``; read at each use, so tests can point it away."""
    root = os.environ.get("DYNVID_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dynvid"
    return Path(root) / "probe"


def _info_values(info: VideoInfo) -> list:
    return [getattr(info, name) for name in _INFO_FIELDS]


def _from_entry(path: str, entry: _Entry) -> VideoInfo | VideoDecodeError:
    if isinstance(entry[2], str):
        return VideoDecodeError(path, entry[2])
    return VideoInfo(path, *entry[2])


class ProbeCache:
    """The :func:`probe_video` results of one list of videos, kept on disk across processes.

    One JSON file per list, ``<folder>/<hash of name>.json``, holding for each video (by
    absolute path) its size, modification time (ns) and either its :class:`VideoInfo` or the
    reason it is unreadable; an entry is used only while size and time still match. Failures
    the operating system reported (``VideoDecodeError.transient``) are never kept. The file is
    written whole to a temporary file and renamed over the old one, so processes building
    the same dataset at once each read a complete file. The cache can only save time: an
    unreadable or corrupt file is ignored with a warning, and an unwritable folder turns the
    cache off with one warning per process. Files written by another PyAV version or an
    older dynvid are ignored (FFmpeg may probe the same file differently).

    Args:
        name: what the list is, e.g. the annotation file's absolute path (hashed for the
            file name, stored in the file for a reader).
        folder: default ``$DYNVID_CACHE_DIR/probe``, else ``~/.cache/dynvid/probe``.
    """

    def __init__(self, name: str | os.PathLike, folder: str | os.PathLike | None = None):
        self.name = os.fspath(name)
        self.folder = Path(folder) if folder is not None else _probe_cache_folder()
        self.path = self.folder / f"{hashlib.sha256(self.name.encode()).hexdigest()[:24]}.json"

    def load(self) -> dict[str, _Entry]:
        """absolute path -> entry; empty when there is no usable file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            log.warning("ignoring the probe cache %s of %s: %s", self.path, self.name, exc)
            return {}
        try:
            if (data["version"], data["av"], data["fields"]) != (_CACHE_VERSION, av.__version__, _INFO_FIELDS):
                return {}
            entries = {}
            for key, (size, mtime_ns, result) in data["videos"].items():
                if not (isinstance(size, int) and isinstance(mtime_ns, int)):
                    raise ValueError(f"bad size/mtime for {key}")
                if not isinstance(result, str):
                    VideoInfo(key, *result)  # the right number of fields
                entries[key] = (size, mtime_ns, result)
            return entries
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("ignoring the probe cache %s of %s: unexpected content (%s: %s)",
                        self.path, self.name, type(exc).__name__, exc)
            return {}

    def save(self, entries: dict[str, _Entry]) -> None:
        """Replace the file with ``entries``; on an OS error, warn (once per folder) and go on."""
        data = {"version": _CACHE_VERSION, "av": av.__version__, "name": self.name, "fields": _INFO_FIELDS,
                "videos": entries}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode("utf-8"), fsync=False)
        except OSError as exc:
            if str(self.folder) not in _warned_folders:
                _warned_folders.add(str(self.folder))
                log.warning("cannot write the probe cache in %s (%s): every process probes its videos "
                            "again; set DYNVID_CACHE_DIR to a writable folder", self.folder, exc)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the shorter side equal to ``short_side``, aspect kept, even sizes
    rounded to the nearest integer."""
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def read_clip(
    path: str | os.PathLike,
    frame_indices: Sequence[int],
    *,
    target_fps: float | None = None,
    short_side: int | None = None,
    info: VideoInfo | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Decode the frames of one clip.

    Args:
        path: video file.
        frame_indices: non-decreasing frame indices in the ``target_fps`` time base
            (index ``k`` is at ``k / target_fps`` seconds); indices past the end of the
            video are clamped to its last frame (short videos loop their tail, as in
            PyTorchVideo's samplers).
        target_fps: frame rate the indices refer to; None = the file's own rate.
        short_side: if given, frames are resized (bilinear, by libswscale) so that their
            shorter side has this many pixels.
        info: a :class:`VideoInfo` from :func:`probe_video`, to skip probing again.
        threads: decoder threads (1 keeps the measurement per core honest; >1 uses
            FFmpeg frame threading).

    Returns:
        uint8 array (T, H, W, 3), RGB.
    """
    path = os.fspath(path)
    indices = [int(i) for i in frame_indices]
    if not indices:
        raise ValueError("frame_indices is empty")
    if any(b < a for a, b in zip(indices, indices[1:])):
        raise ValueError(f"frame_indices must be non-decreasing, got {indices}")
    if info is None:
        info = probe_video(path)
    fps = float(target_fps or info.fps)
    # Timestamps wanted, clamped to the last decodable frame's time.
    last_t = max(0.0, (info.num_frames - 1) / info.fps)
    wanted = [min(i / fps, last_t) for i in indices]
    size = None
    if short_side is not None:
        size = short_side_size(info.height, info.width, short_side)
    try:
        return _decode_nearest(path, wanted, info, size, threads)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise VideoDecodeError(path, _av_error_reason(exc)) from None


def _decode_nearest(
    path: str,
    wanted: list[float],
    info: VideoInfo,
    size: tuple[int, int] | None,
    threads: int,
) -> np.ndarray:
    """For each wanted time, the decoded frame with the nearest timestamp."""
    half_frame = 0.5 / info.fps
    out: list[np.ndarray | None] = [None] * len(wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(1, threads)
        if threads > 1:
            stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1)
        start_pts = stream.start_time or 0
        if wanted[0] > half_frame:
            container.seek(
                int((wanted[0] - half_frame) / time_base) + start_pts,
                stream=stream,
                backward=True,
                any_frame=False,
            )
        prev_frame, prev_t = None, -math.inf
        prev_rgb = None  # prev_frame converted, when it serves several wanted times
        j = 0  # next wanted time to fill
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float((frame.pts - start_pts) * time_base)
            # Every wanted time nearer to the previous frame than to this one gets it.
            while j < len(wanted) and prev_frame is not None and wanted[j] - prev_t <= t - wanted[j]:
                if prev_rgb is None:
                    prev_rgb = _to_rgb(prev_frame, size, info.rotation)
                out[j] = prev_rgb
                j += 1
            if j >= len(wanted):
                break
            prev_frame, prev_t, prev_rgb = frame, t, None
        # End of stream: the last decoded frame serves the remaining (clamped) times.
        while j < len(wanted):
            if prev_frame is None:
                raise VideoDecodeError(path, f"no decodable frame at or after t={wanted[j]:.3f}s")
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev_frame, size, info.rotation)
            out[j] = prev_rgb
            j += 1
    return np.stack(out)  # type: ignore[arg-type]


def _to_rgb(frame: "av.VideoFrame", size: tuple[int, int] | None, rotation: int = 0) -> np.ndarray:
    """RGB at the displayed ``size`` (h, w), turned upright by ``rotation`` (counter-clockwise
    degrees, :func:`display_rotation`)."""
    turns = rotation // 90 % 4
    if size is None:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        h, w = size if turns % 2 == 0 else size[::-1]  # resized before the turn, in stored axes
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BILINEAR")
    # np.rot90 turns rows towards columns: counter-clockwise as an image is displayed.
    return np.rot90(rgb, turns) if turns else rgb


def read_video(path: str | os.PathLike, *, short_side: int | None = None) -> np.ndarray:
    """Decode every frame of a video: uint8 (T, H, W, 3). For inspection and small files."""
    path = os.fspath(path)
    info = probe_video(path)
    size = short_side_size(info.height, info.width, short_side) if short_side else None
    try:
        with av.open(path) as container:
            frames = [_to_rgb(f, size, info.rotation) for f in container.decode(video=0)]
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(path, _av_error_reason(exc)) from None
    if not frames:
        raise VideoDecodeError(path, "no decodable frames")
    return np.stack(frames)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 20,
    keyframe_interval_s: float = 2.0,
    rotation: int = 0,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path`` (container from its suffix).

    ``rotation`` (counter-clockwise degrees, as :attr:`VideoInfo.rotation` reads it back) is
    written as the container's display matrix, as phones do; ``frames`` are stored as given.

    H.264 in yuv420p needs even sizes; odd-sized frames are encoded in yuv444p (lossless
    chroma, still decodable by FFmpeg and PyAV) rather than silently cropped or padded.
    The file appears under its final name only when complete.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("cannot write a video with no frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, height, width, _ = frames.shape
    even = height % 2 == 0 and width % 2 == 0
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path, suffix=path.suffix) as tmp:  # the muxer picks the container by extension
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if even else "yuv444p"
            stream.codec_context.gop_size = max(1, int(round(keyframe_interval_s * fps)))
            if rotation:
                stream.set_display_rotation(rotation)
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            for image in frames:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
