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

from dynvid.backbones.fuse import bn_affine, folded_conv, tensor_stamp
from dynvid.metrics.cost import record_cost

__all__ = ["BiFPN", "CanvasAffine", "CanvasLayout", "EfficientDetHead", "cached_retina_anchors", "canvas_layout",
           "retina_anchors"]

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
        self.folded = False
        self._frozen: tuple[tuple, tuple[float, ...]] | None = None  # (weights' stamp, normalized weights)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        record_cost(self, 0)
        if self.folded:
            if self.training:
                raise RuntimeError("this fusion's weights are folded (fold_batchnorm): inference (eval mode) only")
            frozen = self._normalized()
            out = inputs[0] * frozen[0]  # a new tensor, even for a weight of 1
            for wi, x in zip(frozen[1:], inputs[1:]):
                out.add_(x, alpha=wi)
            return out
        w = F.relu(self.weights)
        return sum(wi * x for wi, x in zip(w, inputs)) / (w.sum() + self.eps)

    @torch.no_grad()
    def fold_batchnorm_(self) -> None:
        """Inference (:func:`dynvid.backbones.fuse.fold_batchnorm`, which folds every constant
        of an inference copy): the normalized weights ``ReLU(w_i) / (ε + Σ ReLU(w_j))`` are
        constants once training ends, so they are computed once, read to the host as floats,
        and a node's fusion is one multiply and an in-place add per further input instead of
        about ten small operations (the ReLU, the unbinding, the products, the sums and the
        division). Equal to the training-mode fusion up to float rounding (a test); weights
        loaded afterwards are read again on the next frame (their stamp changed)."""
        self.folded = True
        self._normalized()

    def _normalized(self) -> tuple[float, ...]:
        stamp = tensor_stamp(self.weights)
        if self._frozen is None or self._frozen[0] != stamp:
            with torch.no_grad():
                w = F.relu(self.weights)
                self._frozen = (stamp, tuple((w / (w.sum() + self.eps)).tolist()))  # one read to the host
        return self._frozen[1]


