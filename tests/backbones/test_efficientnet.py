"""EfficientNet-B0 and ANT's weight-sharing supernet (Sec. 3.1, 4.1): published size and cost,
torchvision keys, sliced subnets equal standalone networks, the width formula over all 6^6
configurations."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from dynvid.backbones.efficientnet import (RATIOS, EfficientNet, EfficientNetSupernet, efficientnet_b0, mbconv_macs,
                                            supernet_macs)
from dynvid.metrics.cost import CostMeter


def test_b0_published_size_cost_and_keys():
    net = efficientnet_b0()
    assert sum(p.numel() for p in net.parameters()) == 5_288_548  # torchvision's EfficientNet_B0 figure
    with CostMeter(net.eval()) as meter, torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    assert meter.per_sample_macs.item() == supernet_macs(None) == pytest.approx(0.39e9, rel=0.02)
    sd = net.state_dict()
    # torchvision's layout: stem, MBConv1 (no expand conv), MBConv6 blocks, head conv, classifier
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["features.1.0.block.0.0.weight"].shape == (32, 1, 3, 3)  # MBConv1: depthwise first
    assert sd["features.1.0.block.1.fc1.weight"].shape == (8, 32, 1, 1)
    assert sd["features.2.0.block.0.0.weight"].shape == (96, 16, 1, 1)  # MBConv6: expand 16 -> 96
    assert sd["features.2.0.block.2.fc1.weight"].shape == (4, 96, 1, 1)  # SE squeeze = in // 4
    assert sd["features.7.0.block.3.0.weight"].shape == (320, 1152, 1, 1)
    assert sd["features.8.0.weight"].shape == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"].shape == (1000, 1280)
    with pytest.raises(ValueError, match="no width multiplier"):
        efficientnet_b0(width_mult=0.5)


def test_supernet_keys_equal_b0_so_a_standalone_b0_initialises_it():
    b0 = EfficientNet(10)
    sup = EfficientNetSupernet(10)
    sup.load_state_dict(b0.state_dict())  # strict
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sup.eval()(x), b0.eval()(x), atol=1e-5)


@pytest.mark.parametrize("ratios", [(6,) * 6, (1,) * 6, (3, 1, 6, 2, 5, 4), (2, 5, 1, 6, 3, 4)])
def test_subnet_equals_standalone_with_sliced_weights_and_costs_the_formula(ratios):
    torch.manual_seed(0)
    sup = EfficientNetSupernet(7)
    with torch.no_grad():  # non-trivial BN statistics, so slicing them is checked too
        for m in sup.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sup.eval()
    sub = sup.subnet(ratios).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), CostMeter(sup) as m_sup:
        y = sup(x, ratios)
    with torch.no_grad(), CostMeter(sub) as m_sub:
        y_sub = sub(x)
    assert torch.allclose(y, y_sub, atol=1e-5)
    # the supernet ran only the sliced channels: its metered MACs are the smaller network's
    assert m_sup.per_sample_macs[0].item() == m_sub.per_sample_macs[0].item() == supernet_macs(ratios, 64, 64, 7)
    assert sum(p.numel() for p in sub.parameters()) <= sum(p.numel() for p in sup.parameters())


def test_all_configurations_are_addressable_and_follow_the_width_formula():
    configs = list(itertools.product(RATIOS, repeat=6))
    assert len(configs) == 6 ** 6
    macs = {c: supernet_macs(c, 64, 64, 10) for c in configs}
    assert len(set(macs.values())) > 6 ** 5  # configurations are told apart by their cost
    full, smallest = macs[(6,) * 6], macs[(1,) * 6]
    assert all(smallest <= v <= full for v in macs.values())
    # the width formula: every stage's cost is affine in its hidden width (MBConv: all layers
    # but the project conv's output grow linearly with it), so equal steps in one stage's
    # ratio add equal MACs whatever the other stages do
    rng = random.Random(0)
    for _ in range(20):
        c = list(rng.choice(configs))
        stage = rng.randrange(6)
        steps = []
        for r in (1, 2, 3):
            lo, hi = c.copy(), c.copy()
            lo[stage], hi[stage] = r, r + 1
            steps.append(macs[tuple(hi)] - macs[tuple(lo)])
        assert steps[0] == steps[1] == steps[2] > 0
    sup = EfficientNetSupernet(10).eval()
    for c in rng.sample(configs, 3):  # and the executed path costs what the formula says
        with torch.no_grad(), CostMeter(sup) as meter:
            sup(torch.zeros(1, 3, 64, 64), c)
        assert meter.per_sample_macs.item() == macs[c]


def test_mbconv_formula_single_block():
    # 16 -> 24 channels, ratio 6, 3x3 stride 2 on 8x8: expand 16*96*64, dw 96*9*16, SE 2*96*4, project 96*24*16
    assert mbconv_macs(16, 24, 6, 3, 2, 8, 8) == 16 * 96 * 64 + 96 * 9 * 16 + 2 * 96 * 4 + 96 * 24 * 16


def test_elastic_batchnorm_trains_only_the_active_slice():
    sup = EfficientNetSupernet(5).train()
    block = sup.features[2][0]
    bn = block.block[0][1]  # the expand conv's BN: 96 channels, ratio 2 uses 32
    before = bn.running_mean.clone()
    sup(torch.randn(4, 3, 32, 32), (2, 6, 6, 6, 6, 6))
    assert not torch.equal(bn.running_mean[:32], before[:32])
    assert torch.equal(bn.running_mean[32:], before[32:])


def test_bad_ratios():
    sup = EfficientNetSupernet(5)
    with pytest.raises(ValueError, match="6 expansion ratios"):
        sup(torch.zeros(1, 3, 32, 32), (6, 6, 6))
    with pytest.raises(ValueError, match="each in"):
        sup.subnet((7, 6, 6, 6, 6, 6))


def test_stochastic_depth_is_torchvisions_in_training_and_off_when_asked():
    """B0's blocks drop their residual branch per sample in training (torchvision's 0.2, linear
    in depth); with ``stochastic_depth_prob=0`` (ANT's detector) training forwards repeat exactly."""
    x = torch.randn(8, 3, 64, 64)
    for cls in (EfficientNet, EfficientNetSupernet):
        torch.manual_seed(0)
        net = cls(5).train()
        net.classifier[0].p = 0.0  # only the blocks' randomness is left
        probs = [b.stochastic_depth.p for stage in net.features[1:8] for b in stage]
        assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.2 * 15 / 16)
        assert not torch.allclose(net(x), net(x))
        off = cls(5, stochastic_depth_prob=0.0).train()
        off.classifier[0].p = 0.0
        assert torch.allclose(off(x), off(x), atol=1e-6)


