"""ResQ's evaluation protocol (Sec. 5): whole videos, a keyframe every T frames, mIoU and BOPs
averaged over every frame; PTQ calibration of a quantized copy; Dynamic-ResQ bit-width maps.

- :func:`evaluate_videos`: mIoU over the confusion matrix of every valid frame and BOPs per
  frame (avg / min / max, from the cost meter over the path that ran) of a model run as
  ``float``, ``frame`` or ``residual`` (ResQ / Dynamic-ResQ) over videos ``(B, T, 3, H, W)``;
  for Dynamic-ResQ also the share of residual pixels given each bit-width (all layers) and the
  share of residual pixels that are exactly zero in every channel (which any policy skips for free).
  "Split each video into sequences of length T whose first frame is a keyframe" (Sec. 5.1) is
  the same as a keyframe at every ``t % T == 0`` of the whole video, which is what runs.
- :func:`calibration_sequences`: the c = 64 calibration frames as clips of T frames from the
  training split (choice: c counts frames, keyframes and residual frames together).
- :func:`quantized_copy`: a wrapped copy of a float (or QAT) network at a bit configuration,
  PTQ-calibrated unless its QAT scales were trained at those bits.
- :func:`bit_width_maps` / :func:`save_bit_width_figure`: Fig. 6, the policy's per-pixel
  decisions at one layer for a keyframe and the residual frames after it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from dynvid.task import unwrap_model
from dynvid.methods.resq.layers import QuantConv2d, parse_bits
from dynvid.methods.resq.wrap import calibrate_model, configure, quant_layers, reset_state, set_mode, wrap_model
from dynvid.metrics.cost import CostMeter
from dynvid.metrics.detection import gather_from_ranks
from dynvid.metrics.segmentation import ConfusionMatrix, iou_per_class, mean_iou

__all__ = ["SCHEMES", "bit_width_maps", "calibration_sequences", "evaluate_videos", "quantized_copy",
           "save_bit_width_figure"]

SCHEMES = ("float", "frame", "resq")


def _is_wrapped(model: nn.Module) -> bool:
    return any(isinstance(m, QuantConv2d) for m in model.modules())


@torch.no_grad()
def evaluate_videos(model: nn.Module, loader: Iterable, scheme: str, period: int, num_classes: int,
                    ignore_index: int = 255) -> dict[str, float]:
    """mIoU and GBOPs / GMACs per frame of ``scheme`` over the videos of ``loader`` (batches
    ``(frames (B, T, 3, H, W), labels (B, T, H, W), meta)`` with ``meta["valid"] (B, T)``, as
    :func:`dynvid.data.segmentation.collate_segmentation` makes them). Under
    ``torch.distributed`` every rank's frames are scored together."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    m = unwrap_model(model)
    wrapped = _is_wrapped(m)
    if scheme != "float" and not wrapped:
        raise ValueError(f"scheme {scheme!r} needs a quantized model (quantized_copy / wrap_model)")
    was = m.training
    m.eval()
    layers = quant_layers(m) if wrapped else []
    for layer in layers:
        layer.reset_statistics()
    # counted on the labels' device, read back once after the loop: the loader may deliver the
    # labels on the GPU (Ray's prepare_data_loader) or on the CPU (a sweep), and a per-frame
    # .cpu() of the predictions was both a host sync and, with CUDA labels, a device mismatch
    confusion = ConfusionMatrix(num_classes, ignore_index)
    bops, macs, videos = [], [], 0
    try:
        device = next(m.parameters()).device
        for frames, labels, meta in loader:
            valid = meta["valid"].cpu()  # indexes the cost meter's per-sample counts, which are on the host
            videos += frames.shape[0]
            for t in range(frames.shape[1]):
                if wrapped:
                    key = t % period == 0
                    set_mode(m, "float" if scheme == "float" else "key" if key else
                             ("residual" if scheme == "resq" else "frame"))
                with CostMeter(m) as meter:
                    logits = m(frames[:, t].to(device, non_blocking=True))
                confusion.update(logits.argmax(1), labels[:, t])
                v = valid[:, t]
                bops.append(meter.per_sample_bops[v])
                macs.append(meter.per_sample_macs[v])
    finally:
        m.train(was)
        if wrapped:
            reset_state(m)
    counts: dict[int, int] = {}
    zeros = 0
    for layer in layers:
        layer_counts, layer_zeros = layer.statistics()
        for b, c in layer_counts.items():
            counts[b] = counts.get(b, 0) + c
        zeros += layer_zeros
    cm = confusion.compute()  # on the host: gathered across ranks by pickling
    empty = torch.zeros(0, dtype=torch.float64)  # a rank whose shard is empty still joins the gather
    bops_t, macs_t = (torch.cat(bops) if bops else empty), (torch.cat(macs) if macs else empty)
    gathered = gather_from_ranks((cm, bops_t, macs_t, videos, counts, zeros))
    if gathered is not None:
        cm = sum(g[0] for g in gathered)
        bops_t, macs_t = torch.cat([g[1] for g in gathered]), torch.cat([g[2] for g in gathered])
        videos = sum(g[3] for g in gathered)
        counts = {b: sum(g[4].get(b, 0) for g in gathered) for b in set().union(*(g[4] for g in gathered))}
        zeros = sum(g[5] for g in gathered)
    if len(bops_t) == 0:
        raise ValueError("evaluate_videos: no valid frame to score (an empty validation split?)")
    g = bops_t / 1e9
    out = {"mIoU": mean_iou(cm), "gbops_avg": float(g.mean()), "gbops_min": float(g.min()),
           "gbops_max": float(g.max()), "gmacs_avg": float(macs_t.mean() / 1e9), "frames": float(len(g)),
           "videos": float(videos), "iou": [None if math.isnan(x) else x for x in iou_per_class(cm).tolist()]}
    if counts:  # Dynamic-ResQ: share of residual pixels (over every layer and step) at each bit-width
        total = max(1, sum(counts.values()))
        out["bit_shares"] = {str(b): c / total for b, c in sorted(counts.items())}
        out["zero_residual_share"] = zeros / total
    return out


