"""Lazy re-exports for a package's ``__init__`` (PEP 562's module ``__getattr__``).

A method's package re-exports its Task and its main pieces (``from dynvid.methods.vared
import VaredTask, make_dynamic``) without importing them when the package is imported: the
central config imports each method's ``config`` module, and importing
``dynvid.methods.vared.config`` runs ``dynvid/methods/vared/__init__.py`` first. With eager
re-exports that would import the Task, which imports the central config back, half-built.
Lazily, importing a leaf module (a config, a layer) costs that module alone.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` (a
    submodule's name relative to the package) on first access of ``name``.

    Use as ``__getattr__, __dir__ = lazy_exports(__name__, {"VaredTask": "task"})``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