class _Node(nn.Module):
    """One BiFPN node: fast normalized fusion of ``n`` inputs, SiLU, separable conv."""

    def __init__(self, n: int, channels: int) -> None:
        super().__init__()
        self.fuse = FastNormalizedFusion(n)
        self.conv = SeparableConvBN(channels, channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = self.fuse(inputs)
        # a folded fusion returns a tensor of its own: the SiLU may overwrite it
        return self.conv(F.silu(fused, inplace=self.fuse.folded))


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
        """Inference (:func:`dynvid.backbones.fuse.fold_batchnorm`). Each repeat's pointwise conv
        is shared by the levels, its BatchNorm is not, and at batch 1 on a CPU core the head's
        time follows its number of operations more than its MACs (5 levels × 2 nets × 11 small
        convolutions and SiLUs, most on maps of 2×2 to 12×12). So:

        - the first (largest) level runs on its own, each repeat's pointwise conv with that
          level's BatchNorm folded in (``net["folded"][repeat]``);
        - the smaller levels run in one pass over a **canvas** (:func:`canvas_layout`: their
          maps packed with zero rows and columns between them). Each repeat is one depthwise
          conv, the shared pointwise conv, the levels' BatchNorms as one affine map
          (``net["affine"][repeat]``, :class:`CanvasAffine`: each level's scale and shift spread
          over its pixels and zero on the gaps, so the gaps stay zero through the SiLU and act
          as each level's zero padding for the next 3×3 conv) and one SiLU; the outputs are
          gathered back from the levels' pixels.

        The largest level stays off the canvas because there the extra affine pass over the
        map costs more than the operations it saves (measured with all five levels on a
        canvas: 2.75 → 1.45 ms at 192², batch 1, but 32 → 46 ms at 512², batch 4). Equal to
        the training-mode head up to float rounding for finite inputs (a test): the gaps are
        zeroed by a product, so an ``inf`` at a level's edge would leave NaN on its gap and
        reach its neighbours, where the per-level head pads with zeros. The cost meter counts
        what runs, the canvas's gap pixels included (at 192², 35 gap pixels beside the head's
        769: +4.6% of its MACs). The per-level BatchNorms are dropped and the head refuses to
        train; its state dict is then an inference copy's, not a training checkpoint."""
        for net in (self.cls_net, self.box_net):
            if "affine" in net:
                continue
            folded, affine = nn.ModuleList(), nn.ModuleList()
            for conv, bns in zip(net["convs"], net["bns"]):
                pointwise = conv[1]
                w, b = folded_conv(pointwise.weight, bns[0])
                c = nn.utils.skip_init(nn.Conv2d, pointwise.in_channels, pointwise.out_channels, 1,
                                       device=pointwise.weight.device, dtype=pointwise.weight.dtype)
                c.weight.copy_(w)
                c.bias.copy_(b)
                folded.append(c)
                pairs = [bn_affine(bn) for bn in bns[1:]]
                affine.append(CanvasAffine(torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs]))
                              if pairs else nn.Identity())
            net["folded"], net["affine"] = folded, affine
            del net["bns"]

    @staticmethod
    def _run(net: nn.ModuleDict, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, bns in zip(net["convs"], net["bns"]):
            x = F.silu(bns[level](conv(x)))
        return net["predict"](x)

    def _rows(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, A·out, H, W)`` → ``(B, H·W·A, out)``, pixel by pixel row-major, then anchor by anchor."""
        b, c = y.shape[:2]
        return y.permute(0, 2, 3, 1).reshape(b, -1, c // self.num_anchors)

    def _run_folded(self, net: nn.ModuleDict, first: torch.Tensor, canvas: torch.Tensor | None,
                    layout: CanvasLayout | None) -> torch.Tensor:
        """A folded net (:meth:`fold_batchnorm_`): the first level, then the canvas of the others."""
        if net.training:
            raise RuntimeError("the head's BatchNorms are folded (fold_batchnorm): inference (eval mode) only")
        x = first
        for conv, pointwise in zip(net["convs"], net["folded"]):
            x = F.silu(pointwise(conv[0](x)), inplace=True)
        out = self._rows(net["predict"](x))
        if canvas is None:
            return out
        x = canvas
        for conv, affine in zip(net["convs"], net["affine"]):
            x = F.silu(affine(conv(x), layout), inplace=True)
        y = net["predict"](x)
        b, c = y.shape[:2]
        rest = y.permute(0, 2, 3, 1).reshape(b, -1, c).index_select(1, layout.index_on(y.device))
        return torch.cat([out, rest.reshape(b, -1, c // self.num_anchors)], 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "affine" in self.cls_net:  # folded: the first level alone, the others on one canvas
            layout = canvas_layout([tuple(f.shape[-2:]) for f in feats[1:]]) if len(feats) > 1 else None
            canvas = layout.paint(feats[1:]) if layout is not None else None
            return tuple(self._run_folded(net, feats[0], canvas, layout) for net in (self.cls_net, self.box_net))
        cls, box = [], []
        for level, x in enumerate(feats):
            cls.append(self._rows(self._run(self.cls_net, x, level)))
            box.append(self._rows(self._run(self.box_net, x, level)))
        return torch.cat(cls, 1), torch.cat(box, 1)


class CanvasLayout:
    """Where each level's map lies on a canvas (:func:`canvas_layout`): ``size`` (H, W),
    ``origins`` [(top, left)] per level, ``index``: the canvas pixels (row-major) of every
    level's pixels, level by level, each row-major (the order the head's outputs take)."""

    def __init__(self, sizes: Sequence[tuple[int, int]], size: tuple[int, int], origins: Sequence[tuple[int, int]]):
        self.sizes, self.size, self.origins = tuple(sizes), size, tuple(origins)
        W = size[1]
        self.index = torch.cat([((top + torch.arange(h)).view(-1, 1) * W + left + torch.arange(w)).reshape(-1)
                                for (h, w), (top, left) in zip(sizes, origins)])
        self._index_on: dict[torch.device, torch.Tensor] = {}

    def index_on(self, device: torch.device) -> torch.Tensor:
        """:attr:`index` on ``device``, copied there once (not on every frame)."""
        if device not in self._index_on:
            self._index_on[device] = self.index.to(device)
        return self._index_on[device]

    def paint(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The maps ``(B, C, H_k, W_k)`` on a zero canvas ``(B, C, H, W)`` in the first map's layout."""
        first = maps[0]
        canvas = first.new_zeros(*first.shape[:2], *self.size).contiguous(memory_format=_memory_format(first))
        for m, (h, w), (top, left) in zip(maps, self.sizes, self.origins):
            canvas[:, :, top:top + h, left:left + w] = m
        return canvas


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last when ``x`` is laid out so, else the default layout."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


