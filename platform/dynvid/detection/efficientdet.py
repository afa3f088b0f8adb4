"""EfficientDet's BiFPN neck and class/box head (Tan, Pang & Le, "EfficientDet", Sec. 3–4),
the detector ANT builds on (ANT Sec. 3.1, 4.1: "EfficientDet-D0"), sizes from arguments.

- :func:`retina_anchors`: EfficientDet's anchors — at every level, scales ``{2^0, 2^(1/3),
  2^(2/3)}`` × aspect ratios ``{0.5, 1, 2}`` of a base size ``anchor_scale · stride`` (4 ·
  stride), normalised xyxy, cell by cell with the 9 anchors innermost;
  :func:`cached_retina_anchors` keeps them per (sizes, device, dtype), so a training step or a
  frame does not rebuild them on the host and copy them to the GPU.
- :class:`BiFPN`: P3–P5 from the backbone projected to ``channels``, P6 / P7 by a 1×1
  projection and 3×3 max-pooling with stride 2; each layer a top-down then a bottom-up
  pass whose nodes fuse their inputs with **fast normalized fusion**
  ``Σ w_i x_i / (ε + Σ w_j)``, ``w = ReLU(w')`` (Sec. 3.3), then SiLU and a
  depthwise-separable 3×3 conv with BatchNorm.
- :class:`EfficientDetHead`: class and box nets shared across levels (``repeats``
  depthwise-separable conv + BN + SiLU, the BatchNorms per level as in the official
  implementation), then a depthwise-separable predictor; class bias at the prior 0.01.

EfficientDet-D0: BiFPN 64 channels × 3 layers, head 3 repeats, 512×512 input (Table 1).
Resizing between levels is nearest upsampling (×2) and max-pooling (÷2) as in the official
code; odd sizes are matched by interpolating to the target's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.backbones.fuse import folded_conv
from dynvid.metrics.cost import record_cost

__all__ = ["BiFPN", "EfficientDetHead", "cached_retina_anchors", "retina_anchors"]

ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ANCHOR_RATIOS = (0.5, 1.0, 2.0)


def retina_anchors(feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], anchor_scale: float = 4.0,
                   scales: Sequence[float] = ANCHOR_SCALES, ratios: Sequence[float] = ANCHOR_RATIOS) -> torch.Tensor:
    """``(Σ H_k·W_k·9, 4)`` normalised xyxy anchors for levels of ``feature_sizes`` on an image
    of ``image_size`` (H, W); a level's stride is the image size over its feature size."""
    H, W = image_size
    out = []
    for h, w in feature_sizes:
        sy, sx = H / h, W / w
        base = anchor_scale * max(sy, sx)
        wh = torch.tensor([(base * s * math.sqrt(r), base * s / math.sqrt(r)) for s in scales for r in ratios])
        wh = wh / torch.tensor([W, H])
        cy, cx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
        out.append(torch.cat([centres - wh / 2, centres + wh / 2], -1).reshape(-1, 4))
    return torch.cat(out)


_ANCHOR_CACHE: dict[tuple, torch.Tensor] = {}


def cached_retina_anchors(feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`retina_anchors` (default scales and ratios) built once per feature sizes, image
    size, device and dtype, then shared: callers must not modify the tensor in place."""
    key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), tuple(int(v) for v in image_size),
           torch.device(device), dtype)
    anchors = _ANCHOR_CACHE.get(key)
    if anchors is None:
        if len(_ANCHOR_CACHE) >= 64:  # a sweep over many sizes: start again rather than grow
            _ANCHOR_CACHE.clear()
        anchors = _ANCHOR_CACHE[key] = retina_anchors(key[0], key[1]).to(device=key[2], dtype=dtype)
    return anchors


class SeparableConvBN(nn.Module):
    """Depthwise 3×3 + pointwise 1×1 (bias-free) + BatchNorm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and isinstance(self.bn, nn.Identity):
            raise RuntimeError("this separable conv's BatchNorm is folded (fold_batchnorm): inference (eval mode) only")
        return self.bn(self.pointwise(self.depthwise(x)))

    @torch.no_grad()
    def fold_batchnorm_(self) -> None:
        """Inference (:func:`dynvid.backbones.fuse.fold_batchnorm`): the BatchNorm folded into
        the pointwise conv, which gains a bias; the BatchNorm becomes ``nn.Identity`` and the
        module refuses to train."""
        if isinstance(self.bn, nn.Identity):
            return
        w, b = folded_conv(self.pointwise.weight, self.bn)
        self.pointwise.weight.copy_(w)
        self.pointwise.bias = nn.Parameter(b.clone())
        self.bn = nn.Identity()


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if x.shape[-2:] == size:
        return x
    if x.shape[-2] > size[0]:  # downsample: 3×3 max-pool stride 2, then fit
        x = F.max_pool2d(x, 3, 2, 1)
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="nearest")


