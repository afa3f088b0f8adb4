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


def _gate_setup():
    """A small detector in training mode, 2 clips of 3 frames and one box per frame."""
    torch.manual_seed(0)
    m = ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1).train()
    clips = torch.randn(2, 3, 3, 64, 64)
    box = {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6]]), "labels": torch.tensor([1])}
    return m, clips, [[box] * 3, [box] * 3]


def test_gate_step_trains_fusion_and_gates_and_penalises_width():
    from dynvid.methods.ant.training import gate_step

    m, clips, targets = _gate_setup()
    loss, logs = gate_step(m, clips, targets, tau=1.0)
    loss.backward()
    assert logs["kd_loss"] > 0 and 1 / 6 <= logs["cost"] <= 1.0
    assert all(g.fc2.weight.grad.abs().sum() > 0 for g in m.gates)
    assert all(f.depthwise[1].weight.grad.abs().sum() > 0 for f in m.fusions)  # the zero-init scale learns
    # the width term pushes every gate towards smaller ratios: the score of ratio 6 falls
    m.zero_grad()
    loss_cost, _ = gate_step(m, clips, targets, tau=1.0, kd_weight=0.0, cost_weight=1000.0)
    loss_cost.backward()
    grad6 = sum(float(g.fc2.bias.grad[5]) for g in m.gates)
    grad1 = sum(float(g.fc2.bias.grad[0]) for g in m.gates)
    assert grad6 > grad1  # descending the loss lowers ratio 6's score relative to ratio 1's


def test_cost_target_penalises_only_the_cost_above_the_budget():
    from dynvid.methods.ant.training import gate_step

    m, clips, targets = _gate_setup()

    def run(**kw):
        torch.manual_seed(1)  # the same Gumbel noise: the same choices
        m.zero_grad()
        loss, logs = gate_step(m, clips, targets, tau=1.0, kd_weight=0.0, **kw)
        loss.backward()
        return loss, logs, sum(float(g.fc2.bias.grad[5]) for g in m.gates)

    free, free_logs, _ = run(cost_weight=0.0)
    within, logs, grad6 = run(cost_weight=1000.0, cost_target=1.0)  # no frame costs more than the full network
    assert logs["cost_term"] == 0.0 and logs["cost"] == free_logs["cost"] > 0
    assert abs(float(within.detach()) - float(free.detach())) < 1e-4
    over, logs, grad6_over = run(cost_weight=1000.0, cost_target=0.01)
    assert abs(logs["cost_term"] - (logs["cost"] - 0.01)) < 1e-5
    assert grad6_over > 0  # above the budget, descending lowers the widest ratio's score
