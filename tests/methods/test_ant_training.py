"""ANT stage 1: a sandwich step trains the shared weights of every subnet it samples."""

from __future__ import annotations

import random

import torch

from dynvid.methods.ant.model import ANTDetector
from dynvid.methods.ant.training import sandwich_step


def test_sandwich_step_updates_shared_weights_and_distils_from_the_largest():
    torch.manual_seed(0)
    m = ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1).train()
    frames = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[0.4, 0.3, 0.9, 0.9]]), "labels": torch.tensor([2])}]
    loss, logs = sandwich_step(m, frames, targets, random.Random(0), num_random=1)
    assert torch.isfinite(loss) and logs["largest_loss"] > 0 and logs["kd_loss"] > 0
    loss.backward()
    expand = m.backbone.features[2][0].block[0][0].weight  # 16 -> 96; the smallest subnet uses 16 rows
    assert expand.grad[:16].abs().sum() > 0 and expand.grad[16:].abs().sum() > 0
    # with no random subnet and KD off, only the largest's labels loss remains
    m.zero_grad()
    loss2, logs2 = sandwich_step(m, frames, targets, random.Random(0), num_random=0, kd_weight=0.0)
    assert abs(float(loss2.detach()) - logs2["largest_loss"]) < 1e-5
