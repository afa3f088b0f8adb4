"""Video encode/decode: frame accuracy, seeking, frame-rate resampling, resize, bad files."""

import json
import logging
import os
import pickle

import av
import numpy as np
import pytest

from dynvid.data import video_io
from dynvid.data.video_io import (
    ProbeCache,
    VideoDecodeError,
    display_rotation,
    probe_video,
    probe_videos,
    read_clip,
    read_video,
    short_side_size,
    write_video,
)


def _ramp_video(path, num_frames=60, h=48, w=64, fps=25.0):
    """Frame t is flat gray 4*t (luma survives H.264 exactly enough): decoded frames identify themselves."""
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    frames[...] = (4 * np.arange(num_frames, dtype=np.int64) % 256).astype(np.uint8)[:, None, None, None]
    write_video(path, frames, fps)
    return frames


def _frame_id(clip):
    return np.round(clip[:, clip.shape[1] // 2, clip.shape[2] // 2].astype(float).mean(-1) / 4).astype(int)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "ramp.mp4"
    _ramp_video(path)
    return path


def test_probe(ramp):
    info = probe_video(ramp)
    assert (info.num_frames, info.fps, info.width, info.height) == (60, 25.0, 64, 48)
    assert info.duration == pytest.approx(2.4, abs=0.05)


def test_read_clip_frames_and_seek(ramp):
    # Starts past the first key frame interval force a real seek.
    for indices in ([0, 4, 8, 12], [51, 53, 55, 57], [30, 31, 32, 33]):
        assert _frame_id(read_clip(ramp, indices)).tolist() == indices


def test_read_clip_clamps_past_end(ramp):
    assert _frame_id(read_clip(ramp, [57, 59, 61, 80])).tolist() == [57, 59, 59, 59]


def test_frame_rate_resampling(ramp):
    # At 12.5 fps target index k is source frame 2k; at 50 fps it is round(k / 2).
    assert _frame_id(read_clip(ramp, [0, 1, 2, 10], target_fps=12.5)).tolist() == [0, 2, 4, 20]
    ids = _frame_id(read_clip(ramp, [10, 12, 14, 20], target_fps=50))
    assert ids.tolist() == [5, 6, 7, 10]


def test_resize_at_decode(ramp):
    clip = read_clip(ramp, [0, 1], short_side=24)
    assert clip.shape == (2, 24, 32, 3)
    assert short_side_size(48, 64, 24) == (24, 32)
    assert short_side_size(640, 360, 180) == (320, 180)


def test_read_video_and_odd_sizes(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 31, 45, 3), dtype=np.uint8)
    write_video(tmp_path / "odd.mp4", frames, 10)
    out = read_video(tmp_path / "odd.mp4")
    assert out.shape == frames.shape


def test_write_is_atomic_and_validates(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 8, 8, 3), np.float32), 10)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        probe_video(bad)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        read_clip(tmp_path / "nope.mp4", [0])


def test_truncated_file_fails_cleanly(tmp_path, ramp):
    data = ramp.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        read_clip(cut, [0, 20, 40])


def test_probe_videos_keeps_order_and_returns_errors(tmp_path, ramp):
    seen = []
    out = probe_videos([ramp, tmp_path / "gone.mp4", ramp], threads=2, progress=lambda d, t: seen.append((d, t)))
    assert [type(x).__name__ for x in out] == ["VideoInfo", "VideoDecodeError", "VideoInfo"]
    assert "gone.mp4" in str(out[1]) and out[2].num_frames == 60
    assert seen == [(1, 3), (2, 3), (3, 3)]


# ---- display rotation (phone videos) ------------------------------------------------------------

