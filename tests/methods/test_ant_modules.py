"""ANT building blocks: sandwich rule, in-place KD, BN recalibration, fusion, gate, key frames."""

from __future__ import annotations

import random

import pytest
import torch

from dynvid.backbones.efficientnet import EfficientNetSupernet
from dynvid.metrics.cost import CostMeter
from dynvid.methods.ant.modules import (DynamicGate, FusionModule, KeyFrameSelector, inplace_distillation_loss,
                                        recalibrate_bn, sandwich_configs, stem_deviation, stem_scale)


def test_sandwich_configs():
    configs = sandwich_configs(random.Random(0), num_random=3)
    assert configs[0] == (6,) * 6 and configs[1] == (1,) * 6 and len(configs) == 5
    assert all(len(c) == 6 and set(c) <= set(range(1, 7)) for c in configs)


def test_inplace_distillation_is_zero_only_at_the_teacher_and_does_not_train_it():
    t_cls, t_box = torch.randn(2, 10, 3, requires_grad=True), torch.randn(2, 10, 4, requires_grad=True)
    s_cls, s_box = torch.randn(2, 10, 3, requires_grad=True), torch.randn(2, 10, 4, requires_grad=True)
    loss = inplace_distillation_loss(s_cls, s_box, t_cls, t_box)
    loss.backward()
    assert t_cls.grad is None and t_box.grad is None and s_cls.grad.abs().sum() > 0
    same = inplace_distillation_loss(t_cls.detach(), t_box.detach(), t_cls, t_box)
    entropy = torch.nn.functional.binary_cross_entropy_with_logits(t_cls.detach(), torch.sigmoid(t_cls.detach()))
    assert same.item() == pytest.approx(entropy.item(), abs=1e-6)  # the BCE floor: the teacher's own entropy
    assert loss.item() > same.item()


def test_bn_recalibration_changes_only_bn_buffers():
    torch.manual_seed(0)
    sup = EfficientNetSupernet(5)
    before_params = {k: v.clone() for k, v in sup.named_parameters()}
    before_buffers = {k: v.clone() for k, v in sup.named_buffers()}
    batches = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    n = recalibrate_bn(sup, lambda x: sup(x, (2, 3, 1, 6, 4, 5)), batches)
    assert n == 3 and not sup.training
    for k, v in sup.named_parameters():
        assert torch.equal(v, before_params[k]), k
    changed = [k for k, v in sup.named_buffers() if not torch.equal(v, before_buffers[k])]
    assert changed and all(".running_" in k or k.endswith("num_batches_tracked") for k in changed)
    bn = sup.features[0][1]  # the stem's BN: the plain mean of the 3 batches' statistics
    with torch.no_grad():
        means = [sup.features[0][0](x).mean((0, 2, 3)) for x in batches]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert bn.momentum == 0.1  # restored
    # an elastic block's sliced BN (ratio 2: 32 of 96 channels) gets the plain mean too
    import copy

    from torch.nn import functional as F

    ref = copy.deepcopy(sup).train()
    expand = sup.features[2][0].block[0]
    with torch.no_grad():
        means = [F.conv2d(ref.features[1](ref.features[0](x)), expand[0].weight[:32]).mean((0, 2, 3)) for x in batches]
    assert torch.allclose(expand[1].running_mean[:32], torch.stack(means).mean(0), atol=1e-5)
    assert torch.equal(expand[1].running_mean[32:], torch.zeros(64))  # channels the subnet never ran: reset
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_bn(sup, lambda x: sup(x), [])


def test_untrained_fusion_passes_the_current_features_through():
    fuse = FusionModule(8).eval()
    key, current = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.equal(fuse(key, current), current)
    with torch.no_grad():
        fuse.depthwise[1].weight.fill_(1.0)
    assert not torch.allclose(fuse(key, current), fuse(torch.zeros_like(key), current))  # now it reads the key


def test_fusion_module_shapes_and_errors():
    fuse = FusionModule(16)
    out = fuse(torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4))
    assert out.shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="differ"):
        fuse(torch.randn(2, 16, 4, 4), torch.randn(2, 16, 2, 2))


def test_gate_gumbel_path_has_gradients_and_hard_path_is_argmax():
    torch.manual_seed(0)
    gate = DynamicGate(16)
    x = torch.randn(3, 16, 4, 4)
    scores = gate(x)
    assert scores.shape == (3, 6)
    choice = DynamicGate.decide(scores, tau=1.0)
    assert torch.allclose(choice.sum(1), torch.ones(3)) and torch.allclose(choice, choice.round(), atol=1e-6)
    (choice * torch.arange(6.0)).sum().backward()
    assert gate.fc1.weight.grad.abs().sum() > 0
    hard = DynamicGate.decide(scores.detach())
    assert torch.equal(hard.argmax(1), scores.argmax(1))


