"""The speed-optimized LSTM memory of Looking Fast and Slow (Liu et al., 2019, Sec. 3.2, Fig. 3).

A convolutional LSTM with the paper's changes that make it cheap enough to run on every frame
(bottleneck with skip, groups) and two bounded-range choices:

1. **Bottleneck with a skip to the output** (after the Bottleneck-LSTM of Liu & Zhu [22]):
   the gates are computed from a bottleneck ``b_t = ReLU6(W_b ⋆ [x_t, h_{t-1}])`` rather
   than from the full input, and the bottleneck is concatenated to the output,
   ``M_t = [h_t, b_t]``, so features the memory does not need to keep still reach the
   detector.
2. **Groups**: the state is split channel-wise into ``G`` slices (G = 4); slice ``g``
   computes its own bottleneck ``^g b_t`` from ``[x_t, ^g h_{t-1}]`` and its own gates
   from ``^g b_t``, all with grouped convolutions. ``c_t``, ``h_t`` and
   ``M_t = [^1h_t, ^1b_t, …, ^Gh_t, ^Gb_t]`` are the concatenated slices.
3. ReLU6 activations (φ = ReLU6 as in [22]); and, dynvid's choice rather than one of the
   paper's three changes, the cell state clipped to a bounded range.

The paper's model uses a 320-channel state (output 640 = state + bottleneck), Table 1's
comparison a 1024-channel input. Skipping the state update when f1 runs is the
detector's job (``model.InterleavedDetector``): this module always returns the new state.

Choices (the text of Sec. 3.2 stops short of the equations; Fig. 3 and [22] fix the rest):

- Every convolution is depthwise-separable (3×3 depthwise, then 1×1), as in [22] and
  SSDLite. The bottleneck of group ``g`` is one depthwise-separable conv over
  ``[x_t, ^g h_{t-1}]``. Because a depthwise filter sees one channel, the depthwise filter
  of ``x_t`` is shared by the groups, and the 1×1 part splits exactly into an ``x_t`` term
  (one dense 1×1 conv to all ``G`` bottleneck slices) and an ``h`` term (a grouped 1×1
  conv): the same function and the same MACs as ``G`` separate convs over the
  concatenation, without copying ``x_t`` ``G`` times.
- Gate order per group is (input, forget, output, candidate); ``c_t = σ(f)c_{t-1} +
  σ(i)ReLU6(j)``, ``h_t = σ(o)ReLU6(c_t)``; ``c_t`` is clipped to ``[-clip, clip]``
  (clip = 6, the ReLU6 range) before it is stored.
- The forget-gate bias starts at 1 (Jozefowicz et al.), so a fresh memory keeps its state.

:func:`grouped_lstm_macs` and :func:`conv_lstm_macs` are the cost formulas (Table 1's
point: the grouped cell is several times cheaper than a ConvLSTM of the same size), and
:class:`ConvLSTM` is that plain baseline.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvLSTM", "GroupedConvLSTM", "conv_lstm_macs", "grouped_lstm_macs", "zero_state"]


def grouped_lstm_macs(in_channels: int, state_channels: int, groups: int, height: int, width: int,
                      kernel_size: int = 3) -> int:
    """MACs of one step of :class:`GroupedConvLSTM` on an ``height × width`` map.

    Per pixel, with ``S`` state channels and ``s = S / G`` per group: depthwise ``k²`` over
    ``x`` (``C_in``) and ``h`` (``S``); 1×1 bottleneck ``C_in·S + s·S`` (each group maps
    ``C_in + s`` channels to ``s``); gates: depthwise ``k²·S`` and grouped 1×1 ``s·4S``.
    """
    s = state_channels // groups
    k2 = kernel_size * kernel_size
    per_pixel = (k2 * (in_channels + state_channels) + in_channels * state_channels + s * state_channels
                 + k2 * state_channels + s * 4 * state_channels)
    return per_pixel * height * width


def conv_lstm_macs(in_channels: int, state_channels: int, height: int, width: int, kernel_size: int = 3) -> int:
    """MACs of one step of :class:`ConvLSTM`: a depthwise-separable conv from
    ``[x_t, h_{t-1}]`` to the four gates (``k²(C_in + S) + (C_in + S)·4S`` per pixel)."""
    cat = in_channels + state_channels
    return (kernel_size * kernel_size * cat + cat * 4 * state_channels) * height * width


def zero_state(batch: int, channels: int, height: int, width: int, like: torch.Tensor | None = None):
    """A zero ``(c, h)`` pair of ``(batch, channels, height, width)`` (dtype/device of ``like``)."""
    kw = {} if like is None else {"dtype": like.dtype, "device": like.device}
    shape = (batch, channels, height, width)
    return torch.zeros(shape, **kw), torch.zeros(shape, **kw)


def _lstm_update(gates: torch.Tensor, c: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``gates (B, 4, S, H, W)`` in (i, f, o, j) order -> ``(c_t, h_t)`` with φ = ReLU6."""
    i, f, o, j = gates.unbind(1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * F.relu6(j)
    if clip is not None:
        c = c.clamp(-clip, clip)
    return c, torch.sigmoid(o) * F.relu6(c)


class GroupedConvLSTM(nn.Module):
    """Speed-optimized convolutional LSTM cell (Sec. 3.2).

    Args:
        in_channels: channels of the input feature map ``x_t``.
        state_channels: channels of ``c`` and ``h`` (320 in the paper).
        groups: state groups ``G`` (4 in the paper); must divide ``state_channels``.
        kernel_size: spatial size of the depthwise filters.
        clip: ``c_t`` is clipped to ``[-clip, clip]``; None disables clipping.

    ``forward(x, (c, h)) -> (M, (c', h'))`` with ``M`` of ``2 * state_channels`` channels.
    """

    def __init__(self, in_channels: int, state_channels: int = 320, groups: int = 4, kernel_size: int = 3,
                 clip: float | None = 6.0) -> None:
        super().__init__()
        if groups < 1 or state_channels % groups:
            raise ValueError(f"groups={groups} must divide state_channels={state_channels}")
        self.in_channels, self.state_channels, self.groups = in_channels, state_channels, groups
        self.clip = clip
        s, pad = state_channels // groups, kernel_size // 2
        self.x_depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=pad, groups=in_channels, bias=False)
        self.h_depthwise = nn.Conv2d(state_channels, state_channels, kernel_size, padding=pad,
                                     groups=state_channels, bias=False)
        self.x_bottleneck = nn.Conv2d(in_channels, state_channels, 1)  # the x_t part of every group
        self.h_bottleneck = nn.Conv2d(state_channels, state_channels, 1, groups=groups, bias=False)
        self.gate_depthwise = nn.Conv2d(state_channels, state_channels, kernel_size, padding=pad,
                                        groups=state_channels, bias=False)
        self.gates = nn.Conv2d(state_channels, 4 * state_channels, 1, groups=groups)
        with torch.no_grad():  # forget gate bias 1: a fresh memory keeps its state
            self.gates.bias.view(groups, 4, s)[:, 1].fill_(1.0)

    @property
    def out_channels(self) -> int:
        return 2 * self.state_channels

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor | None = None):
        """Zero ``(c, h)`` for ``batch`` maps of ``height × width``."""
        return zero_state(batch, self.state_channels, height, width, like)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        c, h = state
        if x.shape[1] != self.in_channels:
            raise ValueError(f"memory expects {self.in_channels} input channels, got {x.shape[1]}")
        B, _, H, W = x.shape
        G, s = self.groups, self.state_channels // self.groups
        b = F.relu6(self.x_bottleneck(self.x_depthwise(x)) + self.h_bottleneck(self.h_depthwise(h)))
        gates = self.gates(self.gate_depthwise(b))  # (B, G*4*s): group-major, then (i, f, o, j)
        gates = gates.view(B, G, 4, s, H, W).transpose(1, 2).reshape(B, 4, G * s, H, W)
        c, h = _lstm_update(gates, c, self.clip)
        out = torch.cat([h.view(B, G, s, H, W), b.view(B, G, s, H, W)], 2).view(B, 2 * G * s, H, W)
        return out, (c, h)


class ConvLSTM(nn.Module):
    """A plain convolutional LSTM of the same size (depthwise-separable, as in [22]),
    the baseline of Table 1. ``forward(x, (c, h)) -> (h', (c', h'))``."""

    def __init__(self, in_channels: int, state_channels: int, kernel_size: int = 3, clip: float | None = 6.0) -> None:
        super().__init__()
        cat = in_channels + state_channels
        self.state_channels, self.clip = state_channels, clip
        self.depthwise = nn.Conv2d(cat, cat, kernel_size, padding=kernel_size // 2, groups=cat, bias=False)
        self.gates = nn.Conv2d(cat, 4 * state_channels, 1)

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor | None = None):
        return zero_state(batch, self.state_channels, height, width, like)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        c, h = state
        B, _, H, W = x.shape
        gates = self.gates(self.depthwise(torch.cat([x, h], 1))).view(B, 4, self.state_channels, H, W)
        c, h = _lstm_update(gates, c, self.clip)
        return h, (c, h)
