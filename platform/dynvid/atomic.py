"""Atomic files: a file appears under its final name only when it is complete.

Every writer of a file that another process may read while it is written (checkpoints,
exported policies, cache manifests, the synthetic dataset's frames and videos) writes a
temporary file in the same folder and moves it into place with ``os.replace``, which is
atomic on POSIX within one file system. A failed write removes its temporary file and
leaves an earlier file under the final name untouched.

A leaf module: it imports nothing of dynvid, so the data layer and the engine share it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_torch_save"]


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the process's umask (0o644 under the usual
    0o022). ``mkstemp`` creates its files 0o600, and ``os.replace`` would keep that: files
    other users read (shared datasets, checkpoints on NFS, an artifact server) must not
    change their permissions by being written atomically."""
    umask = os.umask(0o022)  # read it: umask has no getter
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (for writers that need a name, e.g. a video
    muxer); when the block ends without an error it is moved onto ``path``, otherwise removed.
    ``suffix`` lets a writer that picks its format by extension keep it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, _MODE)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], fsync: bool = True) -> Path:
    """Call ``write(f)`` on a binary file that becomes ``path`` once ``write`` returns (flushed
    and, with ``fsync``, on disk first, so a crash cannot leave a complete name over empty data)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch  # the data layer's writers need no torch

    return atomic_write(path, lambda f: torch.save(obj, f))
