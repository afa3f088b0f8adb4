"""The interleaved detector of Looking Fast and Slow (Liu et al., 2019, Sec. 3.1–3.3, Fig. 2).

``D_k = d(m(f_i(I_k), s_{k-1}))``: one of two MobileNetV2 extractors runs on frame ``k``
(f0 = width 1.4 at 320×320, f1 = width 0.35 at 160×160 with its last stride removed, so
both give the same grid), a per-extractor 1×1 projection maps its features into the
memory's input space, the speed-optimized LSTM (:mod:`.memory`) fuses them with the state,
and an SSDLite head (:mod:`dynvid.detection.ssdlite`) predicts boxes from the memory's
output.

Real skipping: :meth:`InterleavedDetector.step` takes the decision as a tensor (one
extractor per video) and runs each extractor only on the rows that chose it. When f1 runs
the memory still produces the frame's output from the kept state, but the state itself is
not updated (Sec. 3.2, ``skip_f1_update``).

Choices:

- The extractors end at the last inverted-residual block (320·width channels): the
  per-extractor projection (1×1 conv + BN + ReLU6 to ``memory_input`` channels) takes the
  place of MobileNetV2's final 1×1 conv, so f1 does not pay for a 1280-channel layer it
  would only project down again. ``lfs.f0_pretrained`` / ``lfs.f1_pretrained`` load
  torchvision MobileNetV2 weights into the trunks (the Task's ``load_pretrained``, through
  :func:`dynvid.backbones.pretrained.load_pretrained` with ``prefix="features."``).
- f1 reads the frame resized (bilinear, antialiased) from f0's resolution inside the model:
  the data pipeline delivers one frame size.
- Score calibration (our addition; the paper is silent): mAP@0.5 over every frame ranks
  all frames' detections together, so f0's and f1's scores must mean the same. Trained from
  scratch on the embedded scenes they do not (f1's are lower for the same precision), and a
  mixed schedule then scores below both extractors alone. ``score_calibration`` holds, per
  extractor and class, an affine map of a detection's score logit (Platt scaling,
  :mod:`.calibration`) that :meth:`InterleavedDetector.calibrate_detections` applies to the
  detections of the frame's extractor after post-processing (the detections kept do not
  change, their scores do); identity until fitted, and for checkpoints saved before it
  existed.
- The cost of a frame is measured per component with the cost meter
  (:meth:`InterleavedDetector.component_macs`) and summed along the path that ran:
  ``MACs(frame) = extractor[a] + memory + head``; amortized MACs are the mean over frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.backbones.mobilenetv2 import ConvBNReLU, MobileNetV2
from dynvid.detection.ssdlite import SSDLiteHead
from dynvid.task import unwrap_model as unwrap
from dynvid.methods.lfs.memory import GroupedConvLSTM
from dynvid.metrics.cost import CostMeter

__all__ = ["InterleavedDetector", "fixed_schedule", "unwrap"]

F0, F1 = 0, 1


def fixed_schedule(num_frames: int, tau: int) -> torch.Tensor:
    """The fixed interleave policy (Sec. 3.1): f0, then f1 ``tau`` times, repeated.
    ``(num_frames,)`` int64 of extractor indices; ``tau = 0`` runs f0 on every frame."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    t = torch.arange(num_frames)
    return torch.where(t % (tau + 1) == 0, F0, F1).long()


def _trunk(width: float, last_stride: int) -> tuple[nn.Sequential, int]:
    net = MobileNetV2(num_classes=1, width_mult=width, last_stride=last_stride)
    trunk = net.features[:-1]  # without the final 1×1 conv: the projection replaces it
    return trunk, trunk[-1].out_channels


