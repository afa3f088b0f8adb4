"""Fixtures shared by the data tests."""

import os

import pytest

from dynvid.data import video_io


@pytest.fixture
def probe_calls(tmp_path, monkeypatch):
    """The paths ``video_io.probe_video`` is called with (``probe_videos`` and the datasets call it
    through the module), with a probe cache of this test's own in ``tmp_path/cache``."""
    monkeypatch.setenv("DYNVID_CACHE_DIR", str(tmp_path / "cache"))
    calls, real = [], video_io.probe_video

    def counting(path):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(video_io, "probe_video", counting)
    return calls
