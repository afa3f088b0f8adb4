"""ANT's building blocks (Liu et al., "ANT: Adapt Network across Time", Sec. 3.1–3.3):
supernet training helpers, the fusion module, the dynamic gate and the key-frame rule.

- :func:`sandwich_configs`: the sandwich rule (Yu & Huang; BigNAS) — each step trains the
  largest subnet, the smallest and ``n`` random ones.
- :func:`inplace_distillation_loss`: in-place knowledge distillation (Sec. 3.1, [2]) — the
  other subnets of a sandwich step learn the largest subnet's detections (its class
  probabilities as soft targets, its box codes by smooth-L1), the largest learns the labels.
- :func:`recalibrate_bn`: BatchNorm statistics recomputed for one subnet before it is
  evaluated (shared statistics belong to no subnet; Once-for-All / BigNAS practice).
- :class:`FusionModule` (Sec. 3.2, Fig. 2): the last key frame's stage features and the
  current ones, concatenated → 1×1 conv → BN/SiLU → 3×3 depthwise → BN/SiLU, added to the
  current features (zero-initialised: our choice, see the class).
- :class:`DynamicGate` (Sec. 3.2, [18]): global pool → FC → ReLU → FC → one score per
  width of the next stage; Gumbel-softmax in training, argmax at inference.
- :func:`stem_deviation` and :class:`KeyFrameSelector` (Sec. 3.3): the normalized L1
  deviation of the stem features from the last key frame's; above the threshold the frame
  becomes a key frame.

Choices: the gate's hidden width is ``max(8, C // 4)`` (the paper cites [18] without sizes);
the deviation is ``mean |s_t − s_k| / (mean |s_k| + ε)`` per frame, so the threshold is a
relative change, independent of the stem's scale.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.backbones.efficientnet import RATIOS
from dynvid.backbones.fuse import folded_conv, tensor_stamp
from dynvid.layers import gumbel_softmax
from dynvid.metrics.cost import conv_macs, record_cost

__all__ = ["DynamicGate", "FusionModule", "KeyFrameSelector", "ProjectedKeys", "bn_buffers", "fresh_updates",
           "inplace_distillation_loss", "recalibrate_bn", "sandwich_configs", "stem_deviation",
           "stem_scale"]

LARGEST, SMALLEST = (max(RATIOS),) * 6, (min(RATIOS),) * 6


def sandwich_configs(rng: random.Random, num_random: int = 2) -> list[tuple[int, ...]]:
    """The subnets of one sandwich step: largest, smallest, then ``num_random`` random ones."""
    return [LARGEST, SMALLEST] + [tuple(rng.choice(RATIOS) for _ in range(6)) for _ in range(num_random)]


def inplace_distillation_loss(student_cls: torch.Tensor, student_box: torch.Tensor, teacher_cls: torch.Tensor,
                              teacher_box: torch.Tensor) -> torch.Tensor:
    """KD from the largest subnet's detections: sigmoid BCE against its (detached) class
    probabilities, averaged over anchors and classes, plus smooth-L1 on its box codes."""
    soft = torch.sigmoid(teacher_cls.detach())
    cls = F.binary_cross_entropy_with_logits(student_cls, soft)
    box = F.smooth_l1_loss(student_box, teacher_box.detach())
    return cls + box


@torch.no_grad()
def recalibrate_bn(model: nn.Module, forward: Callable[[torch.Tensor], object], batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over
    ``batches`` run through ``forward`` (a subnet of ``model``) in train mode (BatchNorms the
    model keeps in eval mode in training, like a frozen stem, are left alone). Only BN buffers
    change; returns the number of batches seen. The model comes back in eval mode."""
    model.train()  # a BatchNorm the model keeps in eval mode (a frozen stem) keeps its statistics
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts the same
    n = 0
    try:
        for x in batches:
            forward(x)
            n += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.eval()
    if n == 0:
        raise ValueError("recalibrate_bn needs at least one batch")
    return n


