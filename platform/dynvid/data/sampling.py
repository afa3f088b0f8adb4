"""Temporal clip samplers: which frames of a video make a clip.

A clip is ``clip_len`` frames taken every ``stride`` frames, so it spans
``span = (clip_len - 1) * stride + 1`` frames. Indices are in the dataset's target frame
rate (see :func:`dynvid.data.video_io.read_clip`).

- Training: one clip at a uniformly random start (SlowFast / PyTorchVideo "random clip").
- Testing: ``K`` clips whose starts are spread uniformly over the video — the temporal
  half of the K-LeftCenterRight protocol of VA-RED² (thesis Sec. 4.3): clip ``k`` is
  centred at ``(k + 0.5) / K`` of the video, as in the SlowFast/PySlowFast test sampler.

A video shorter than one span gives the clip starting at 0; indices past the end are left
for the reader to clamp (it repeats the last frame), so a clip always has ``clip_len``
frames.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_span", "random_clip_indices", "uniform_clip_indices", "resampled_length"]


def clip_span(clip_len: int, stride: int) -> int:
    """Number of frames covered by a clip of ``clip_len`` frames every ``stride`` frames."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    return (clip_len - 1) * stride + 1


def resampled_length(num_frames: int, fps: float, target_fps: float | None) -> int:
    """Frame count of a video of ``num_frames`` at ``fps`` when resampled to ``target_fps``."""
    if target_fps is None or target_fps == fps:
        return num_frames
    return max(1, int(np.floor(num_frames * target_fps / fps)))


def random_clip_indices(
    num_frames: int, clip_len: int, stride: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of one clip at a uniformly random start."""
    span = clip_span(clip_len, stride)
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames > span else 0
    return start + stride * np.arange(clip_len)


def uniform_clip_indices(num_frames: int, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """(num_clips, clip_len) indices of ``num_clips`` clips spread uniformly over the video."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    span = clip_span(clip_len, stride)
    room = max(0, num_frames - span)
    if num_clips == 1:
        starts = np.array([room // 2])
    else:
        # Centre of clip k at (k + 0.5) / K of the video, clamped to stay inside it.
        centres = (np.arange(num_clips) + 0.5) * num_frames / num_clips
        starts = np.clip(np.round(centres - span / 2), 0, room).astype(np.int64)
    return starts[:, None] + stride * np.arange(clip_len)[None, :]
