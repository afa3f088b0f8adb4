"""Model-agnostic ResQ: wrap every ``nn.Conv2d`` and ``nn.Linear`` of any ``nn.Module`` in a
:class:`~.layers.QuantConv2d` / :class:`~.layers.QuantLinear`, switch the whole network between modes, run a sequence with
keyframes every ``T`` frames (Sec. 4: "keyframes at fixed frame intervals, with a given
period T"), and calibrate every layer's activation quantizers on its own inputs (Sec. 4.1).

Frame quantization, the baseline, uses the same notation and the same keyframes: in
``W8A8->W4A4`` every T-th frame runs at W8A8 and the frames between at W4A4, each frame on its
own (no residual). The two schemes then have exactly the same BOPs, so the comparison of Fig. 5
and Fig. 7 is at equal cost.

Choice: calibration captures each layer's inputs from the **float** network (one pass per
calibration sequence): keyframes for the ``key`` quantizers, the other frames for the
``frame`` quantizers, the differences to the sequence's keyframe for the ``residual`` ones
(every bit-width of a Dynamic-ResQ pool).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dynvid.methods.resq.layers import MODES, QuantConv2d, QuantLinear, parse_bits
from dynvid.methods.resq.policy import TAU

__all__ = ["calibrate_model", "configure", "quant_layers", "reset_state", "run_sequence", "set_mode", "wrap_model"]


def wrap_model(model: nn.Module, key_bits: tuple[int, int] = (8, 8), res_bits: tuple[int, int] = (4, 4),
               per_channel: bool = False, res_pool: tuple[int, ...] | None = None, tau: float = TAU) -> nn.Module:
    """Replace every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` (in place) by a ``QuantConv2d`` /
    ``QuantLinear`` around it; returns
    ``model``. Its state dict keeps loading float checkpoints (see ``QuantConv2d``)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(model, name, QuantConv2d(child, key_bits, res_bits, per_channel, res_pool, tau))
        elif isinstance(child, nn.Linear):
            setattr(model, name, QuantLinear(child, key_bits, res_bits, per_channel, res_pool, tau))
        elif not isinstance(child, QuantConv2d):
            wrap_model(child, key_bits, res_bits, per_channel, res_pool, tau)
    return model


def configure(model: nn.Module, bits: str, per_channel: bool = False, tau: float = TAU) -> None:
    """Set every quantized layer to the bit configuration ``bits`` in the paper's notation
    (``"W8A8->W4A4"``, ``"W8A8->W8A{0,4,8}"``); the activation scales are reset (calibrate again)."""
    key_bits, res_bits, pool = parse_bits(bits)
    for layer in quant_layers(model):
        layer.key_bits, layer.res_bits, layer.res_pool, layer.tau = key_bits, res_bits, pool, tau
        layer.per_channel = per_channel
        layer.act_scale = {"key": None, "frame": None, "residual": None}
        layer.pool_scale = {b: None for b in (pool or ())}
        layer.x_key = layer.z_key = None
        layer.reset_statistics()  # counts per bit-width of the old pool would not fit the new one


def quant_layers(model: nn.Module) -> list[QuantConv2d]:
    layers = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    if not layers:
        raise ValueError("the model has no QuantConv2d layer: call wrap_model() first")
    return layers


def reset_state(model: nn.Module) -> None:
    """Forget every layer's keyframe (``x_k``, ``ẑ_k``) and recorded bit map: a new sequence
    starts, and a model that trained with QAT holds no graph."""
    for layer in quant_layers(model):
        layer.x_key = layer.z_key = layer.last_bits = None


def set_mode(model: nn.Module, mode: str) -> None:
    """Put every quantized layer in ``mode`` (``float``, ``frame``, ``key``, ``residual``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for layer in quant_layers(model):
        layer.mode = mode


@torch.no_grad()
def run_sequence(model: nn.Module, frames: torch.Tensor, period: int, quantization: str = "residual") -> list:
    """Outputs of ``frames (T, B, …)`` frame by frame: ``residual`` (ResQ: a keyframe every
    ``period`` frames, residuals between), ``frame`` (frame quantization: the same keyframes at
    the keyframe bits, every other frame quantized on its own) or ``float``."""
    if period < 1:
        raise ValueError(f"the keyframe period T must be >= 1, got {period}")
    if quantization not in ("residual", "frame", "float"):
        raise ValueError(f"quantization must be 'residual', 'frame' or 'float', got {quantization!r}")
    outs = []
    for t, x in enumerate(frames):
        if quantization == "residual":
            set_mode(model, "key" if t % period == 0 else "residual")
        elif quantization == "frame":
            set_mode(model, "key" if t % period == 0 else "frame")
        else:
            set_mode(model, quantization)
        outs.append(model(x))
    return outs


@torch.no_grad()
def calibrate_model(model: nn.Module, sequences: Iterable[torch.Tensor], period: int, candidates: int = 20) -> int:
    """Calibrate the ``key``, ``frame`` and ``residual`` activation quantizers of every layer
    on ``sequences`` (each ``(T, B, …)``; ``c`` samples in all, 64 in the paper) with the
    Eq. (8) line search over ``candidates`` points (20). Returns the number of frames seen."""
    layers = quant_layers(model)
    captured: dict[int, dict[str, list[torch.Tensor]]] = {id(m): {"key": [], "frame": [], "residual": []}
                                                          for m in layers}
    current: dict[int, torch.Tensor] = {}
    keys: dict[int, torch.Tensor] = {}
    state = {"key": True}

    def hook(module, inputs):
        x = inputs[0].detach()
        store = captured[id(module)]
        if state["key"]:
            keys[id(module)] = x
            store["key"].append(x)
        else:
            store["frame"].append(x)
            store["residual"].append(x - keys[id(module)])
        current[id(module)] = x

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    seen, was_training = 0, model.training
    model.eval()  # the float pass must not move BatchNorm statistics
    try:
        set_mode(model, "float")
        for seq in sequences:
            for t, x in enumerate(seq):
                state["key"] = t % period == 0
                model(x)
                seen += 1
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("calibrate_model needs at least one frame")
    for m in layers:
        store = captured[id(m)]
        if not store["frame"]:  # period 1: no frame between keyframes; fit the frame quantizer on keyframes
            store["frame"] = store["key"]
        for mode in ("key", "frame", "residual"):
            if store[mode]:
                m.calibrate(mode, torch.cat(store[mode]), candidates)
    return seen