def _marked_frames(n=6, h=48, w=64):
    """Stored frames: black with a white block in the top-left corner."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:, : h // 4, : w // 4] = 255
    return frames


def _bright_corner(frame) -> str:
    h, w = frame.shape[:2]
    corners = {"top-left": frame[: h // 8, : w // 8], "top-right": frame[: h // 8, -(w // 8):],
               "bottom-left": frame[-(h // 8):, : w // 8], "bottom-right": frame[-(h // 8):, -(w // 8):]}
    return max(corners, key=lambda k: corners[k].mean())


# Displayed the way ffmpeg/ffplay show them: the display-matrix angle is counter-clockwise,
# so +90 turns the stored top-left corner to the bottom-left, -90 (an iPhone portrait video,
# `rotate=90` tag) turns it to the top-right.
@pytest.mark.parametrize("ccw, corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right"), (0, "top-left")])
def test_display_rotation_is_applied(tmp_path, ccw, corner):
    path = tmp_path / f"rot{ccw}.mp4"
    write_video(path, _marked_frames(), 12, rotation=ccw)
    with av.open(str(path)) as c:  # the file carries what PyAV documents (counter-clockwise degrees)
        assert next(c.decode(video=0)).rotation % 360 == ccw % 360
    info = probe_video(path)
    portrait = ccw in (90, -90)
    assert (info.height, info.width) == ((64, 48) if portrait else (48, 64))
    assert info.rotation == ccw % 360
    clip = read_clip(path, [0, 3])
    assert clip.shape == (2, info.height, info.width, 3)
    assert _bright_corner(clip[1]) == corner
    small = read_clip(path, [0, 3], short_side=24)  # resized in stored axes, then turned
    assert small.shape == ((2, 32, 24, 3) if portrait else (2, 24, 32, 3))
    assert _bright_corner(small[0]) == corner
    full = read_video(path)
    assert full.shape[1:3] == clip.shape[1:3] and _bright_corner(full[-1]) == corner


def test_rotation_conventions():
    # display matrix: counter-clockwise; legacy `rotate` tag: clockwise (ffmpeg: rotate=90 -> transpose=clock)
    assert display_rotation(-90.0) == 270 and display_rotation(90.0) == 90
    assert display_rotation(-180.0) == 180 and display_rotation(None) == 0 and display_rotation(89.6) == 90
    assert display_rotation(0, "90") == 270 and display_rotation(None, "270") == 90
    assert display_rotation(90.0, "90") == 90  # the matrix wins
    assert display_rotation(0, "sideways") == 0


# ---- probe cache ---------------------------------------------------------------------------------

# probe_calls: tests/data/conftest.py

@pytest.fixture
def mixed_videos(tmp_path):
    """A plain video, a rotated one and a corrupt one."""
    plain, rotated, bad = tmp_path / "plain.mp4", tmp_path / "rot.mp4", tmp_path / "bad.mp4"
    _ramp_video(plain, num_frames=12)
    write_video(rotated, _marked_frames(), 12, rotation=-90)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    return [plain, rotated, bad]


def _as_compared(results):
    return [r if isinstance(r, video_io.VideoInfo) else (type(r), r.path, r.reason) for r in results]


def test_probe_cache_answers_for_unchanged_files(tmp_path, mixed_videos, probe_calls):
    cache = ProbeCache("my-list", folder=tmp_path / "cache")
    first = probe_videos(mixed_videos, threads=2, cache=cache)
    assert len(probe_calls) == 3 and first[1].rotation == 270 and isinstance(first[2], VideoDecodeError)
    assert list((tmp_path / "cache").iterdir()) == [cache.path]  # no temporary file left
    probe_calls.clear()
    again = probe_videos(mixed_videos, threads=2, cache=ProbeCache("my-list", folder=tmp_path / "cache"))
    assert probe_calls == []
    assert _as_compared(again) == _as_compared(first)  # rotation and the failure reason included
    assert _as_compared(again) == _as_compared(probe_videos(mixed_videos))  # and as without a cache


def test_probe_cache_reprobes_changed_and_new_files(tmp_path, mixed_videos, probe_calls):
    cache = ProbeCache("my-list", folder=tmp_path / "cache")
    probe_videos(mixed_videos[:2], cache=cache)
    st = mixed_videos[0].stat()
    os.utime(mixed_videos[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    probe_calls.clear()
    probe_videos(mixed_videos, cache=cache)
    assert sorted(probe_calls) == sorted(map(str, [mixed_videos[0], mixed_videos[2]]))
    entries = cache.load()
    assert sorted(entries) == sorted(os.path.abspath(p) for p in mixed_videos)
    probe_calls.clear()
    probe_videos(mixed_videos[1:], cache=cache)  # a video left the list: dropped from the file
    assert probe_calls == [] and len(cache.load()) == 2


def test_transient_failures_are_not_cached(tmp_path, mixed_videos, monkeypatch):
    def failing(path):
        raise VideoDecodeError(path, "OSError: [Errno 5] Input/output error", transient=True)

    monkeypatch.setattr(video_io, "probe_video", failing)
    cache = ProbeCache("my-list", folder=tmp_path / "cache")
    assert all(isinstance(r, VideoDecodeError) for r in probe_videos(mixed_videos[:1], cache=cache))
    assert cache.load() == {}
    err = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "EIO", transient=True)))
    assert (err.path, err.reason, err.transient) == ("a.mp4", "EIO", True)


def test_corrupt_or_foreign_cache_files_are_ignored(tmp_path, mixed_videos, probe_calls, caplog):
    cache = ProbeCache("my-list", folder=tmp_path / "cache")
    first = probe_videos(mixed_videos, cache=cache)
    data = json.loads(cache.path.read_text())
    for content, warns in [
        (json.dumps({**data, "av": "0.1"}), False),  # another PyAV: stale, not an error
        ("{not json", True),
        (b"\xff\xfe\x00", True),
        ("[]", True),
        (json.dumps({**data, "videos": {"x": [1, 2]}}), True),
    ]:
        if isinstance(content, bytes):
            cache.path.write_bytes(content)
        else:
            cache.path.write_text(content)
        probe_calls.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dynvid.data.video_io"):
            results = probe_videos(mixed_videos, cache=cache)
        assert len(probe_calls) == 3 and _as_compared(results) == _as_compared(first)
        assert (str(cache.path) in caplog.text) == warns, content
        assert len(cache.load()) == 3  # rewritten


def test_unwritable_cache_folder_warns_once_and_probes(tmp_path, mixed_videos, probe_calls, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="dynvid.data.video_io"):
        for name in ("list-a", "list-b"):
            results = probe_videos(mixed_videos, cache=ProbeCache(name, folder=blocker / "probe"))
            assert _as_compared(results) == _as_compared(probe_videos(mixed_videos))
    assert caplog.text.count("cannot write the probe cache") == 1
    assert len(probe_calls) == 4 * 3