def fresh_updates(momentum: float, share: float = 0.5) -> int:
    """The fewest updates after which more than ``share`` of a BatchNorm running average
    (``momentum`` as ``nn.BatchNorm2d``'s) comes from them: the smallest ``n`` with
    ``(1 − momentum)^n < 1 − share`` (7 at PyTorch's default 0.1; 1 at momentum 1). A
    cumulative average (``momentum=None``) has no such count (its last ``n`` updates weigh
    ``n / N``): ``ValueError``, as for a momentum outside (0, 1] or a share outside (0, 1)."""
    if momentum is None or not 0 < momentum <= 1 or not 0 < share < 1:
        raise ValueError(f"fresh_updates needs momentum in (0, 1] (not a cumulative average) and share in (0, 1), "
                         f"got {momentum}, {share}")
    if momentum == 1:
        return 1
    return math.floor(math.log(1 - share) / math.log(1 - momentum)) + 1


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm buffer (running statistics, batch counts), to restore with
    ``model.load_state_dict(saved, strict=False)`` after a recalibrated evaluation."""
    names = {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return {k: v.clone() for k, v in model.state_dict().items() if k.rpartition(".")[0] in names
            and k.rpartition(".")[2] in ("running_mean", "running_var", "num_batches_tracked")}


class ProjectedKeys(list):
    """What a key frame stores for inference: per elastic stage, the key side of the fusion's
    1×1 projection (:meth:`FusionModule.project_key`), computed once per key frame. The type
    is the tag: ``forward_nonkey`` fuses a plain list as raw key features (same shapes)."""


class FusionModule(nn.Module):
    """Fuse the last key frame's stage features with the current frame's (Sec. 3.2).

    Choice: the fused map is added to the current features, and the last BatchNorm's scale
    starts at zero, so an untrained fusion passes the current features through (the
    zero-init residual of Goyal et al.). With the literal concat → conv → conv, the random
    fusion replaced every non-key stage input at the start of stage 2; on the embedded run
    the non-key frames' detection loss stayed twice the non-temporal network's after 4
    epochs (0.72 vs 0.37) and ANT lost 0.19 AP.

    Inference splits the 1×1 projection (issue 23): a 1×1 convolution over ``[key, current]``
    is ``W_k·key + W_c·current``, and ``W_k·key`` (with the folded BatchNorm's bias) depends
    on the key frame only, so :meth:`project_key` computes it once per key frame and
    :meth:`fuse` adds ``W_c·current`` on each non-key frame, with both BatchNorms folded into
    their convolutions. ``fuse(project_key(k), c)`` equals ``forward(k, c)`` in eval mode
    (a test holds it to 1e-5). Training runs :meth:`forward` (the BatchNorms need the batch).
    The module reports its own MACs: the key side's on the key frame, the rest per frame.
    """

    counts_own_cost = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.reduce = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.SiLU(inplace=True))
        self.depthwise = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                       nn.BatchNorm2d(channels), nn.SiLU(inplace=True))
        nn.init.zeros_(self.depthwise[1].weight)
        self._folded_cache: tuple | None = None

    def fold_batchnorm_(self) -> None:
        """:func:`dynvid.backbones.fuse.fold_batchnorm` leaves the module as it is: its inference
        path (:meth:`project_key`, :meth:`fuse`) folds both BatchNorms itself, and
        :meth:`forward` keeps them (it also serves training)."""

    def _check(self, key: torch.Tensor, current: torch.Tensor) -> None:
        if key.shape != current.shape:
            raise ValueError(f"key-frame features {tuple(key.shape)} and current {tuple(current.shape)} differ")

    def _macs(self, x: torch.Tensor, key_side: bool, current_side: bool) -> int:
        c, hw = self.channels, tuple(x.shape[-2:])
        return ((conv_macs(c, c, 1, hw) if key_side else 0)
                + (conv_macs(c, c, 1, hw) + conv_macs(c, c, 3, hw, groups=c) if current_side else 0))

    def forward(self, key: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        self._check(key, current)
        record_cost(self, self._macs(current, True, True))
        return current + self.depthwise(self.reduce(torch.cat([key, current], 1)))

    def train(self, mode: bool = True) -> FusionModule:
        self._folded_cache = None  # training changes the statistics; recalibration runs in train mode
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._folded_cache = None  # .to() / .half() / .cuda() move or convert the tensors
        return super()._apply(fn, *args, **kwargs)

    def _folded(self, check: bool = True) -> tuple[torch.Tensor, ...]:
        """``(W_k, W_c, b, W_dw, b_dw)`` with the BatchNorms folded, cached until a parameter or
        statistic changes: an in-place change bumps the tensor's version (``load_state_dict``,
        an optimizer step), and ``train()`` / ``.to()`` drop the cache. A write through
        ``.data`` is not seen (none in dynvid). ``check=False`` (:meth:`fuse`) takes the cache
        as :meth:`project_key` last checked it, building it only when there is none: the
        stamp of 14 tensors cost ~20 µs, six times per non-key frame, and a key frame's
        non-key frames then fuse with the weights its key side was projected with."""
        if not check and self._folded_cache is not None:
            return self._folded_cache[1]
        tensors = [self.reduce[0].weight, *self.reduce[1].parameters(), self.reduce[1].running_mean,
                   self.reduce[1].running_var, self.depthwise[0].weight, *self.depthwise[1].parameters(),
                   self.depthwise[1].running_mean, self.depthwise[1].running_var]
        stamp = tensor_stamp(*tensors)
        if self._folded_cache is None or self._folded_cache[0] != stamp:
            with torch.no_grad():
                w, b = folded_conv(self.reduce[0].weight, self.reduce[1])
                w_dw, b_dw = folded_conv(self.depthwise[0].weight, self.depthwise[1])
                c = self.channels
                folded = (w[:, :c].contiguous(), w[:, c:].contiguous(), b.view(1, -1, 1, 1), w_dw, b_dw)
            self._folded_cache = (stamp, folded)
        return self._folded_cache[1]

    def _inference_only(self) -> None:
        if self.training:
            raise RuntimeError("the split fusion folds BatchNorm statistics: inference (eval mode) only; "
                               "training runs forward(key, current)")

    def project_key(self, key: torch.Tensor) -> torch.Tensor:
        """The key side ``W_k·key + b`` (BatchNorm folded): once per key frame."""
        self._inference_only()
        w_k, _, b, _, _ = self._folded()
        record_cost(self, self._macs(key, True, False))
        return F.conv2d(key, w_k) + b

    def fuse(self, projected_key: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """A non-key frame's fusion from the stored key side: ``forward(key, current)`` in eval mode."""
        self._inference_only()
        self._check(projected_key, current)
        _, w_c, _, w_dw, b_dw = self._folded(check=False)
        record_cost(self, self._macs(current, False, True))
        h = F.silu(F.conv2d(current, w_c).add_(projected_key), inplace=True)  # in place: fresh tensors, no autograd
        return F.silu(F.conv2d(h, w_dw, b_dw, padding=1, groups=self.channels), inplace=True).add_(current)


