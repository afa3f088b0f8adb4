"""Turn a static backbone into a VA-RED² dynamic one (thesis Sec. 3.1, 4.2, App. A.2).

Which convolutions become dynamic is a per-backbone rule, kept here with the method
rather than in the backbones (they stay plain static networks):

- ``r2plus1d_18``: the 2-D spatial ``1×k×k`` convolutions of every residual block, "since
  2D convolution takes the most computational cost compared with 1D convolution" (App.
  A.2). The stem (which reads pixels) and the 1-D temporal convolutions stay static.
- ``i3d``: every convolution inside the Inception modules; the stem convolutions and the
  classifier stay static.
- ``x3d_m``: the three convolutions of every bottleneck block (1×1×1 expansion, 3×3×3
  depthwise, 1×1×1 projection), "point-wise convolutions ... right after the depth-wise
  convolutions" being the ones Fig. 4-1 discusses; stem, shortcuts and head stay static.

A layer whose output has one frame at the configured clip length gets no temporal choices
(R = 2 or 4 would still compute that one frame; issue 19, cause 4).

Conversion keeps every parameter name of the static network (the dynamic conv *is* a
``nn.Conv3d`` with extra ``gate`` / ``cheap_*`` children), so stage 2 loads the stage-1
checkpoint with only the new gate and cheap-operation keys missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from dynvid.config import VaredConfig
from dynvid.methods.vared.dynconv import DynamicConv3d

__all__ = ["TARGETS", "dynamic_layers", "force_policy", "make_dynamic", "target_names"]


def _r2plus1d_target(name: str, conv: nn.Conv3d) -> bool:
    return name.startswith("layer") and conv.kernel_size[0] == 1 and conv.kernel_size[1] > 1


def _i3d_target(name: str, conv: nn.Conv3d) -> bool:
    return name.startswith("inception")


def _x3d_target(name: str, conv: nn.Conv3d) -> bool:
    return name.startswith("res") and ".conv_" in name


TARGETS: dict[str, Callable[[str, nn.Conv3d], bool]] = {
    "r2plus1d_18": _r2plus1d_target,
    "i3d": _i3d_target,
    "x3d_m": _x3d_target,
}


def target_names(model: nn.Module, backbone: str) -> list[str]:
    """Qualified names of the convolutions of ``model`` that VA-RED² makes dynamic."""
    if backbone not in TARGETS:
        raise ValueError(f"VA-RED² has no dynamic-layer rule for backbone {backbone!r}; "
                         f"valid: {', '.join(sorted(TARGETS))}")
    rule = TARGETS[backbone]
    names = [n for n, m in model.named_modules() if type(m) is nn.Conv3d and rule(n, m)]
    if not names:
        raise ValueError(f"no convolution of {type(model).__name__} matches the {backbone!r} rule")
    return names


@torch.no_grad()
def _frames(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """``(input frames, output frames)`` of each target conv for one clip of ``input_shape`` = (C, T, H, W)."""
    frames: dict[str, tuple[int, int]] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, args, out, n=n: frames.__setitem__(n, (args[0].shape[2], out.shape[2]))) for n in names]
    was_training = model.training
    p = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return frames


def make_dynamic(model: nn.Module, backbone: str, cfg: VaredConfig, input_shape: Sequence[int]) -> nn.Module:
    """Replace the target convolutions of ``model`` (in place) by :class:`DynamicConv3d`
    with the same weights; returns ``model``.

    Args:
        model: a static backbone from ``dynvid.backbones``.
        backbone: its registry name (selects the rule in :data:`TARGETS`).
        cfg: search space, dimensions, gate size, cheap-operation kernel.
        input_shape: ``(C, T, H, W)`` of one clip; fixes the frames of each gate's descriptor.
    """
    names = target_names(model, backbone)
    frames = _frames(model, names, input_shape)
    for name in names:
        conv = model.get_submodule(name)
        frames_in, frames_out = frames.get(name, (1, 1))
        # a layer with one output frame computes that frame at every R (⌈1/R⌉ = 1): temporal
        # choices there save nothing and only add a gate output, so the layer is channel-only
        dyn = DynamicConv3d.from_conv(
            conv, search_space=cfg.search_space, temporal=cfg.temporal and frames_out > 1, channel=cfg.channel,
            gate_frames=max(1, frames_in), gate_hidden=cfg.gate_hidden, cheap_kernel=cfg.cheap_kernel,
            gate_threshold=cfg.gate_threshold)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, dyn)
    return model


def dynamic_layers(model: nn.Module) -> list[tuple[str, DynamicConv3d]]:
    """``(name, layer)`` of every dynamic convolution, in forward-definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, DynamicConv3d)]


@contextlib.contextmanager
def force_policy(model: nn.Module, policy) -> Iterator[nn.Module]:
    """Force every dynamic conv's decision inside the block (see :meth:`DynamicConv3d.force`)."""
    layers = [m for _, m in dynamic_layers(model)]
    before = [m.policy for m in layers]
    try:
        for m in layers:
            m.force(policy)
        yield model
    finally:
        for m, p in zip(layers, before):
            m.policy = p