def _random_statistics(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def test_inference_blocks_equal_torchvisions_and_leave_their_input_alone():
    """Eval mode runs the squeeze-excitation as a mean and two ``F.linear`` and overwrites the
    block's own intermediates: the values are torchvision's block's, the input is unchanged,
    and autograd still goes through (eval with gradients: saliency, attacks)."""
    import copy

    from torchvision.models.efficientnet import MBConv as TorchvisionMBConv

    from dynvid.backbones.efficientnet import MBConv
    from dynvid.backbones.fuse import fold_batchnorm

    torch.manual_seed(0)
    net = EfficientNet(5)
    _random_statistics(net)
    net.eval()
    blocks = [m for m in net.modules() if isinstance(m, MBConv)]
    assert any(b.residual for b in blocks) and any(not b.residual for b in blocks)
    x = torch.randn(2, 3, 64, 64)
    h = net.features[0](x)
    for block in blocks:
        before = h.clone()
        with torch.no_grad():
            expected = TorchvisionMBConv.forward(block, h)
            got = block(h)
        assert torch.equal(h, before)
        assert (got - expected).abs().max().item() <= 1e-5
        h = expected
    folded = fold_batchnorm(copy.deepcopy(net))
    with torch.no_grad():
        assert (folded(x) - net(x)).abs().max().item() <= 1e-4
    x.requires_grad_(True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("ratios", [(6,) * 6, (1, 2, 3, 4, 5, 6)])
def test_folded_supernet_equals_its_batchnorms_and_leaves_the_input_alone(ratios):
    import copy

    from dynvid.backbones.fuse import fold_batchnorm

    torch.manual_seed(1)
    sup = EfficientNetSupernet(4)
    _random_statistics(sup)
    sup.eval()
    folded = fold_batchnorm(copy.deepcopy(sup))
    x = torch.randn(2, 3, 64, 64)
    stem = sup.features[0](x)
    kept = stem.clone()
    with torch.no_grad():
        expected = sup.stage_features(stem, ratios, start=1)
        got = folded.stage_features(stem, ratios, start=1)
    assert torch.equal(stem, kept)
    assert all((g - e).abs().max().item() <= 1e-4 for g, e in zip(got, expected))
    # eval with gradients (saliency): the folded path's in-place operations keep autograd's tensors
    stem = stem.detach().requires_grad_(True)
    folded.stage_features(stem, ratios, start=1)[-1].sum().backward()
    grad = stem.grad.clone()
    stem.grad = None
    sup.stage_features(stem, ratios, start=1)[-1].sum().backward()
    assert (grad - stem.grad).abs().max().item() <= 1e-3 * stem.grad.abs().max().item()


def test_squeeze_excitation_counts_once_under_a_parent_that_counts_its_own_cost():
    """A ``counts_own_cost`` parent that meters its child itself (LiteEval's extractor) hands
    the outer meter the child's total: the blocks' excitation is counted there once."""
    from torch import nn

    from dynvid.metrics.cost import record_cost

    net = efficientnet_b0(4).eval()

    class Extractor(nn.Module):
        counts_own_cost = True

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            with CostMeter(self.net, batch_size=len(x)) as inner:
                y = self.net(x)
            record_cost(self, inner.per_sample_macs)
            return y

    outer_model = Extractor()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), CostMeter(outer_model, batch_size=2) as outer:
        outer_model(x)
    assert outer.per_sample_macs.tolist() == [supernet_macs(None, 64, 64, 4)] * 2