class DynamicGate(nn.Module):
    """Scores of the next stage's widths from a stage feature map: ``(B, C, H, W) -> (B, W)``."""

    def __init__(self, channels: int, num_widths: int = len(RATIOS), hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(8, channels // 4)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, num_widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # global average pooling as a mean over H, W: (B, C) directly; ReLU on fc1's fresh output
        return self.fc2(F.relu(self.fc1(x.mean((2, 3))), inplace=True))

    @torch.no_grad()
    def set_prior(self, index: int, weight: float) -> None:
        """Bias the scores toward width ``index``: the output bias becomes the log of a
        distribution with ``weight`` on ``index`` and the rest spread evenly, so with the
        input's contribution at zero the softmax (and the Gumbel sampling of training) picks
        ``index`` with probability ``weight`` (``ant.gate_prior``)."""
        n = self.fc2.out_features
        if not 0 <= index < n or not 0 < weight < 1:
            raise ValueError(f"a gate prior needs 0 <= index < {n} and 0 < weight < 1, got {index}, {weight}")
        self.fc2.bias.fill_(math.log((1 - weight) / (n - 1)))
        self.fc2.bias[index] = math.log(weight)

    @staticmethod
    def decide(scores: torch.Tensor, tau: float | None = None) -> torch.Tensor:
        """One-hot choice per sample: Gumbel-softmax straight-through when ``tau`` is given
        (training, gradients reach the scores), argmax otherwise (inference)."""
        if tau is not None:
            return gumbel_softmax(scores, tau, hard=True)
        return F.one_hot(scores.argmax(1), scores.shape[1]).to(scores.dtype)


def stem_scale(key_stem: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The deviation's denominator ``mean|s_k| + ε`` per frame: a key frame's, computed once."""
    return key_stem.abs().mean(tuple(range(1, key_stem.dim()))) + eps


def stem_deviation(stem: torch.Tensor, key_stem: torch.Tensor, eps: float = 1e-6,
                   scale: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized L1 deviation per frame: ``mean|s_t − s_k| / (mean|s_k| + ε)`` over all but dim 0.
    ``scale``: :func:`stem_scale` of ``key_stem`` when already computed (inference computes it
    once per key frame rather than on every frame; with the absolute value taken in place, a
    frame's deviation at 192² on one core went from 0.39 to 0.17 ms)."""
    dims = tuple(range(1, stem.dim()))
    return (stem - key_stem).abs_().mean(dims) / (stem_scale(key_stem, eps) if scale is None else scale)


class KeyFrameSelector:
    """Sec. 3.3: the first frame is a key frame; a later frame is one when its stem features
    deviate from the last key frame's by more than ``threshold`` (inference knob)."""

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ValueError(f"the key-frame threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.key_stem: torch.Tensor | None = None
        self.key_scale: torch.Tensor | None = None

    def reset(self) -> None:
        self.key_stem = self.key_scale = None

    def __call__(self, stem: torch.Tensor) -> bool:
        """Decide for one frame's stem features ``(1, C, H, W)`` (or ``(C, H, W)``)."""
        stem = stem.unsqueeze(0) if stem.dim() == 3 else stem
        if self.key_stem is None or float(stem_deviation(stem, self.key_stem, scale=self.key_scale)) > self.threshold:
            self.key_stem, self.key_scale = stem, stem_scale(stem)
            return True
        return False

    def schedule(self, stems: Sequence[torch.Tensor]) -> list[bool]:
        """Key-frame flags of a sequence (the selector is reset first)."""
        self.reset()
        return [self(s) for s in stems]
