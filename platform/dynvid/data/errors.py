"""Error types shared by the dataset loaders in ``dynvid.data``.

Every loader reports bad input with one of these, and the message always names
where the problem is (a path, and where it applies a line number and a key), so a
failing job points at the byte to fix rather than at a stack frame.

- :class:`DatasetError` — the dataset cannot be used as given: a missing file or
  directory, too many unreadable files, an inconsistent layout.
- :class:`AnnotationError` — one annotation/list/label file has a bad entry; carries
  ``path``, ``line`` (1-based, optional) and ``key`` (optional, e.g.
  ``"annotations[12].category_id"``) as attributes for programmatic use.

Both subclass :class:`ValueError`, so callers that validate configuration with
``except ValueError`` keep working. Both pickle (Ray and DataLoader workers ship
exceptions across processes).
"""

from __future__ import annotations

import os

__all__ = ["DatasetError", "AnnotationError"]


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
