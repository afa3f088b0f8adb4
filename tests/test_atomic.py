"""dynvid.atomic: a file appears under its final name complete or not at all."""

from __future__ import annotations

import pytest
import torch

from dynvid.atomic import atomic_path, atomic_torch_save, atomic_write, atomic_write_bytes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "state.bin"
    atomic_write_bytes(target, b"old")  # creates the folder
    assert target.read_bytes() == b"old"

    def half(f):
        f.write(b"new but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.bin"]


def test_torch_files_round_trip_and_replace(tmp_path):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.arange(3)}, target)
    atomic_torch_save({"w": torch.arange(5)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_path_keeps_the_suffix_and_moves_only_on_success(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target, suffix=".mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
        assert not target.exists()
        tmp.write_bytes(b"video")
    assert target.read_bytes() == b"video"
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".mp4") as tmp:
            tmp.write_bytes(b"broken")
            raise RuntimeError("encoder failed")
    assert target.read_bytes() == b"video"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_files_get_the_mode_open_would_give_them(tmp_path):
    """mkstemp makes 0600 files; an atomic write must not make a shared file owner-only."""
    import os
    import stat

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    with atomic_path(tmp_path / "clip.mp4", suffix=".mp4") as tmp:
        tmp.write_bytes(b"v")
    want = stat.S_IMODE(os.stat(plain).st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode) == want
    assert stat.S_IMODE(os.stat(tmp_path / "clip.mp4").st_mode) == want
