"""Conversion of static backbones to VA-RED² dynamic ones (Sec. 3.1, 4.2, App. A.2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import VaredConfig
from dynvid.methods.vared import dynamic_layers, force_policy, make_dynamic
from dynvid.metrics.cost import CostMeter, model_cost

def tiny_r2plus1d() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("r2plus1d_18", width_mult=0.125, num_classes=5)


def test_r2plus1d_spatial_convs_become_dynamic_and_keep_their_keys():
    static = tiny_r2plus1d()
    keys = set(static.state_dict())
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(), (3, 8, 32, 32))
    names = [n for n, _ in dynamic_layers(dynamic)]
    assert len(names) == 16  # 4 stages × 2 blocks × 2 (2+1)D convs, their spatial halves
    assert all(n.startswith("layer") and n.endswith(".0.0") for n in names)
    assert all(m.kernel_size[0] == 1 for _, m in dynamic_layers(dynamic))
    result = dynamic.load_state_dict(static.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all((".gate." in k or ".cheap_" in k) for k in result.missing_keys)
    assert keys <= set(dynamic.state_dict())


@pytest.mark.parametrize("backbone", ["r2plus1d_18", "i3d", "x3d_m"])
def test_dynamic_backbone_with_compute_all_equals_the_static_one(backbone):
    from dynvid.backbones import list_backbones

    if backbone not in list_backbones():
        pytest.skip(f"{backbone} is not registered")
    torch.manual_seed(0)
    static = build_backbone(backbone, width_mult=0.125, num_classes=5).eval()
    dynamic = make_dynamic(build_backbone(backbone, width_mult=0.125, num_classes=5), backbone, VaredConfig(),
                           (3, 8, 32, 32))
    dynamic.load_state_dict(static.state_dict(), strict=False)
    dynamic.eval()
    assert dynamic_layers(dynamic)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad(), force_policy(dynamic, "all"):
        torch.testing.assert_close(dynamic(x), static(x), atol=1e-5, rtol=1e-4)
        with CostMeter(dynamic) as meter:
            dynamic(x)
    # compute-all costs the static network plus the gates (forced policy: gates do not run)
    assert meter.per_sample_macs[0].item() == model_cost(static, (3, 8, 32, 32))["macs"]
    assert all(m.policy is None for _, m in dynamic_layers(dynamic))  # the context restored the gates


def test_forcing_cheaper_choices_lowers_measured_cost():
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(search_space=3), (3, 8, 32, 32)).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    costs = []
    for policy in ("all", 1, 2):
        with torch.no_grad(), force_policy(dynamic, policy), CostMeter(dynamic) as meter:
            dynamic(x)
        costs.append(meter.per_sample_macs.item())
    assert costs[0] > costs[1] > costs[2]


def test_unknown_backbone_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        make_dynamic(tiny_r2plus1d(), "resnet50", VaredConfig(), (3, 8, 32, 32))


@pytest.mark.parametrize("backbone", ["r2plus1d_18", "x3d_m"])
def test_the_converted_model_is_the_static_model_before_training(backbone):
    """Issue 19, cause 3: with its gates deciding (not forced), the freshly converted model
    computes the static network's function in eval mode, and in train mode (batch statistics)."""
    torch.manual_seed(0)
    static = build_backbone(backbone, width_mult=0.125, num_classes=5)
    dynamic = make_dynamic(build_backbone(backbone, width_mult=0.125, num_classes=5), backbone, VaredConfig(),
                           (3, 8, 32, 32))
    dynamic.load_state_dict(static.state_dict(), strict=False)
    with torch.no_grad():  # BatchNorm statistics away from their defaults, as after training
        for m in static.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    dynamic.load_state_dict(static.state_dict(), strict=False)
    x = torch.randn(4, 3, 8, 32, 32)
    for training in (False, True):
        static.train(training), dynamic.train(training)
        with torch.no_grad():
            torch.manual_seed(2)  # X3D's head has dropout: the same draws on both sides
            expected = static(x)
            torch.manual_seed(2)
            torch.testing.assert_close(dynamic(x), expected, atol=1e-5, rtol=1e-4)


def test_layers_with_one_output_frame_get_no_temporal_choices():
    """Issue 19, cause 4: ⌈1/R⌉ = 1, so R > 1 saves nothing on a one-frame output."""
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(), (3, 4, 32, 32))
    frames = {}
    hooks = [m.register_forward_hook(lambda m, a, out, n=n: frames.__setitem__(n, out.shape[2]))
             for n, m in dynamic_layers(dynamic)]
    with torch.no_grad():
        dynamic.eval()(torch.randn(1, 3, 4, 32, 32))
    for h in hooks:
        h.remove()
    assert 1 in frames.values() and any(f > 1 for f in frames.values())
    for name, layer in dynamic_layers(dynamic):
        assert layer.temporal_factors == ((1,) if frames[name] == 1 else (1, 2)), name
        assert layer.channel_ratios == (1.0, 0.5)


def test_batchnorm_folded_into_the_dynamic_model_keeps_every_choice_exact():
    """The inference copy with BatchNorm folded (static and dynamic alike, for speed) computes
    what the unfolded model computes, for forced choices and for mixed gate decisions."""
    import copy

    from dynvid.backbones.fuse import fold_batchnorm

    torch.manual_seed(0)
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(search_space=3), (3, 8, 32, 32))
    with torch.no_grad():
        for m in dynamic.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
        for _, layer in dynamic_layers(dynamic):
            for p in [*layer.cheap_channel.parameters(), *layer.cheap_temporal.parameters()]:
                p.add_(0.3 * torch.randn_like(p))
            layer.gate.fc2.bias.uniform_(-0.5, 0.5)  # mixed decisions: several choices on
            layer.gate.fc2.weight.mul_(20)
    dynamic.eval()
    folded = fold_batchnorm(copy.deepcopy(dynamic))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    x = torch.randn(6, 3, 8, 32, 32)
    with torch.no_grad():
        for policy in ("all", 1, 2, None):
            with force_policy(dynamic, policy), force_policy(folded, policy):
                torch.testing.assert_close(folded(x), dynamic(x), atol=1e-4, rtol=1e-4)
        mixed = [len(set(map(tuple, (m.last_v_c > 0).int().tolist()))) for _, m in dynamic_layers(dynamic)]
        assert max(mixed) > 1  # the gate decisions differ within the batch
    with pytest.raises(RuntimeError, match="inference only"):
        folded.train()(x)
