"""Counting host–device synchronisations on any machine, CUDA or not.

On a GPU, PyTorch queues kernels and returns at once; the host waits for the device only
when it needs a value or a data-dependent shape back. A loop that does so for every frame
or box stalls the GPU once per iteration, and a detector that is fast on a CPU can crawl on a
GPU. Those waits cannot be timed on a CPU, but the calls that cause them can be counted:
:class:`SyncCounter` is a ``torch.overrides.TorchFunctionMode`` that counts, per kind,

- reads of a value to the host: ``Tensor.item``, ``tolist``, ``cpu``, ``numpy``,
  ``__bool__`` (``if tensor:``, ``and``/``or``/``not``), ``__float__``, ``__int__``,
  ``__index__`` (a tensor used as a Python index), ``__format__``, ``torch.equal``,
  ``torch.allclose``, ``torch.is_nonzero``;
- ops whose output *shape* depends on the data, which read a count back: ``nonzero`` /
  ``argwhere`` / one-argument ``torch.where``, ``unique``, ``masked_select``, ``bincount``,
  ``repeat_interleave`` with tensor repeats, and indexing (``x[mask]``, ``x[mask] = v``,
  ``index_put_``) with a boolean tensor;
- ``transfer``: ``Tensor.to`` / ``cuda`` with a device argument — a copy from pageable host
  memory to the GPU waits for the stream too (only the calls are counted: on a CPU they are
  no-ops, so this is what *would* cross the bus).

Each count approximates one CUDA sync: the set is the one the CUDA backend blocks on, but
this counts calls whatever the tensor's device, so host-side bookkeeping done on CPU
tensors counts as well — an upper bound, not a trace. Ops reached from inside a counted
call (the mode is off while it runs) are not counted twice. Use it to compare code paths
and to pin a budget in a test::

    with SyncCounter() as syncs:
        model(x)
    assert syncs.total <= 12, syncs.counts
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SyncCounter"]

_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__",
          "equal", "allclose", "is_nonzero"}
_SHAPE_FROM_DATA = {"nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount"}
_INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put"}


def _has_bool_tensor(index) -> bool:
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    if isinstance(index, (tuple, list)):
        return any(_has_bool_tensor(i) for i in index)
    return False


def _names_device(args: tuple, kwargs: dict) -> bool:
    if "device" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor) and a is not args[0])
               for a in args[1:])


class SyncCounter(TorchFunctionMode):
    """``with SyncCounter() as c:`` — ``c.counts`` per kind (the op's name), ``c.total`` all kinds
    that block on CUDA (``transfer`` included), ``c.reads`` the value reads only."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = self._kind(func, args, kwargs)
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **kwargs)

    @staticmethod
    def _kind(func, args: tuple, kwargs: dict) -> str | None:
        name = getattr(func, "__name__", "")
        if name in _READS or name in _SHAPE_FROM_DATA:
            return name
        if name in _INDEXING and len(args) > 1 and _has_bool_tensor(args[1]):
            return "mask_index"
        if name == "where" and len(args) + len(kwargs) == 1:
            return "nonzero"
        if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor) \
                and "output_size" not in kwargs:
            return "repeat_interleave"
        if name == "cuda" or (name == "to" and args and _names_device(args, kwargs)):
            return "transfer"
        return None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def reads(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "transfer")

    def reset(self) -> None:
        self.counts.clear()