def calibration_sequences(dataset, samples: int, period: int, batch: int = 8) -> list[torch.Tensor]:
    """``samples`` calibration frames as clips of ``period`` frames, each ``(T, B, 3, H, W)``
    (items 0, 1, … of ``dataset``, whose items are clips of at least ``period`` frames)."""
    if samples < 1:
        raise ValueError(f"resq.calib_samples must be >= 1, got {samples}")
    clips = []
    n = math.ceil(samples / period)
    if len(dataset) == 0:
        raise ValueError("no calibration data: the training split is empty")
    for i in range(n):
        frames = dataset[i % len(dataset)]["frames"]
        if frames.shape[0] < period:
            raise ValueError(f"calibration clips hold {frames.shape[0]} frames, fewer than the period {period}")
        clips.append(frames[:period])
    return [torch.stack(clips[i:i + batch], 1) for i in range(0, len(clips), batch)]


def quantized_copy(model: nn.Module, bits: str, calibration: list[torch.Tensor], period: int,
                   per_channel: bool = False, tau: float = 0.0003, candidates: int = 20) -> nn.Module:
    """A copy of ``model`` quantized at ``bits`` (paper notation), in eval mode. A float network is
    wrapped; a QAT network keeps its trained scales when ``bits`` are the ones it trained at.
    Every other quantizer is PTQ-calibrated (Eq. 7 and 8) on ``calibration``."""
    parse_bits(bits)  # a bad configuration fails before the copy
    m = unwrap_model(model)
    if _is_wrapped(m):
        reset_state(m)
    q = copy.deepcopy(m).eval()
    if not _is_wrapped(q):
        wrap_model(q, per_channel=per_channel)
    configure(q, bits, per_channel, tau)
    if not all(layer.qat_ready for layer in quant_layers(q)):
        device = next(q.parameters()).device
        calibrate_model(q, [c.to(device) for c in calibration], period, candidates)
    return q


@torch.no_grad()
def bit_width_maps(model: nn.Module, layer: str, video: torch.Tensor) -> list[np.ndarray | None]:
    """Fig. 6: per frame of ``video (T, 3, H, W)`` (the first a keyframe, the rest residuals
    w.r.t. it) the bits Dynamic-ResQ gave each input pixel of ``layer`` (None for the keyframe)."""
    m = unwrap_model(model).eval()
    target = dict(m.named_modules()).get(layer)
    if not isinstance(target, QuantConv2d) or target.res_pool is None:
        names = [n for n, mod in m.named_modules() if isinstance(mod, QuantConv2d)]
        raise ValueError(f"resq.map_layer {layer!r} is not a Dynamic-ResQ layer of the model; layers: "
                         f"{', '.join(names[:8])}, …")
    maps: list[np.ndarray | None] = []
    target.record_bits = True
    try:
        device = next(m.parameters()).device
        for t, frame in enumerate(video):
            set_mode(m, "key" if t == 0 else "residual")
            m(frame[None].to(device))
            maps.append(None if t == 0 else target.last_bits[0].numpy())
    finally:
        target.record_bits, target.last_bits = False, None
    return maps


# Fig. 6's colour code: dark blue, light blue, yellow from the lowest to the highest bits (a
# larger pool continues with orange and red)
_PALETTE = np.array([[20, 40, 120], [90, 170, 230], [250, 220, 40], [240, 120, 30], [200, 30, 30]], np.uint8)


def save_bit_width_figure(video: torch.Tensor, maps: list[np.ndarray | None], pool: tuple[int, ...],
                          path: str) -> str:
    """A PNG strip: the frames on top, their bit-width maps below (the keyframe's place holds the
    legend), colour by the pool's bit-widths from low to high (Fig. 6)."""
    from PIL import Image, ImageDraw

    if len(pool) > len(_PALETTE):
        raise ValueError(f"bit-width maps colour at most {len(_PALETTE)} bit-widths, got {list(pool)}")
    frames = (video.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)
    T, H, W = frames.shape[:3]
    lut = {b: _PALETTE[i] for i, b in enumerate(pool)}
    canvas = np.full((2 * H + 12, T * (W + 4), 3), 255, np.uint8)
    for t in range(T):
        x = t * (W + 4)
        canvas[:H, x:x + W] = frames[t]
        if maps[t] is not None:
            bits = maps[t]
            rgb = np.zeros(bits.shape + (3,), np.uint8)
            for b, c in lut.items():
                rgb[bits == b] = c
            canvas[H + 4:2 * H + 4, x:x + W] = np.array(Image.fromarray(rgb).resize((W, H), Image.NEAREST))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, b in enumerate(pool):  # legend under the keyframe: a swatch and its bit-width
        y = H + 8 + i * 12
        if y + 10 > 2 * H + 4:
            break
        draw.rectangle([4, y, 12, y + 8], fill=tuple(int(v) for v in lut[b]))
        draw.text((16, y - 1), f"A{b}", fill=(0, 0, 0))
    draw.text((16, 2 * H - 8), "key", fill=(0, 0, 0))
    image.save(path)
    return path
