"""Frame-wise execution of ``1×k×k`` 3-D convolutions, shared by static and dynamic networks.

A ``Conv3d`` whose kernel spans one frame (R(2+1)D's spatial convolutions, X3D's and I3D's
pointwise ones) computes a 2-D convolution of every stride-th frame. Run as one batched
``conv2d`` over ``B·T`` frames it uses the 2-D kernels (oneDNN on CPU, cuDNN on CUDA), whose
time follows the output size, where CPU ``conv3d`` spends most of its time on the input's
im2col whatever the number of filters: a sliced weight (VA-RED²'s channel choices) only saves
time through the 2-D path. Same arithmetic, same result up to float rounding.

:func:`frame_conv3d` is the functional form (VA-RED²'s ``DynamicConv3d`` calls it for every
sub-convolution); :func:`use_frame_convs` switches a static network's eligible ``Conv3d``
modules to it, so that a static network and its dynamic version are timed with the same
implementation of the same convolutions (issue 19: speed "against the same implementation").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrameConv3d", "frame_conv3d", "is_frame_conv", "use_frame_convs"]


def is_frame_conv(kernel_size, padding) -> bool:
    """True when the kernel spans one frame with no temporal padding (the 2-D path applies)."""
    return kernel_size[0] == 1 and padding[0] == 0


def frame_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation,
                 groups: int) -> torch.Tensor:
    """``F.conv3d`` for a ``(C_out, C_in/g, 1, k_h, k_w)`` weight without temporal padding,
    computed as one ``conv2d`` over every ``stride[0]``-th frame of ``x`` (B, C, T, H, W)."""
    frames = x[:, :, :: stride[0]] if stride[0] > 1 else x
    b, c, t, h, w = frames.shape
    flat = frames.transpose(1, 2).reshape(b * t, c, h, w)
    y = F.conv2d(flat, weight[:, :, 0], bias, tuple(stride[1:]), tuple(padding[1:]), tuple(dilation[1:]), groups)
    return y.view(b, t, *y.shape[1:]).transpose(1, 2)


class FrameConv3d(nn.Conv3d):
    """A ``nn.Conv3d`` (same parameters, same state-dict keys) whose ``1×k×k`` kernel runs
    through :func:`frame_conv3d` in inference (``torch.no_grad``); training keeps ``conv3d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and is_frame_conv(self.kernel_size, self.padding):
            return frame_conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)


def use_frame_convs(model: nn.Module) -> nn.Module:
    """Switch every plain ``nn.Conv3d`` of ``model`` with a one-frame kernel and zero padding
    mode to :class:`FrameConv3d`, in place (the modules keep their parameters); returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv3d and module.padding_mode == "zeros" and not isinstance(module.padding, str) \
                and is_frame_conv(module.kernel_size, module.padding):
            module.__class__ = FrameConv3d
    return model
