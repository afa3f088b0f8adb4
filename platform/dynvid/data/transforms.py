"""Spatial transforms for video clips, as pure functions plus two thin pipelines.

Frames travel as uint8 tensors ``(T, H, W, 3)`` (the decoder's layout) through the
spatial ops and leave as float ``(3, T, H, W)``, normalized, which is what 3D CNNs take.

Training (VA-RED² thesis, Appendix A.2: "location jittering, horizontal flipping, corner
cropping, and scale jittering ... used in TSN"): :class:`TrainClipTransform` resizes the
short side to ``short_side``, then takes TSN's multi-scale crop — crop height and width
drawn independently from ``scales`` × short side (at most one scale step apart), placed
at one of the four corners or the centre ("corner cropping") or anywhere
("location jittering", with probability ``jitter_prob``) — resizes it to ``crop_size``
and flips horizontally with probability 0.5. The same parameters apply to every frame of
the clip, so motion is preserved.

Testing (thesis Sec. 4.3, K-LeftCenterRight): :class:`EvalViewsTransform` resizes the
short side to ``short_side`` and takes the left, centre and right ``crop_size`` squares
along the longer spatial axis (top/centre/bottom for portrait video). With
``num_crops=1`` it takes the centre crop only (the single-view "clip-1" protocol).

Normalization defaults to the Kinetics mean/std of torchvision's video models, so their
checkpoints see the statistics they were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "resize",
    "resize_short_side",
    "crop",
    "hflip",
    "left_center_right_crops",
    "multiscale_crop_params",
    "to_normalized_tensor",
    "TrainClipTransform",
    "EvalViewsTransform",
]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8 (T, H, W, C) frames to ``size`` = (h, w)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize so that min(H, W) == ``short_side``, keeping the aspect ratio."""
    h, w = frames.shape[1:3]
    if h <= w:
        size = (short_side, max(1, int(round(w * short_side / h))))
    else:
        size = (max(1, int(round(h * short_side / w))), short_side)
    return resize(frames, size)


def crop(frames: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    h, w = frames.shape[1:3]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"crop ({top}, {left}, {height}, {width}) outside frame {h}x{w}")
    return frames[:, top : top + height, left : left + width]


def hflip(frames: torch.Tensor) -> torch.Tensor:
    return frames.flip(2)


def left_center_right_crops(frames: torch.Tensor, size: int, num_crops: int = 3) -> list[torch.Tensor]:
    """``num_crops`` (1 or 3) square crops along the longer spatial axis."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    h, w = frames.shape[1:3]
    if min(h, w) < size:
        raise ValueError(f"frame {h}x{w} smaller than crop {size}")
    top_c, left_c = (h - size) // 2, (w - size) // 2
    if num_crops == 1:
        return [crop(frames, top_c, left_c, size, size)]
    if w >= h:
        return [crop(frames, top_c, left, size, size) for left in (0, left_c, w - size)]
    return [crop(frames, top, left_c, size, size) for top in (0, top_c, h - size)]


def multiscale_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scales: tuple[float, ...] = TSN_SCALES,
    max_distort: int = 1,
    jitter_prob: float = 0.0,
) -> tuple[int, int, int, int]:
    """TSN's multi-scale crop: (top, left, crop_h, crop_w) within a ``height`` × ``width`` frame."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    pairs = [(ch, cw) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < jitter_prob:
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
    else:  # four corners or the centre
        dh, dw = height - crop_h, width - crop_w
        top, left = [(0, 0), (0, dw), (dh, 0), (dh, dw), (dh // 2, dw // 2)][int(rng.integers(5))]
    return top, left, crop_h, crop_w


def to_normalized_tensor(
    frames: torch.Tensor, mean: tuple[float, ...] = KINETICS_MEAN, std: tuple[float, ...] = KINETICS_STD
) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (C, T, H, W), scaled to [0, 1] then normalized."""
    x = frames.permute(3, 0, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1, 1)
    return x.sub_(m).div_(s)


@dataclass
class TrainClipTransform:
    """Scale jitter + corner/multi-scale crop + flip (TSN augmentation, thesis App. A.2).

    Attributes:
        crop_size: side of the square network input.
        short_side: frames are resized so their short side has this length first
            (decoders may do it while converting, see ``read_clip(short_side=...)``).
        scales: crop sizes as fractions of the short side (TSN: 1, .875, .75, .66).
        jitter_prob: probability of a uniformly random crop position instead of a
            corner/centre one.
        flip_prob: horizontal flip probability.
    """

    crop_size: int = 112
    short_side: int = 128
    scales: tuple[float, ...] = TSN_SCALES
    jitter_prob: float = 0.5
    flip_prob: float = 0.5
    mean: tuple[float, ...] = KINETICS_MEAN
    std: tuple[float, ...] = KINETICS_STD

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if min(frames.shape[1:3]) != self.short_side:
            frames = resize_short_side(frames, self.short_side)
        top, left, ch, cw = multiscale_crop_params(
            frames.shape[1], frames.shape[2], rng, self.scales, jitter_prob=self.jitter_prob
        )
        frames = resize(crop(frames, top, left, ch, cw), (self.crop_size, self.crop_size))
        if rng.random() < self.flip_prob:
            frames = hflip(frames)
        return to_normalized_tensor(frames, self.mean, self.std)


@dataclass
class EvalViewsTransform:
    """Short-side resize + left/centre/right crops (K-LeftCenterRight, thesis Sec. 4.3).

    Returns float (num_crops, C, T, crop, crop).
    """

    crop_size: int = 112
    short_side: int = 112
    num_crops: int = 3
    mean: tuple[float, ...] = KINETICS_MEAN
    std: tuple[float, ...] = KINETICS_STD

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if min(frames.shape[1:3]) != self.short_side:
            frames = resize_short_side(frames, self.short_side)
        views = left_center_right_crops(frames, self.crop_size, self.num_crops)
        return torch.stack([to_normalized_tensor(v, self.mean, self.std) for v in views])
