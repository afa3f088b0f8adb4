"""Error types shared by the dataset loaders in ``dynvid.data``.

Every loader reports bad input with one of these, and the message always names
where the problem is (a path, and where it applies a line number and a key), so a
failing job points at the byte to fix rather than at a stack frame.

- :class:`DatasetError` — the dataset cannot be used as given: a missing file or
  directory, too many unreadable files, an inconsistent layout.
- :class:`BadFileLog` — the skip-and-report policy for unreadable files shared by every
  loader: each bad file is logged once with its path, and the loader fails only when the
  bad fraction passes ``max_bad_fraction``.
- :class:`AnnotationError` — one annotation/list/label file has a bad entry; carries
  ``path``, ``line`` (1-based, optional) and ``key`` (optional, e.g.
  ``"annotations[12].category_id"``) as attributes for programmatic use.

Both subclass :class:`ValueError`, so callers that validate configuration with
``except ValueError`` keep working. Both pickle (Ray and DataLoader workers ship
exceptions across processes).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Callable, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

__all__ = ["DatasetError", "AnnotationError", "UnreadableFile", "BadFileLog", "check_max_bad_fraction"]


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the offending path."""


class AnnotationError(DatasetError):
    """A bad entry in an annotation, list or label file.

    Args:
        path: the file that holds the bad entry.
        message: what is wrong, in words.
        line: 1-based line number in ``path`` where known.
        key: the offending key or entry, e.g. ``"annotations[12].category_id"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        self.detail = message
        where = self.path if line is None else f"{self.path}:{line}"
        text = f"{where}: {message}" if key is None else f"{where}: {key}: {message}"
        super().__init__(text)

    def __reduce__(self):
        # The default pickles ``self.args`` (the formatted text) and would call
        # ``AnnotationError(text)``, losing the fields; rebuild from them instead.
        return (type(self), (self.path, self.detail, self.line, self.key))


class UnreadableFile(Exception):
    """A data file (video, image, label) could not be decoded; caught by the datasets,
    which skip it and record it in their :class:`BadFileLog`."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def check_max_bad_fraction(value: float) -> float:
    """``value`` as a float when it is a fraction in [0, 1], else :class:`DatasetError`."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 <= fraction <= 1.0:  # also rejects NaN
        raise DatasetError(
            f"max_bad_fraction (data.max_bad_fraction) must be a fraction in [0, 1], got {value!r}"
        )
    return fraction


class BadFileLog:
    """Records unreadable files and raises once too many of the dataset's files are bad.

    Args:
        total: number of files the dataset reads (the denominator of the fraction).
        max_fraction: largest tolerated ``len(bad) / total``.
        what: a name for the dataset used in messages (e.g. the annotation path).
    """

    def __init__(self, total: int, max_fraction: float, what: str) -> None:
        check_max_bad_fraction(max_fraction)
        self.total = max(int(total), 1)
        self.max_fraction = float(max_fraction)
        self.what = what
        self.files: dict[str, str] = {}  # path -> reason, insertion-ordered

    def __contains__(self, path: str) -> bool:
        return path in self.files

    def add(self, files: dict[str, str]) -> None:
        """Record files found bad up front (e.g. by probing at load), without a warning
        each and without checking the fraction: the caller reports them together."""
        for path, reason in files.items():
            self.files.setdefault(path, reason)

    def record(self, path: str, reason: str) -> None:
        if path not in self.files:
            self.files[path] = reason
            logger.warning("%s: skipping unreadable file %s (%s)", self.what, path, reason)
        fraction = len(self.files) / self.total
        if fraction > self.max_fraction:
            shown = "; ".join(f"{p} ({r})" for p, r in list(self.files.items())[:5])
            more = f" and {len(self.files) - 5} more" if len(self.files) > 5 else ""
            raise DatasetError(
                f"{self.what}: {len(self.files)} of {self.total} files unreadable "
                f"({fraction:.1%} > max_bad_fraction {self.max_fraction:.1%}): {shown}{more}"
            )

    def first_readable(self, index: int, count: int, load: Callable[[int], T], what: str) -> T:
        """``load(index)``; while it raises :class:`UnreadableFile`, record the file and
        fall through to the next item (wrapping around), so a DataLoader never sees the
        failure. Raises :class:`DatasetError` naming ``what`` when no item is readable."""
        for attempt in range(count):
            try:
                return load((index + attempt) % count)
            except UnreadableFile as exc:
                self.record(exc.path, exc.reason)
        raise DatasetError(f"{what}: no readable item left ({count} tried)")
