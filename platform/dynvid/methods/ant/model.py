"""The ANT detector (Sec. 3.2, Fig. 2): an EfficientNet-B0 width supernet, BiFPN and head, with
per-stage fusion modules and dynamic gates for non-key frames.

- **Key frame**: the whole network at full width; the stage-level features (the outputs of
  the MBConv1 stage and of the first five MBConv6 stages, the inputs of the six elastic
  stages) are stored.
- **Non-key frame**: the stem (frozen in stage 2) and the MBConv1 stage run; before each
  elastic stage ``s`` the fusion module merges the stored key-frame features with the
  current ones, the gate scores the widths of stage ``s`` from the fused map, and stage
  ``s`` runs on the fused map at the chosen width. Samples are grouped by their choice and
  each group runs only its width (real skipping); in training the output of a group is
  multiplied by its straight-through one-hot entry, so the Gumbel-softmax gradient reaches
  the gate while only the chosen width is computed.
- The neck and head are shared by all frames (P3, P4, P5 = the outputs of features 3, 5, 7).

Choices: the gate of stage ``s`` reads the fused input of that stage (the paper: "fused
stage-level features … decide the stage width"); the neck reads each stage's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dynvid.backbones.efficientnet import RATIOS, EfficientNetSupernet
from dynvid.detection.efficientdet import BiFPN, EfficientDetHead
from dynvid.methods.ant.modules import DynamicGate, FusionModule

__all__ = ["ANTDetector"]

ELASTIC = range(2, 8)  # features[2..7]: the six MBConv6 stages
NECK_LEVELS = (3, 5, 7)


class ANTDetector(nn.Module):
    """Args:
        num_classes: object classes.
        fpn_channels, fpn_layers, head_repeats: EfficientDet sizes (D0: 64, 3, 3; D0+ ×1.1).
        levels: pyramid levels (P3–P7).
    """

    def __init__(self, num_classes: int, fpn_channels: int = 64, fpn_layers: int = 3, head_repeats: int = 3,
                 levels: int = 5) -> None:
        super().__init__()
        self.backbone = EfficientNetSupernet(num_classes=1)
        widths = [self.backbone.features[i][0].cin for i in ELASTIC]  # channels entering each elastic stage
        self.fusions = nn.ModuleList(FusionModule(c) for c in widths)
        self.gates = nn.ModuleList(DynamicGate(c) for c in widths)
        outs = [self.backbone.features[i][-1].cout for i in NECK_LEVELS]
        self.neck = BiFPN(outs, fpn_channels, fpn_layers, levels)
        self.head = EfficientDetHead(fpn_channels, num_classes, repeats=head_repeats, levels=levels)

    def detect(self, stage_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.neck([stage_outputs[i] for i in NECK_LEVELS])
        self.last_sizes = [tuple(f.shape[-2:]) for f in feats]
        return self.head(feats)

    def forward_static(self, frames: torch.Tensor, ratios: Sequence[int] | None = None):
        """A fixed subnet on every frame: ``(cls, box, stage outputs)``."""
        outs = self.backbone.stage_features(frames, ratios)
        cls, box = self.detect(outs)
        return cls, box, outs

    def key_features(self, outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What a key frame stores: the input of each elastic stage."""
        return [outs[i - 1] for i in ELASTIC]

    def forward_nonkey(self, frames: torch.Tensor, key: Sequence[torch.Tensor], tau: float | None = None,
                       details: bool = False):
        """A non-key frame: fusion + gate per elastic stage. Returns ``(cls, box, choices)``,
        ``choices`` ``(B, 6)`` the ratio each sample ran in each stage; with ``details`` also
        ``{"fused": [6 fused maps], "onehots": [6 (B, 6) choices]}`` (stage-2 training)."""
        f = self.backbone.features
        x = f[1](f[0](frames))
        outs = [None, x]
        choices, fused_maps, onehots = [], [], []
        for s, i in enumerate(ELASTIC):
            fused = self.fusions[s](key[s], x)
            onehot = DynamicGate.decide(self.gates[s](fused), tau)
            choice = onehot.argmax(1)
            x = self._run_stage(i, fused, choice, onehot if tau is not None else None)
            choices.append(torch.tensor(RATIOS)[choice.cpu()])
            fused_maps.append(fused)
            onehots.append(onehot)
            outs.append(x)
        outs.append(f[8](x))
        cls, box = self.detect(outs)
        if details:
            return cls, box, torch.stack(choices, 1), {"fused": fused_maps, "onehots": onehots}
        return cls, box, torch.stack(choices, 1)

    def _run_stage(self, i: int, x: torch.Tensor, choice: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        """Stage ``i`` with a width per sample: each group of samples runs only its width."""
        out = None
        for k in choice.unique().tolist():
            rows = (choice == k).nonzero().squeeze(1)
            y = x.index_select(0, rows) if len(rows) < len(x) else x
            for block in self.backbone.features[i]:
                y = block(y, block.cin * RATIOS[k], rows, len(x))
            if onehot is not None:  # straight-through: value 1, gradient to the gate's scores
                y = y * onehot.index_select(0, rows)[:, k].view(-1, 1, 1, 1)
            if len(rows) == len(x):
                return y
            if out is None:
                out = y.new_zeros(len(x), *y.shape[1:])
            out = out.index_copy(0, rows, y)
        return out