class FastNormalizedFusion(nn.Module):
    """``Σ w_i x_i / (ε + Σ w_j)`` with ``w = ReLU(w')`` (Sec. 3.3). Elementwise: it costs no
    MACs under the cost meter's convention, and says so."""

    counts_own_cost = True

    def __init__(self, n: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        record_cost(self, 0)
        return sum(wi * x for wi, x in zip(w, inputs)) / (w.sum() + self.eps)


class _Node(nn.Module):
    """One BiFPN node: fast normalized fusion of ``n`` inputs, SiLU, separable conv."""

    def __init__(self, n: int, channels: int) -> None:
        super().__init__()
        self.fuse = FastNormalizedFusion(n)
        self.conv = SeparableConvBN(channels, channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv(F.silu(self.fuse(inputs)))


class BiFPNLayer(nn.Module):
    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.top_down = nn.ModuleList(_Node(2, channels) for _ in range(levels - 1))
        self.bottom_up = nn.ModuleList(_Node(3 if i < levels - 2 else 2, channels) for i in range(levels - 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        td = [None] * n
        td[-1] = feats[-1]
        for i in range(n - 2, -1, -1):  # P6_td … P3_out
            td[i] = self.top_down[i]([feats[i], _resize(td[i + 1], feats[i].shape[-2:])])
        out = [td[0]]
        for i in range(1, n):  # P4_out … P7_out: input, its top-down node (not at P7), the level below
            below = _resize(out[-1], feats[i].shape[-2:])
            inputs = [feats[i], td[i], below] if i < n - 1 else [feats[i], below]
            out.append(self.bottom_up[i - 1](inputs))
        return out


class BiFPN(nn.Module):
    """BiFPN over backbone features (P3, P4, P5 channels ``in_channels``) → ``levels`` maps of
    ``channels`` (P3 … P7)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 64, layers: int = 3, levels: int = 5) -> None:
        super().__init__()
        if levels < len(in_channels):
            raise ValueError(f"levels={levels} must be >= the {len(in_channels)} backbone levels")
        self.inputs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels))
                                    for c in in_channels)
        self.extra = nn.ModuleList()
        for k in range(levels - len(in_channels)):
            cin = in_channels[-1] if k == 0 else channels
            proj = [nn.Conv2d(cin, channels, 1, bias=False), nn.BatchNorm2d(channels)] if k == 0 else []
            self.extra.append(nn.Sequential(*proj, nn.MaxPool2d(3, 2, 1)))
        self.layers = nn.ModuleList(BiFPNLayer(channels, levels) for _ in range(layers))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feats = [proj(x) for proj, x in zip(self.inputs, features)]
        x = features[-1]
        for k, extra in enumerate(self.extra):
            x = extra(x)
            feats.append(x)
        for layer in self.layers:
            feats = layer(feats)
        return feats


class EfficientDetHead(nn.Module):
    """Class and box nets shared across ``levels`` feature maps: ``(cls (B, N, C), box (B, N, 4))``."""

    def __init__(self, channels: int, num_classes: int, num_anchors: int = 9, repeats: int = 3, levels: int = 5) -> None:
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors

        def net(out: int) -> nn.ModuleDict:
            return nn.ModuleDict({
                "convs": nn.ModuleList(nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                                     nn.Conv2d(channels, channels, 1, bias=False))
                                       for _ in range(repeats)),
                "bns": nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
                                     for _ in range(repeats)),
                "predict": nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                         nn.Conv2d(channels, num_anchors * out, 1)),
            })

        self.cls_net, self.box_net = net(num_classes), net(4)
        with torch.no_grad():
            self.cls_net["predict"][1].bias.fill_(-math.log((1 - 0.01) / 0.01))

    @torch.no_grad()
    def fold_batchnorm_(self) -> None:
        """Inference (:func:`dynvid.backbones.fuse.fold_batchnorm`): each repeat's pointwise
        conv is shared by the levels but its BatchNorm is not, so each level gets its own
        pointwise conv with that level's BatchNorm folded in (``net["folded"][repeat][level]``,
        modules, so the cost meter counts them as it counted the shared one); the per-level
        BatchNorms are dropped and the head refuses to train. Its state dict is then an
        inference copy's, not a training checkpoint."""
        for net in (self.cls_net, self.box_net):
            if "folded" in net:
                continue
            folded = nn.ModuleList()
            for conv, bns in zip(net["convs"], net["bns"]):
                pointwise = conv[1]
                per_level = nn.ModuleList()
                for bn in bns:
                    w, b = folded_conv(pointwise.weight, bn)
                    c = nn.utils.skip_init(nn.Conv2d, pointwise.in_channels, pointwise.out_channels, 1,
                                           device=pointwise.weight.device, dtype=pointwise.weight.dtype)
                    c.weight.copy_(w)
                    c.bias.copy_(b)
                    per_level.append(c)
                folded.append(per_level)
            net["folded"] = folded
            del net["bns"]

    @staticmethod
    def _run(net: nn.ModuleDict, x: torch.Tensor, level: int) -> torch.Tensor:
        if "folded" in net:
            if net.training:
                raise RuntimeError("the head's BatchNorms are folded (fold_batchnorm): inference (eval mode) only")
            for conv, pointwise in zip(net["convs"], net["folded"]):
                x = F.silu(pointwise[level](conv[0](x)))
        else:
            for conv, bns in zip(net["convs"], net["bns"]):
                x = F.silu(bns[level](conv(x)))
        return net["predict"](x)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls, box = [], []
        for level, x in enumerate(feats):
            b = x.shape[0]
            cls.append(self._run(self.cls_net, x, level).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
            box.append(self._run(self.box_net, x, level).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(cls, 1), torch.cat(box, 1)