class InterleavedDetector(nn.Module):
    """Two extractors, a shared memory and an SSDLite head.

    Args:
        num_classes: object classes (sigmoid scores, no background column).
        f0_width, f1_width: MobileNetV2 width multipliers (1.4 and 0.35).
        f0_size, f1_size: input resolutions (320 and 160); ``f0_size`` must be ``2 * f1_size``.
        memory_input: channels of the per-extractor projections.
        state_channels, groups, state_clip: the memory (320, 4, 6).
        skip_f1_update: keep the last f0 state when f1 runs.
        num_levels: SSD feature maps.
        tau: the fixed interleave ratio ``forward`` uses when given no actions.
    """

    def __init__(self, num_classes: int, f0_width: float = 1.4, f1_width: float = 0.35, f0_size: int = 320,
                 f1_size: int = 160, memory_input: int = 1024, state_channels: int = 320, groups: int = 4,
                 state_clip: float | None = 6.0, skip_f1_update: bool = True, num_levels: int = 4,
                 tau: int = 9) -> None:
        super().__init__()
        if f0_size != 2 * f1_size:
            raise ValueError(f"f0_size must be twice f1_size so the grids align (f1 has one stride less), "
                             f"got f0_size={f0_size}, f1_size={f1_size}")
        if f0_size % 32:
            raise ValueError(f"f0_size must be a multiple of 32 (the extractors' stride), got {f0_size}")
        self.sizes = (f0_size, f1_size)
        self.grid = f0_size // 32
        self.skip_f1_update = skip_f1_update
        self.tau = tau
        f0, c0 = _trunk(f0_width, 2)
        f1, c1 = _trunk(f1_width, 1)
        self.extractors = nn.ModuleList([f0, f1])
        self.projections = nn.ModuleList([ConvBNReLU(c0, memory_input, kernel=1),
                                          ConvBNReLU(c1, memory_input, kernel=1)])
        self.memory = GroupedConvLSTM(memory_input, state_channels, groups, clip=state_clip)
        self.head = SSDLiteHead(self.memory.out_channels, num_classes, num_levels)
        self._anchors: dict[tuple, torch.Tensor] = {}
        # [extractor, (scale, bias), class]: calibrated score logit = scale * logit + bias (module docstring)
        self.register_buffer("score_calibration", self.identity_calibration(num_classes))

    @staticmethod
    def identity_calibration(num_classes: int) -> torch.Tensor:
        """The ``score_calibration`` that changes nothing: scale 1, bias 0 for both extractors."""
        return torch.stack([torch.ones(2, num_classes), torch.zeros(2, num_classes)], 1)

    @property
    def calibrated(self) -> bool:
        """Whether ``score_calibration`` was fitted (is not the identity)."""
        ident = self.identity_calibration(self.score_calibration.shape[-1]).to(self.score_calibration)
        return not torch.equal(self.score_calibration, ident)

    def calibrate_detections(self, detections: dict, extractor: int) -> dict:
        """One frame's post-processed ``detections`` (``boxes``, ``scores``, ``labels``, best
        first) from ``extractor``, with each score ``s`` of class ``k`` mapped to
        ``σ(scale·logit(s) + bias)`` of that extractor and class, best first again. The
        detections kept are the same: only their scores, on which mAP ranks every frame's
        detections together, move to the common scale."""
        scores = detections["scores"]
        if scores.numel() == 0:
            return detections
        cal = self.score_calibration[int(extractor)].to(scores.device, torch.float32)
        labels = detections["labels"].to(scores.device)
        z = torch.logit(scores.float().clamp(1e-7, 1 - 1e-7))
        new = torch.sigmoid(z * cal[0, labels] + cal[1, labels]).to(scores.dtype)
        order = torch.argsort(new, descending=True, stable=True)
        return {**{k: (v[order] if torch.is_tensor(v) and len(v) == len(scores) else v)
                   for k, v in detections.items()}, "scores": new[order]}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint saved before score calibration existed loads uncalibrated (the identity)
        key = prefix + "score_calibration"
        if key not in state_dict:
            state_dict[key] = self.identity_calibration(self.score_calibration.shape[-1]).to(self.score_calibration)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- one frame ------------------------------------------------------------------------

    def extract(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Projected features ``(B, memory_input, g, g)``; row ``b`` runs extractor ``actions[b]``
        only (the other extractor is not computed for it)."""
        if frames.dim() != 4:
            raise ValueError(f"expected frames (B, 3, H, W), got shape {tuple(frames.shape)}")
        if tuple(frames.shape[-2:]) != (self.sizes[0],) * 2:
            frames = F.interpolate(frames, size=(self.sizes[0],) * 2, mode="bilinear", align_corners=False,
                                   antialias=True)
        if actions.device != frames.device:  # rows index the frames: a CPU schedule with GPU frames
            actions = actions.to(frames.device)
        out = None
        for i in (F0, F1):
            rows = (actions == i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            x = frames if rows.numel() == len(frames) else frames.index_select(0, rows)
            if i == F1:
                x = F.interpolate(x, size=(self.sizes[1],) * 2, mode="bilinear", align_corners=False, antialias=True)
            y = self.projections[i](self.extractors[i](x))
            if rows.numel() == len(frames):
                return y
            if out is None:
                out = y.new_zeros(len(frames), *y.shape[1:])
            out = out.index_copy(0, rows, y)
        return out

    def step(self, frames: torch.Tensor, actions: torch.Tensor | int, state=None):
        """One frame per video: ``(cls_logits, box_codes, anchors, kept_state, candidate_state)``.

        ``candidate_state`` is the memory's new ``(c, h)`` for every row (Algorithm 1's ``s_t^i``);
        ``kept_state`` is what the next frame starts from: the candidate where f0 ran, the
        previous state where f1 ran (unless ``skip_f1_update`` is off).
        """
        if isinstance(actions, int):
            actions = torch.full((len(frames),), actions, dtype=torch.long, device=frames.device)
        elif actions.device != frames.device:  # the skip rule below mixes them with the states
            actions = actions.to(frames.device)
        x = self.extract(frames, actions)
        if state is None:
            state = self.memory.init_state(len(frames), x.shape[-2], x.shape[-1], like=x)
        out, candidate = self.memory(x, state)
        if self.skip_f1_update:
            keep = (actions == F0).view(-1, 1, 1, 1)
            kept = tuple(torch.where(keep, new, old) for new, old in zip(candidate, state))
        else:
            kept = candidate
        cls_logits, box_codes, sizes = self.head(out)
        return cls_logits, box_codes, self.anchors(sizes, cls_logits.device), kept, candidate

    def anchors(self, sizes: Sequence[tuple[int, int]], device: torch.device | None = None) -> torch.Tensor:
        """Anchors of feature maps of ``sizes`` on ``device`` (None: the model's, which is where
        the head's outputs are decoded against them), cached per sizes and device."""
        if device is None:
            device = next(self.head.parameters()).device
        key = (tuple(sizes), str(device))
        if key not in self._anchors:
            self._anchors[key] = self.head.anchors(list(sizes)).to(device)
        return self._anchors[key]

    def forward(self, frames: torch.Tensor, actions: torch.Tensor | None = None):
        """Unrolled over a clip: ``frames (B, T, 3, H, W)``, ``actions (T,)`` or ``(B, T)``
        (None: the fixed schedule of ``self.tau``). Returns ``(cls_logits (B, T, N, C), box_codes (B, T, N, 4), anchors (N, 4))``."""
        if frames.dim() != 5:
            raise ValueError(f"expected frames (B, T, 3, H, W), got shape {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        if actions is None:
            actions = fixed_schedule(T, self.tau).to(frames.device)
        if actions.dim() == 1:
            actions = actions.unsqueeze(0).expand(B, T)
        state, cls_out, box_out, anchors = None, [], [], None
        for t in range(T):
            cls_logits, box_codes, anchors, state, _ = self.step(frames[:, t], actions[:, t], state)
            cls_out.append(cls_logits)
            box_out.append(box_codes)
        return torch.stack(cls_out, 1), torch.stack(box_out, 1), anchors

    # ---- cost -----------------------------------------------------------------------------

    @torch.no_grad()
    def component_macs(self) -> dict[str, float]:
        """MACs of one frame through each component, counted by the cost meter:
        ``{"f0", "f1", "memory", "head"}`` (extractors include their projection)."""
        was = self.training
        self.eval()
        p = next(self.parameters())
        frame = torch.zeros(1, 3, self.sizes[0], self.sizes[0], dtype=p.dtype, device=p.device)
        out = {}
        for i, name in ((F0, "f0"), (F1, "f1")):
            with CostMeter(self) as meter:
                x = self.extract(frame, torch.tensor([i], device=p.device))
            out[name] = float(meter.per_sample_macs.sum())
        state = self.memory.init_state(1, x.shape[-2], x.shape[-1], like=x)
        with CostMeter(self.memory) as meter:
            m, _ = self.memory(x, state)
        out["memory"] = float(meter.per_sample_macs.sum())
        with CostMeter(self.head) as meter:
            self.head(m)
        out["head"] = float(meter.per_sample_macs.sum())
        self.train(was)
        return out

    def frame_macs(self, actions: torch.Tensor, costs: dict[str, float] | None = None) -> torch.Tensor:
        """MACs of each frame of an action sequence (any shape): the extractor that ran plus
        the memory and the head, which run on every frame."""
        costs = costs or self.component_macs()
        shared = costs["memory"] + costs["head"]
        return torch.where(actions == F0, costs["f0"] + shared, costs["f1"] + shared).double()