_LAYOUTS: dict[tuple, CanvasLayout] = {}


def canvas_layout(sizes: Sequence[tuple[int, int]]) -> CanvasLayout:
    """Levels' maps (largest first, as a feature pyramid's) packed on one canvas with at least
    one zero row or column between any two: the first at the top left, the others in shelves
    (rows of maps side by side, left to right) in a column as wide as the widest of them, right
    of the first. Cached per list of sizes."""
    key = tuple((int(h), int(w)) for h, w in sizes)
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    if len(_LAYOUTS) >= 64:  # a sweep over many sizes: start again rather than grow
        _LAYOUTS.clear()
    (h0, w0), rest = key[0], key[1:]
    origins = [(0, 0)]
    column = w0 + 1
    width = max((w for _, w in rest), default=0)
    top = left = shelf = 0
    for h, w in rest:
        if left and left + w > width:  # next shelf
            top, left, shelf = top + shelf + 1, 0, 0
        origins.append((top, column + left))
        left, shelf = left + w + 1, max(shelf, h)
    H = max(h0, max((t + h for (t, _), (h, _) in zip(origins[1:], rest)), default=0))
    layout = CanvasLayout(key, (H, column + width if rest else w0), origins)
    _LAYOUTS[key] = layout
    return layout


class CanvasAffine(nn.Module):
    """Level ``k``'s channel affine map ``scale[k] · x + shift[k]`` (a folded per-level
    BatchNorm) on a canvas (:func:`canvas_layout`): one ``addcmul`` with the scale and shift
    spread over each level's pixels and zero on the gaps, built once per layout. Elementwise:
    no MACs under the cost meter's convention, and it says so."""

    counts_own_cost = True

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        if scale.shape != shift.shape or scale.dim() != 2:
            raise ValueError(f"scale and shift are (levels, channels), got {tuple(scale.shape)} and "
                             f"{tuple(shift.shape)}")
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", shift.clone())
        self._spread: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, y: torch.Tensor, layout: CanvasLayout) -> torch.Tensor:
        n = len(layout.sizes)
        if n > len(self.scale):  # fewer levels than the head has run on its first ones, as unfolded
            raise ValueError(f"{len(self.scale)} levels' affine maps, a canvas of {n} levels")
        record_cost(self, 0)
        memory_format = _memory_format(y)
        key = (layout.sizes, y.device, y.dtype, memory_format, tensor_stamp(self.scale, self.shift))
        spread = self._spread.get(key)
        if spread is None:  # each level's vector over its pixels, zero on the gaps
            spread = tuple(layout.paint([v.view(1, -1, 1, 1).expand(1, -1, h, w) for v, (h, w) in zip(t, layout.sizes)])
                           .to(y.device, y.dtype).contiguous(memory_format=memory_format)
                           for t in (self.scale, self.shift))
            self._spread = {key: spread}  # one resolution's layout at a time
        return torch.addcmul(spread[1], y, spread[0])

    def _apply(self, fn, *args, **kwargs):
        self._spread = {}  # .to() / .half() move or convert the buffers
        return super()._apply(fn, *args, **kwargs)
