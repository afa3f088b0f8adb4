"""Inference-time folding of BatchNorm into the convolution before it.

In eval mode a ``BatchNorm3d`` (or ``BatchNorm2d``) is a per-channel affine map ``y = a·x + b`` with
``a = γ / sqrt(σ² + ε)`` and ``b = β − a·μ``; when it directly follows a convolution it can be
folded into that convolution's weights and bias, saving one full pass over the feature map.
On a CPU that pass is a sizeable share of a small network's time (R(2+1)D-18 at 16×112²:
~8% of a static forward, ~14% of a forward at a cheap VA-RED² choice, which computes fewer
filters but normalises the same reconstructed output). Applied to the static and the dynamic
network alike, it keeps a speed comparison like for like.

A plain ``nn.Conv3d`` / ``nn.Conv2d`` gets the standard fold. Any other module that exposes
``fold_output_affine(scale, shift)`` (VA-RED²'s ``DynamicConv3d``) is handed the affine map and
applies it itself. The BatchNorm is replaced by ``nn.Identity``. A module whose BatchNorms are
not a convolution's ``Sequential`` neighbour (ANT's elastic blocks with per-width statistics,
EfficientDet's per-level head BatchNorms, a separable conv holding its BatchNorm as an
attribute) exposes ``fold_batchnorm_()`` and folds itself; the walk does not enter it. Folding
is for inference copies: the model is put in eval mode and should not be trained afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from dynvid.backbones.frameconv import FrameConv3d

__all__ = ["bn_affine", "fold_batchnorm", "fold_conv_weight", "folded_conv", "tensor_stamp"]


def tensor_stamp(*tensors: torch.Tensor) -> tuple:
    """Which storage each tensor holds and how often it was written in place: a folded cache
    built from them is stale once this changes (``load_state_dict`` copies in place and bumps
    the version; ``assign=True`` or ``.to()`` changes the storage). An inference-mode tensor
    keeps no version counter: its storage alone stands for it."""
    return tuple((t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)


def bn_affine(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor | None = None,
              var: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` of the eval-mode BatchNorm (any dimension) ``y = a·x + b`` (running
    statistics); ANT's fusion folds its ``BatchNorm2d`` with it too. ``mean``/``var``: other
    statistics over the first ``len(mean)`` channels (one width of ANT's elastic blocks): the
    affine weight and bias are sliced to them."""
    mean = bn.running_mean if mean is None else mean
    var = bn.running_var if var is None else var
    if mean is None or var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    n = mean.numel()
    a = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight[:n]
    b = -a * mean
    if bn.bias is not None:
        b = b + bn.bias[:n]
    return a, b


def folded_conv(weight: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor | None = None,
                var: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free convolution's ``(weight, bias)`` with the eval-mode BatchNorm after it folded
    in (:func:`bn_affine`, with its optional statistics)."""
    a, b = bn_affine(bn, mean, var)
    return fold_conv_weight(weight, a), b


def _trailing_conv(module: nn.Module) -> nn.Module | None:
    """The module whose output ``module`` returns unchanged: itself if it is a conv (or folds an
    affine map), the last child of a ``Sequential``, recursively; None otherwise."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)) or hasattr(module, "fold_output_affine"):
        return module
    if isinstance(module, nn.Sequential) and len(module):
        return _trailing_conv(module[-1])
    return None


_PLAIN_CONVS = {nn.BatchNorm2d: (nn.Conv2d,), nn.BatchNorm3d: (nn.Conv3d, FrameConv3d)}
"""The BatchNorms folded and the plain convolutions each one folds into."""


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> bool:
    a, b = bn_affine(bn)
    if hasattr(conv, "fold_output_affine"):  # VA-RED²'s DynamicConv3d: 3-D only
        return type(bn) is nn.BatchNorm3d and conv.fold_output_affine(a, b)
    if type(conv) not in _PLAIN_CONVS[type(bn)] or conv.out_channels != a.numel():
        return False  # a conv subclass with its own forward may not read weight and bias plainly
    conv.weight.copy_(fold_conv_weight(conv.weight, a))
    if conv.bias is None:
        conv.bias = nn.Parameter(b.clone())
    else:
        conv.bias.mul_(a).add_(b)
    return True


def fold_conv_weight(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A convolution weight ``(out, …)`` with each output filter scaled: the weight half of a fold."""
    return weight * scale.view(-1, *([1] * (weight.dim() - 1)))


def _fold_tree(module: nn.Module) -> None:
    own = getattr(module, "fold_batchnorm_", None)
    if callable(own):  # it folds itself: not entered
        own()
        return
    for child in module.children():
        _fold_tree(child)
    if isinstance(module, nn.Sequential):
        for k in range(1, len(module)):
            if type(module[k]) in _PLAIN_CONVS:
                conv = _trailing_conv(module[k - 1])
                if conv is not None and _fold(conv, module[k]):
                    module[k] = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``BatchNorm3d`` / ``BatchNorm2d`` that directly follows a convolution inside an
    ``nn.Sequential`` (also across a nested ``Sequential`` whose last module is the conv) into
    it, in place, and let every module with a ``fold_batchnorm_()`` method fold its own; the
    model is switched to eval mode. Returns ``model``."""
    model.eval()
    _fold_tree(model)
    return model