def test_gate_prior_sets_the_sampling_probability_of_one_width():
    torch.manual_seed(0)
    gate = DynamicGate(16)
    gate.set_prior(3, 0.8)
    with torch.no_grad():  # the input's contribution at zero: the bias alone decides
        gate.fc2.weight.zero_()
    scores = gate(torch.randn(4000, 16, 2, 2))
    probs = scores.detach().softmax(1)[0]
    assert float(probs[3]) == pytest.approx(0.8, abs=1e-6) and torch.allclose(probs[[0, 1, 2, 4, 5]], torch.full((5,), 0.04))
    picked = DynamicGate.decide(scores.detach(), tau=1.0).argmax(1)  # Gumbel sampling follows the softmax
    assert float((picked == 3).float().mean()) == pytest.approx(0.8, abs=0.03)
    for index, weight in ((6, 0.8), (-1, 0.8), (0, 1.0), (0, 0.0)):
        with pytest.raises(ValueError, match="prior"):
            gate.set_prior(index, weight)


def test_key_frame_rule_on_a_constructed_sequence():
    base = torch.ones(1, 4, 2, 2)
    stems = [base, base * 1.05, base * 1.15, base * 1.2, base * 2.0, base * 2.1]
    # deviation from the last key: 0.05 (no), 0.15 (yes) -> key 1.15; 1.2/1.15 -> 0.043 (no);
    # 2.0/1.15 -> 0.74 (yes) -> key 2.0; 2.1 -> 0.05 (no)
    assert KeyFrameSelector(0.1).schedule(stems) == [True, False, True, False, True, False]
    assert KeyFrameSelector(0.0).schedule(stems) == [True] * 6
    assert KeyFrameSelector(10.0).schedule(stems) == [True] + [False] * 5
    assert stem_deviation(base * 1.5, base).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        KeyFrameSelector(-1.0)


def test_a_key_frames_kept_scale_gives_the_same_deviation():
    g = torch.Generator().manual_seed(0)
    key, frames = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    by_hand = (frames - key).abs().mean((1, 2, 3)) / (key.abs().mean((1, 2, 3)) + 1e-6)
    torch.testing.assert_close(stem_deviation(frames, key), by_hand)
    torch.testing.assert_close(stem_deviation(frames, key, scale=stem_scale(key)), by_hand)
    assert not torch.equal(stem_deviation(frames, key, scale=stem_scale(frames)), by_hand)  # the scale is used
    before = frames.clone()
    stem_deviation(frames, key, scale=stem_scale(key))
    assert torch.equal(frames, before)  # the in-place absolute value works on a fresh difference only


# ---- the split fusion projection (issue 23) ---------------------------------------------------

def _trained_looking_fusion(channels: int = 8) -> FusionModule:
    torch.manual_seed(0)
    f = FusionModule(channels)
    with torch.no_grad():  # not the zero-init residual, and statistics that differ from 0 / 1
        for bn in (f.reduce[1], f.depthwise[1]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return f.eval()


def test_cached_key_projection_equals_the_concatenated_fusion():
    f = _trained_looking_fusion()
    key = torch.randn(3, 8, 12, 12)
    projected = f.project_key(key)
    with torch.no_grad():
        for _ in range(3):  # one key frame's projection serves every non-key frame after it
            current = torch.randn(3, 8, 12, 12)
            assert (f.fuse(projected, current) - f(key, current)).abs().max().item() <= 1e-5


def test_folded_weights_follow_changed_parameters_and_statistics():
    f = _trained_looking_fusion()
    key, current = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    f.fuse(f.project_key(key), current)  # fills the cache
    with torch.no_grad():
        f.reduce[0].weight.mul_(1.5)
        f.depthwise[1].running_var.mul_(2.0)
        assert (f.fuse(f.project_key(key), current) - f(key, current)).abs().max().item() <= 1e-5
    f.load_state_dict(_trained_looking_fusion().state_dict())
    with torch.no_grad():
        assert (f.fuse(f.project_key(key), current) - f(key, current)).abs().max().item() <= 1e-5
    projected = f.project_key(key)
    before = f.fuse(projected, current)
    changed = {k: v * 2 if k == "reduce.0.weight" else v for k, v in f.state_dict().items()}
    f.load_state_dict(changed)  # new weights between two key frames
    with torch.no_grad():
        # the key frame's non-key frames fuse with the weights its key side was projected with
        assert torch.equal(f.fuse(projected, current), before)
        assert (f.fuse(f.project_key(key), current) - f(key, current)).abs().max().item() <= 1e-5
        assert not torch.allclose(f.fuse(f.project_key(key), current), before)
    f.double()  # converted tensors: the cache is dropped, not reused
    with torch.no_grad():
        key, current = key.double(), current.double()
        assert (f.fuse(f.project_key(key), current) - f(key, current)).abs().max().item() <= 1e-10


def test_split_fusion_is_inference_only_and_counts_the_key_side_once():
    f = _trained_looking_fusion()
    key, current = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    with CostMeter(f) as whole:
        f(key, current)
    with CostMeter(f, batch_size=1) as key_side:
        projected = f.project_key(key)
    with CostMeter(f, batch_size=1) as per_frame:
        f.fuse(projected, current)
    side = 8 * 8 * 36  # the 1×1 over the key's 8 channels
    assert whole.per_sample_macs.item() == 16 * 8 * 36 + 9 * 8 * 36  # 1×1 over [key, current], 3×3 depthwise
    assert key_side.per_sample_macs.item() == side
    assert per_frame.per_sample_macs.item() + side == whole.per_sample_macs.item()
    with pytest.raises(RuntimeError, match="eval mode"):
        f.train().project_key(key)
