"""The cost meter of dynvid: MACs and BOPs of the path that actually ran, per sample.

Units. The video-recognition literature (R(2+1)D, X3D, VA-RED², ANT, LiteEval, ...)
reports "FLOPs" meaning multiply–accumulates: 1 MAC = 1 FLOP, so GFLOPs = GMACs. This
meter counts MACs, and reports them as FLOPs under that convention. BOPs ("bit
operations", used for quantized layers in the ResQ paper, Sec. 4) are
MACs × weight bits × activation bits; a full-precision layer counts 32 × 32.

What is counted. Weight-carrying compute only:

- ``nn.Conv1d/2d/3d``: ``prod(output_size) * out_channels * (in_channels / groups)
  * prod(kernel_size)`` per sample, read from the actual output shape, so stride,
  padding, dilation and groups are all accounted for. The bias add is not counted.
- ``nn.Linear``: ``in_features * out_features`` per row, times every leading dim
  after the batch dim (a ``(B, T, F)`` input costs ``T`` rows per sample).
- ``nn.LSTM`` / ``nn.GRU``: every timestep of every layer and direction;
  ``nn.LSTMCell`` / ``nn.GRUCell``: one step. A step costs the gate matmuls only,
  see :func:`lstm_cell_macs` and :func:`gru_cell_macs`.

Not counted (zero): BatchNorm (it folds into the preceding conv at inference), other
norms, activations, pooling, dropout, and other parameter-free elementwise layers.
Math done with functional calls (``F.conv2d``, ``torch.matmul``) inside a module's
``forward`` is invisible to hooks; such modules report their own cost (below). A
module that owns parameters but has no counting rule is listed in
``CostMeter.uncounted`` and triggers a warning when the meter closes.

Per-sample attribution. The meter's batch ``B`` is the size of dim 0 of the first
tensor passed to the metered model (dim 1 for a time-major RNN; override with
``CostMeter(model, batch_size=B)``). A hooked module whose batch is ``N`` rows:
``N == B`` (row i is sample i), or ``N = k * B`` (e.g. a per-frame 2D net on
``(B*T, C, H, W)``; the cost is shared evenly by the samples), otherwise it is an
error: a module that runs only on some samples must report its own cost.

Dynamic-layer protocol (VA-RED², ANT, LiteEval, ResQ). A layer that decides per
sample what runs sets the class attribute ``counts_own_cost = True``. The hooks then
skip it and all its children, and it calls :func:`record_cost` inside its ``forward``
with the MACs it actually executed::

    class SkipConv(nn.Module):
        counts_own_cost = True

        def forward(self, x, keep):            # keep: (B,) bool, the decision
            out = x.new_zeros(...)
            out[keep] = self.conv(x[keep])     # real skipping
            per_sample = keep.double() * conv_macs(...)
            record_cost(self, per_sample)      # (B,) tensor, or an int for all samples
            return out

``record_cost`` is a no-op when no meter is active, so the layer costs nothing
outside measurement. Quantized layers pass their ``weight_bits`` / ``act_bits``
(or set those attributes on a hooked module); per-pixel bit-widths are reported by
one ``record_cost`` call per bit-width group.

Dataset level: :class:`CostAccumulator` turns per-sample MACs into the
average/min/max GFLOPs reported in the papers' tables; :func:`model_cost` is the
one-line static cost of a network.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

__all__ = [
    "CostAccumulator",
    "CostMeter",
    "bops",
    "conv_macs",
    "gru_cell_macs",
    "linear_macs",
    "lstm_cell_macs",
    "model_cost",
    "record_cost",
    "metering",
]

FULL_PRECISION_BITS = 32

# ---------------------------------------------------------------------------------
# Pure cost formulas
# ---------------------------------------------------------------------------------


def _as_sizes(value: int | Sequence[int], ndim: int | None, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * (ndim or 1)
    sizes = tuple(int(v) for v in value)
    if ndim is not None and len(sizes) != ndim:
        raise ValueError(f"{what} has {len(sizes)} dims, expected {ndim}: {tuple(value)}")
    if any(s < 0 for s in sizes):
        raise ValueError(f"{what} must be non-negative, got {sizes}")
    return sizes


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    output_size: int | Sequence[int],
    groups: int = 1,
) -> int:
    """MACs of one sample through a 1D/2D/3D convolution (bias not counted).

    ``prod(output_size) * out_channels * (in_channels / groups) * prod(kernel_size)``:
    every output element is a dot product over ``in_channels / groups`` channels and
    the kernel window. Stride, padding and dilation act only through ``output_size``.

    Args:
        in_channels: input channels of the conv.
        out_channels: output channels of the conv.
        kernel_size: kernel extent per spatial dim; an int is repeated over the dims
            of ``output_size`` (as ``nn.Conv*d`` does).
        output_size: spatial size of the output, e.g. ``(T, H, W)`` for a 3D conv.
        groups: conv groups; ``in_channels`` must be divisible by it.
    """
    out = _as_sizes(output_size, None, "output_size")
    kernel = _as_sizes(kernel_size, len(out), "kernel_size")
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )
    return math.prod(out) * out_channels * (in_channels // groups) * math.prod(kernel)


def linear_macs(in_features: int, out_features: int, batch_elems: int = 1) -> int:
    """MACs of a fully connected layer applied to ``batch_elems`` rows (bias not counted)."""
    return in_features * out_features * batch_elems


def lstm_cell_macs(input_size: int, hidden_size: int, proj_size: int = 0) -> int:
    """MACs of one LSTM step: 4 gates × (input + hidden) × hidden.

    Each gate is ``W_i x + W_h h`` with ``W_i: hidden×input`` and ``W_h: hidden×h``.
    The elementwise gate math (sigmoids, tanh, the cell update) is ignored, as for
    every other activation. With ``proj_size > 0`` (``nn.LSTM(proj_size=...)``) the
    recurrent state has ``proj_size`` features and a ``hidden × proj`` projection is
    added.
    """
    state = proj_size if proj_size > 0 else hidden_size
    projection = hidden_size * proj_size if proj_size > 0 else 0
    return 4 * (input_size + state) * hidden_size + projection


def gru_cell_macs(input_size: int, hidden_size: int) -> int:
    """MACs of one GRU step: 3 gates (reset, update, new) × (input + hidden) × hidden.

    The reset gate's elementwise product with ``W_hn h`` and the interpolation of the
    state are ignored (elementwise).
    """
    return 3 * (input_size + hidden_size) * hidden_size


def bops(macs: Any, weight_bits: Any = FULL_PRECISION_BITS, act_bits: Any = FULL_PRECISION_BITS) -> Any:
    """Bit operations (ResQ): ``macs × weight_bits × act_bits``. Works on numbers and tensors."""
    return macs * weight_bits * act_bits


# ---------------------------------------------------------------------------------
# The hook-based meter
# ---------------------------------------------------------------------------------

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RNNS = (nn.LSTM, nn.GRU)
_CELLS = (nn.LSTMCell, nn.GRUCell)
_COUNTED = _CONVS + (nn.Linear,) + _RNNS + _CELLS
# Modules that own parameters and are deliberately counted at zero (see module docs).
_ZERO_COST = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
        nn.PReLU,
        nn.Embedding,
        nn.EmbeddingBag,
    )
    if t is not None
)

_STATE = threading.local()


def _active_meters() -> list[CostMeter]:
    stack = getattr(_STATE, "meters", None)
    if stack is None:
        stack = _STATE.meters = []
    return stack


def metering() -> bool:
    """Whether a :class:`CostMeter` is active in this thread (dynamic layers skip their cost
    bookkeeping otherwise)."""
    return bool(getattr(_STATE, "meters", None))


def record_cost(
    module: nn.Module,
    macs: int | float | torch.Tensor,
    *,
    weight_bits: int | float | torch.Tensor = FULL_PRECISION_BITS,
    act_bits: int | float | torch.Tensor = FULL_PRECISION_BITS,
) -> None:
    """Report MACs that ``module`` executed in this forward; a no-op with no active meter.

    Args:
        module: the reporting module (names the entry in ``CostMeter.by_module``).
        macs: an int/float (the same for every sample) or a ``(B,)`` tensor of
            per-sample MACs, ``B`` being the metered batch.
        weight_bits: weight bit-width for BOPs; a number or a ``(B,)`` tensor.
        act_bits: activation bit-width for BOPs; a number or a ``(B,)`` tensor.

    The cost goes to every active meter whose model contains ``module``; a module
    outside all metered models is recorded by the innermost meter.
    """
    meters = _active_meters()
    if not meters:
        return
    owners = [m for m in meters if id(module) in m._names]
    for meter in owners or meters[-1:]:
        meter._record(module, macs, weight_bits, act_bits)


def _first_tensor(obj: Any) -> torch.Tensor | PackedSequence | None:
    """The first tensor in a nest of tuples/lists/dicts (the forward's inputs)."""
    if isinstance(obj, (torch.Tensor, PackedSequence)):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _to_float64(value: Any) -> torch.Tensor:
    """A float64 tensor where ``value`` is (a number: on the host). A per-sample cost computed
    on a GPU stays there until the meter's totals are read: copying it to the host here would
    synchronise once per recording layer and forward."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def _device_of(*tensors: torch.Tensor) -> torch.device:
    """The first device other than the CPU among ``tensors`` (else the CPU)."""
    return next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))


def _on_host(value: torch.Tensor) -> torch.Tensor:
    return value.clone() if value.device.type == "cpu" else value.cpu()


class CostMeter:
    """Counts the MACs and BOPs of every forward of ``model`` while active, per sample.

    Usage::

        with CostMeter(model) as meter:
            model(x)
        meter.per_sample_macs      # (B,) float64
        meter.by_module["layer1.0.conv1.0.0"]

    Totals accumulate over all forwards while the meter is active (e.g. the views of
    a multi-view evaluation add up per sample) and survive leaving the context, until
    :meth:`reset`. See the module docstring for what is counted and for the
    ``counts_own_cost`` / :func:`record_cost` protocol of dynamic layers.

    Args:
        model: the network to meter; hooks are added on enter and removed on exit.
        batch_size: the number of samples ``B``; inferred from the first forward when
            ``None``.
    """

    def __init__(self, model: nn.Module, batch_size: int | None = None) -> None:
        self.model = model
        self._fixed_batch = batch_size
        self._names: dict[int, str] = {}
        self._handles: list[Any] = []
        self.reset()

    # -- results ---------------------------------------------------------------------

    @property
    def batch_size(self) -> int | None:
        """``B``: the number of samples costs are attributed to (None before any forward)."""
        return self._batch

    @property
    def per_sample_macs(self) -> torch.Tensor:
        """``(B,)`` float64 MACs of each sample (empty before any forward)."""
        return self._total(self._macs)

    @property
    def per_sample_bops(self) -> torch.Tensor:
        """``(B,)`` float64 BOPs of each sample (32-bit layers count 1024 per MAC)."""
        return self._total(self._bops)

    @property
    def by_module(self) -> dict[str, torch.Tensor]:
        """Module name -> ``(B,)`` MACs, for modules that recorded a cost."""
        return {k: _on_host(v) for k, v in self._macs.items()}

    @property
    def by_module_bops(self) -> dict[str, torch.Tensor]:
        """Module name -> ``(B,)`` BOPs."""
        return {k: _on_host(v) for k, v in self._bops.items()}

    def reset(self) -> None:
        """Forget all counts and the batch size (the meter may stay active)."""
        self._batch = self._fixed_batch
        self._macs: dict[str, torch.Tensor] = {}
        self._bops: dict[str, torch.Tensor] = {}
        self.uncounted: set[str] = set()

    def _total(self, table: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-sample sum over modules, on the host: entries kept on a device (costs that
        dynamic layers computed there) are summed there and read back in one copy per device."""
        total = torch.zeros(self._batch or 0, dtype=torch.float64)
        on_device: dict[torch.device, list[torch.Tensor]] = {}
        for value in table.values():
            if value.device.type == "cpu":
                total += value
            else:
                on_device.setdefault(value.device, []).append(value)
        for values in on_device.values():
            total += torch.stack(values).sum(0).cpu()
        return total

    # -- context management ----------------------------------------------------------

    def __enter__(self) -> CostMeter:
        if self._handles:
            raise RuntimeError("this CostMeter is already active; nested use needs a second meter")
        self._names = {
            id(m): name or type(m).__name__ for name, m in self.model.named_modules()
        }
        self._handles.append(self.model.register_forward_pre_hook(self._on_root_call, with_kwargs=True))
        seen: set[int] = set()
        self._install(self.model, seen)
        _active_meters().append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        stack = _active_meters()
        stack[:] = [m for m in stack if m is not self]
        if self.uncounted:
            warnings.warn(
                "CostMeter: modules with parameters but no counting rule ran and were "
                f"counted as 0 MACs: {sorted(self.uncounted)}; set counts_own_cost = True "
                "on them and call record_cost()",
                stacklevel=2,
            )

    def _install(self, module: nn.Module, seen: set[int]) -> None:
        if id(module) in seen or getattr(module, "counts_own_cost", False):
            return
        seen.add(id(module))
        if isinstance(module, _COUNTED):
            self._handles.append(module.register_forward_hook(self._on_counted))
            return  # their children (none in torch) are part of the counted op
        owns_params = any(True for _ in module.parameters(recurse=False))
        if owns_params and not isinstance(module, _ZERO_COST):
            self._handles.append(module.register_forward_hook(self._on_uncounted))
        for child in module.children():
            self._install(child, seen)

    # -- hooks -----------------------------------------------------------------------

    def _on_root_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._fixed_batch is not None:
            return
        first = _first_tensor((args, kwargs))
        if isinstance(first, PackedSequence):
            batch = int(first.batch_sizes[0])
        elif isinstance(first, torch.Tensor) and first.dim() > 0:
            time_major = isinstance(module, nn.RNNBase) and not module.batch_first and first.dim() == 3
            batch = int(first.shape[1 if time_major else 0])
        else:
            return
        if self._batch is None:
            self._batch = batch
        elif batch != self._batch:
            raise ValueError(
                f"CostMeter: a forward on {batch} samples after one on {self._batch}; "
                "call meter.reset() between batches of different sizes"
            )

    def _on_uncounted(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.uncounted.add(self._names.get(id(module), type(module).__name__))

    def _on_counted(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(module, _CONVS):
            ndim = len(module.kernel_size)
            rows = 1 if output.dim() == ndim + 1 else output.shape[0]
            per_row = conv_macs(
                module.in_channels, module.out_channels, module.kernel_size, output.shape[-ndim:], module.groups
            )
            per_row_macs: float | torch.Tensor = float(per_row)
        elif isinstance(module, nn.Linear):
            x = inputs[0]
            rows = 1 if x.dim() == 1 else x.shape[0]
            per_row_macs = float(linear_macs(module.in_features, module.out_features, math.prod(x.shape[1:-1])))
        elif isinstance(module, _RNNS):
            rows, per_row_macs = self._rnn_cost(module, inputs[0])
        else:  # cells
            x = inputs[0]
            rows = 1 if x.dim() == 1 else x.shape[0]
            cell = lstm_cell_macs if isinstance(module, nn.LSTMCell) else gru_cell_macs
            per_row_macs = float(cell(module.input_size, module.hidden_size))
        weight_bits = getattr(module, "weight_bits", FULL_PRECISION_BITS)
        act_bits = getattr(module, "act_bits", FULL_PRECISION_BITS)
        self._add(module, rows, per_row_macs, weight_bits, act_bits)

    @staticmethod
    def _rnn_cost(module: nn.RNNBase, x: torch.Tensor | PackedSequence) -> tuple[int, float | torch.Tensor]:
        directions = 2 if module.bidirectional else 1
        proj = getattr(module, "proj_size", 0)
        layer_out = proj if proj > 0 else module.hidden_size
        step = 0
        for layer in range(module.num_layers):
            in_size = module.input_size if layer == 0 else layer_out * directions
            if isinstance(module, nn.LSTM):
                step += directions * lstm_cell_macs(in_size, module.hidden_size, proj)
            else:
                step += directions * gru_cell_macs(in_size, module.hidden_size)
        if isinstance(x, PackedSequence):
            # Sequences have their own lengths: sample j ran for lengths[j] steps.
            batch_sizes = x.batch_sizes.cpu()
            sorted_pos = torch.arange(int(batch_sizes[0]))
            sorted_lengths = (batch_sizes.unsqueeze(0) > sorted_pos.unsqueeze(1)).sum(1)
            lengths = torch.empty_like(sorted_lengths)
            order = x.sorted_indices.cpu() if x.sorted_indices is not None else sorted_pos
            lengths[order] = sorted_lengths
            return len(lengths), lengths.to(torch.float64) * step
        if x.dim() == 2:  # unbatched (T, F)
            return 1, float(x.shape[0] * step)
        rows, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
        return rows, float(steps * step)

    # -- bookkeeping -----------------------------------------------------------------

    def _resolve_batch(self, rows: int) -> int:
        if self._batch is None:
            self._batch = rows
        return self._batch

    def _add(
        self, module: nn.Module, rows: int, per_row_macs: float | torch.Tensor, weight_bits: Any, act_bits: Any
    ) -> None:
        """Attribute the cost of ``rows`` rows of ``module`` to the ``B`` samples."""
        batch = self._resolve_batch(rows)
        if rows == 0:
            return
        name = self._names.get(id(module), type(module).__name__)
        if rows == batch:
            per_sample = torch.zeros(batch, dtype=torch.float64) + per_row_macs
        elif rows % batch == 0:
            total = per_row_macs.sum() if isinstance(per_row_macs, torch.Tensor) else per_row_macs * rows
            per_sample = torch.full((batch,), float(total) / batch, dtype=torch.float64)
        else:
            raise RuntimeError(
                f"CostMeter: module {name!r} ({type(module).__name__}) ran on {rows} rows but the "
                f"metered batch has {batch} samples, so its cost cannot be attributed per sample. "
                "A module that runs on a subset of the batch must set counts_own_cost = True and "
                "call record_cost(self, per_sample_macs); if the batch size was mis-inferred, "
                "pass CostMeter(model, batch_size=B)."
            )
        self._accumulate(name, per_sample, weight_bits, act_bits)

    def _record(self, module: nn.Module, macs: Any, weight_bits: Any, act_bits: Any) -> None:
        """Entry point of :func:`record_cost`."""
        name = self._names.get(id(module), f"<{type(module).__name__}>")
        macs_t, weight_t, act_t = _to_float64(macs), _to_float64(weight_bits), _to_float64(act_bits)
        # host MACs with per-sample bits from a GPU (or the reverse): the host values go to the
        # device (a small host-to-device copy does not wait for the device's queue)
        device = _device_of(macs_t, weight_t, act_t)
        macs_t, weight_t, act_t = (t if t.dim() == 0 and t.device.type == "cpu" else t.to(device)
                                   for t in (macs_t, weight_t, act_t))
        if macs_t.dim() == 0:
            batch = self._batch
            if batch is None:
                raise RuntimeError(
                    f"record_cost from {name!r}: the batch size is unknown (no forward of the metered "
                    "model started); pass a (B,) tensor or CostMeter(model, batch_size=B)"
                )
            per_sample = macs_t.expand(batch).clone()
        else:
            batch = self._resolve_batch(macs_t.shape[0])
            if macs_t.shape != (batch,):
                raise ValueError(
                    f"record_cost from {name!r}: macs has shape {tuple(macs_t.shape)}, expected "
                    f"({batch},) for the metered batch of {batch} samples, or a number"
                )
            per_sample = macs_t
        self._accumulate(name, per_sample.to(device), weight_t, act_t)  # a number's MACs with a device's bits

    def _accumulate(self, name: str, per_sample: torch.Tensor, weight_bits: Any, act_bits: Any) -> None:
        if name in self._macs and self._macs[name].shape != per_sample.shape:
            raise ValueError(
                f"CostMeter: batch of {per_sample.shape[0]} samples after a batch of "
                f"{self._macs[name].shape[0]}; call meter.reset() between batches"
            )
        bits = bops(per_sample, weight_bits, act_bits)
        if name in self._macs and self._macs[name].device != per_sample.device:  # one module, host and device costs
            device = _device_of(per_sample, self._macs[name])
            per_sample, bits = per_sample.to(device), bits.to(device)
            self._macs[name], self._bops[name] = self._macs[name].to(device), self._bops[name].to(device)
        self._macs[name] = self._macs.get(name, 0) + per_sample
        self._bops[name] = self._bops.get(name, 0) + bits


# ---------------------------------------------------------------------------------
# Dataset-level aggregation
# ---------------------------------------------------------------------------------


class CostAccumulator:
    """Running average / min / max of per-sample cost over a dataset (the papers' tables).

    Keeps only sums and extremes, so it is constant in memory and mergeable across
    data-parallel workers with :meth:`merge`.
    """

    def __init__(self) -> None:
        self.num_samples = 0
        self._macs = _Stats()
        self._bops: _Stats | None = None

    def update(
        self,
        per_sample_macs: torch.Tensor | Iterable[float],
        per_sample_bops: torch.Tensor | Iterable[float] | None = None,
    ) -> None:
        """Add a batch of per-sample MACs (and, optionally, BOPs of the same samples)."""
        macs = torch.as_tensor(per_sample_macs, dtype=torch.float64).detach().cpu().flatten()
        if (per_sample_bops is None) != (self._bops is None) and self.num_samples > 0:
            raise ValueError("CostAccumulator: give per_sample_bops on every update or on none")
        if per_sample_bops is not None:
            bops_t = torch.as_tensor(per_sample_bops, dtype=torch.float64).detach().cpu().flatten()
            if bops_t.shape != macs.shape:
                raise ValueError(
                    f"CostAccumulator: {bops_t.numel()} BOPs values for {macs.numel()} MACs values"
                )
            self._bops = self._bops or _Stats()
            self._bops.add(bops_t)
        self._macs.add(macs)
        self.num_samples += macs.numel()

    def merge(self, other: CostAccumulator) -> None:
        """Fold another accumulator (e.g. from another worker) into this one."""
        if other.num_samples == 0:
            return
        if self.num_samples and (other._bops is None) != (self._bops is None):
            raise ValueError("CostAccumulator.merge: one accumulator has BOPs and the other not")
        self._macs.merge(other._macs)
        if other._bops is not None:
            self._bops = self._bops or _Stats()
            self._bops.merge(other._bops)
        self.num_samples += other.num_samples

    def summary(self) -> dict[str, float | int]:
        """``gflops_avg/min/max`` (GFLOPs = GMACs), ``num_samples`` and ``gbops_*`` if given."""
        if self.num_samples == 0:
            raise ValueError("CostAccumulator.summary: no samples were added")
        out: dict[str, float | int] = {"num_samples": self.num_samples}
        out.update(self._macs.giga("gflops", self.num_samples))
        if self._bops is not None:
            out.update(self._bops.giga("gbops", self.num_samples))
        return out


class _Stats:
    def __init__(self) -> None:
        self.total, self.low, self.high = 0.0, math.inf, -math.inf

    def add(self, values: torch.Tensor) -> None:
        if values.numel() == 0:
            return
        if not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"CostAccumulator: costs must be finite and >= 0, got {values.tolist()}")
        self.total += float(values.sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge(self, other: _Stats) -> None:
        self.total += other.total
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    def giga(self, prefix: str, count: int) -> dict[str, float]:
        return {f"{prefix}_avg": self.total / count / 1e9, f"{prefix}_min": self.low / 1e9, f"{prefix}_max": self.high / 1e9}


# ---------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------


def model_cost(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> dict[str, float | int]:
    """Per-sample cost of one eval-mode forward of ``model`` on zeros of ``(batch_size, *input_shape)``.

    Returns ``macs`` (average per sample), ``gflops`` (= GMACs), ``bops`` and
    ``params`` (all parameters). Each submodule's train/eval mode is restored.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((batch_size, *input_shape), device=device, dtype=dtype)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), CostMeter(model, batch_size=batch_size) as meter:
            model(x)
    finally:
        for module, training in modes:
            module.training = training
    macs = float(meter.per_sample_macs.mean())
    return {
        "macs": macs,
        "gflops": macs / 1e9,
        "bops": float(meter.per_sample_bops.mean()),
        "params": sum(p.numel() for p in model.parameters()),
    }
