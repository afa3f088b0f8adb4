"""Tests of dynvid.backbones.r2plus1d and the backbone registry.

The key table below is written out from the architecture (torchvision's
``r2plus1d_18`` layout), not read from the model under test. Registry-wide tests are
parametrized over ``list_backbones()``: a new backbone needs only a ``TINY`` entry.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from dynvid.backbones import BACKBONES, build_backbone, list_backbones, r2plus1d_18
from dynvid.metrics.cost import CostMeter, model_cost

# ---------------------------------------------------------------------------------
# torchvision's r2plus1d_18 (num_classes=400) state-dict layout, as data.
# "conv" -> <prefix>.weight; "bn" -> weight/bias/running_mean/running_var (C,) and
# num_batches_tracked (); "fc" -> weight (out, in) and bias (out,).
# mid channels per block: (in*out*27) // (in*9 + 3*out), shared by both convs:
#   64->64: 144, 64->128: 230, 128->128: 288, 128->256: 460, 256->256: 576,
#   256->512: 921, 512->512: 1152.
# ---------------------------------------------------------------------------------

TORCHVISION_R2PLUS1D_18 = [
    ("stem.0", "conv", (45, 3, 1, 7, 7)),
    ("stem.1", "bn", 45),
    ("stem.3", "conv", (64, 45, 3, 1, 1)),
    ("stem.4", "bn", 64),
    # layer1: 64 -> 64, stride 1, mid 144, no downsample
    ("layer1.0.conv1.0.0", "conv", (144, 64, 1, 3, 3)),
    ("layer1.0.conv1.0.1", "bn", 144),
    ("layer1.0.conv1.0.3", "conv", (64, 144, 3, 1, 1)),
    ("layer1.0.conv1.1", "bn", 64),
    ("layer1.0.conv2.0.0", "conv", (144, 64, 1, 3, 3)),
    ("layer1.0.conv2.0.1", "bn", 144),
    ("layer1.0.conv2.0.3", "conv", (64, 144, 3, 1, 1)),
    ("layer1.0.conv2.1", "bn", 64),
    ("layer1.1.conv1.0.0", "conv", (144, 64, 1, 3, 3)),
    ("layer1.1.conv1.0.1", "bn", 144),
    ("layer1.1.conv1.0.3", "conv", (64, 144, 3, 1, 1)),
    ("layer1.1.conv1.1", "bn", 64),
    ("layer1.1.conv2.0.0", "conv", (144, 64, 1, 3, 3)),
    ("layer1.1.conv2.0.1", "bn", 144),
    ("layer1.1.conv2.0.3", "conv", (64, 144, 3, 1, 1)),
    ("layer1.1.conv2.1", "bn", 64),
    # layer2: 64 -> 128, stride 2; block 0 mid 230 (both convs), block 1 mid 288
    ("layer2.0.conv1.0.0", "conv", (230, 64, 1, 3, 3)),
    ("layer2.0.conv1.0.1", "bn", 230),
    ("layer2.0.conv1.0.3", "conv", (128, 230, 3, 1, 1)),
    ("layer2.0.conv1.1", "bn", 128),
    ("layer2.0.conv2.0.0", "conv", (230, 128, 1, 3, 3)),
    ("layer2.0.conv2.0.1", "bn", 230),
    ("layer2.0.conv2.0.3", "conv", (128, 230, 3, 1, 1)),
    ("layer2.0.conv2.1", "bn", 128),
    ("layer2.0.downsample.0", "conv", (128, 64, 1, 1, 1)),
    ("layer2.0.downsample.1", "bn", 128),
    ("layer2.1.conv1.0.0", "conv", (288, 128, 1, 3, 3)),
    ("layer2.1.conv1.0.1", "bn", 288),
    ("layer2.1.conv1.0.3", "conv", (128, 288, 3, 1, 1)),
    ("layer2.1.conv1.1", "bn", 128),
    ("layer2.1.conv2.0.0", "conv", (288, 128, 1, 3, 3)),
    ("layer2.1.conv2.0.1", "bn", 288),
    ("layer2.1.conv2.0.3", "conv", (128, 288, 3, 1, 1)),
    ("layer2.1.conv2.1", "bn", 128),
    # layer3: 128 -> 256, stride 2; mid 460, then 576
    ("layer3.0.conv1.0.0", "conv", (460, 128, 1, 3, 3)),
    ("layer3.0.conv1.0.1", "bn", 460),
    ("layer3.0.conv1.0.3", "conv", (256, 460, 3, 1, 1)),
    ("layer3.0.conv1.1", "bn", 256),
    ("layer3.0.conv2.0.0", "conv", (460, 256, 1, 3, 3)),
    ("layer3.0.conv2.0.1", "bn", 460),
    ("layer3.0.conv2.0.3", "conv", (256, 460, 3, 1, 1)),
    ("layer3.0.conv2.1", "bn", 256),
    ("layer3.0.downsample.0", "conv", (256, 128, 1, 1, 1)),
    ("layer3.0.downsample.1", "bn", 256),
    ("layer3.1.conv1.0.0", "conv", (576, 256, 1, 3, 3)),
    ("layer3.1.conv1.0.1", "bn", 576),
    ("layer3.1.conv1.0.3", "conv", (256, 576, 3, 1, 1)),
    ("layer3.1.conv1.1", "bn", 256),
    ("layer3.1.conv2.0.0", "conv", (576, 256, 1, 3, 3)),
    ("layer3.1.conv2.0.1", "bn", 576),
    ("layer3.1.conv2.0.3", "conv", (256, 576, 3, 1, 1)),
    ("layer3.1.conv2.1", "bn", 256),
    # layer4: 256 -> 512, stride 2; mid 921, then 1152
    ("layer4.0.conv1.0.0", "conv", (921, 256, 1, 3, 3)),
    ("layer4.0.conv1.0.1", "bn", 921),
    ("layer4.0.conv1.0.3", "conv", (512, 921, 3, 1, 1)),
    ("layer4.0.conv1.1", "bn", 512),
    ("layer4.0.conv2.0.0", "conv", (921, 512, 1, 3, 3)),
    ("layer4.0.conv2.0.1", "bn", 921),
    ("layer4.0.conv2.0.3", "conv", (512, 921, 3, 1, 1)),
    ("layer4.0.conv2.1", "bn", 512),
    ("layer4.0.downsample.0", "conv", (512, 256, 1, 1, 1)),
    ("layer4.0.downsample.1", "bn", 512),
    ("layer4.1.conv1.0.0", "conv", (1152, 512, 1, 3, 3)),
    ("layer4.1.conv1.0.1", "bn", 1152),
    ("layer4.1.conv1.0.3", "conv", (512, 1152, 3, 1, 1)),
    ("layer4.1.conv1.1", "bn", 512),
    ("layer4.1.conv2.0.0", "conv", (1152, 512, 1, 3, 3)),
    ("layer4.1.conv2.0.1", "bn", 1152),
    ("layer4.1.conv2.0.3", "conv", (512, 1152, 3, 1, 1)),
    ("layer4.1.conv2.1", "bn", 512),
    ("fc", "fc", (400, 512)),
]

# Published figures of torchvision's R2Plus1D_18_Weights.KINETICS400_V1.
TORCHVISION_NUM_PARAMS = 31_505_325
PUBLISHED_GMACS_16x112 = 40.5


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, kind, size in TORCHVISION_R2PLUS1D_18:
        if kind == "conv":
            shapes[f"{prefix}.weight"] = size
        elif kind == "bn":
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{suffix}"] = (size,)
            shapes[f"{prefix}.num_batches_tracked"] = ()
        else:
            shapes[f"{prefix}.weight"] = size
            shapes[f"{prefix}.bias"] = (size[0],)
    return shapes


@pytest.fixture(scope="module")
def full_model() -> nn.Module:
    torch.manual_seed(0)
    return r2plus1d_18().eval()


# ---------------------------------------------------------------------------------
# R(2+1)D-18: checkpoint layout and published figures
# ---------------------------------------------------------------------------------


def test_state_dict_matches_torchvision_layout(full_model: nn.Module) -> None:
    expected = expected_state_dict_shapes()
    assert len(expected) == 224
    actual = {k: tuple(v.shape) for k, v in full_model.state_dict().items()}
    assert sorted(set(actual) - set(expected)) == []  # extra keys
    assert sorted(set(expected) - set(actual)) == []  # missing keys
    assert actual == expected


def test_torchvision_style_checkpoint_loads_strict() -> None:
    generator = torch.Generator().manual_seed(1)
    checkpoint = {}
    for key, shape in expected_state_dict_shapes().items():
        if key.endswith("num_batches_tracked"):
            checkpoint[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            checkpoint[key] = torch.randn(shape, generator=generator)
    model = r2plus1d_18()
    result = model.load_state_dict(checkpoint, strict=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in checkpoint.items())


def test_param_count_matches_torchvision(full_model: nn.Module) -> None:
    assert sum(p.numel() for p in full_model.parameters()) == TORCHVISION_NUM_PARAMS


def test_published_gmacs_at_16x112x112(full_model: nn.Module) -> None:
    cost = model_cost(full_model, (3, 16, 112, 112))
    assert cost["gflops"] == pytest.approx(PUBLISHED_GMACS_16x112, rel=0.01)
    assert cost["params"] == TORCHVISION_NUM_PARAMS


def test_full_size_cost_agrees_with_fvcore(full_model: nn.Module) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    x = torch.zeros(1, 3, 16, 112, 112)
    analysis = fvcore_nn.FlopCountAnalysis(full_model, x)
    # BN is folded at inference; our meter counts it at zero.
    analysis.set_op_handle("aten::batch_norm", lambda inputs, outputs: Counter())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert set(analysis.by_operator()) == {"conv", "linear"}
    reference = analysis.total()
    ours = model_cost(full_model, (3, 16, 112, 112))["macs"]
    assert ours == pytest.approx(reference, rel=0.01)


# ---------------------------------------------------------------------------------
# R(2+1)D-specific behaviour
# ---------------------------------------------------------------------------------


def test_width_mult_scales_channels() -> None:
    model = r2plus1d_18(width_mult=0.25, num_classes=7)
    assert model.stem[0].out_channels == 11  # round(45 / 4)
    assert [getattr(model, f"layer{i}")[0].conv1[1].num_features for i in range(1, 5)] == [16, 32, 64, 128]
    assert model.num_features == 128
    assert model.fc.out_features == 7


def test_channel_divisor_rounds_to_multiples() -> None:
    model = r2plus1d_18(channel_divisor=8)
    assert model.stem[0].out_channels == 48  # 45 -> 48 (no longer torchvision-compatible)
    assert model.layer4[0].conv1[1].num_features == 512


@pytest.mark.parametrize("shape", [(1, 3, 1, 16, 16), (2, 3, 5, 33, 17)])
def test_odd_clip_sizes_survive_the_strides(shape: tuple[int, ...]) -> None:
    model = r2plus1d_18(width_mult=0.125, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 3)


def test_zero_init_residual_zeroes_last_bn() -> None:
    model = r2plus1d_18(width_mult=0.125, zero_init_residual=True)
    last_bns = [block.conv2[1].weight for layer in (model.layer1, model.layer4) for block in layer]
    assert all(torch.count_nonzero(w) == 0 for w in last_bns)


def test_wrong_input_rank_is_a_clear_error() -> None:
    model = r2plus1d_18(width_mult=0.125)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.zeros(3, 8, 32, 32))


@pytest.mark.parametrize("kwargs", [{"width_mult": 0.0}, {"num_classes": 0}])
def test_bad_builder_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        r2plus1d_18(**kwargs)


# ---------------------------------------------------------------------------------
# Registry-wide tests: every backbone gets these
# ---------------------------------------------------------------------------------

# name -> (builder kwargs for a tiny variant, input shape)
TINY = {
    "efficientnet_b0": ({"num_classes": 7}, (1, 3, 32, 32)),  # no width multiplier: ANT varies expansion ratios
    "i3d": ({"width_mult": 0.125, "num_classes": 7}, (1, 3, 8, 32, 32)),
    "r2plus1d_18": ({"width_mult": 0.25, "num_classes": 7}, (1, 3, 8, 32, 32)),
    "x3d_m": ({"width_mult": 0.25, "num_classes": 7}, (1, 3, 8, 32, 32)),
    "mobilenet_v2": ({"width_mult": 0.25, "num_classes": 7}, (1, 3, 32, 32)),
    "resnet18": ({"width_mult": 0.125, "num_classes": 7}, (1, 3, 32, 32)),
    "resnet34": ({"width_mult": 0.125, "num_classes": 7}, (1, 3, 32, 32)),
    "resnet50": ({"width_mult": 0.125, "num_classes": 7}, (1, 3, 32, 32)),
    "resnet101": ({"width_mult": 0.125, "num_classes": 7}, (1, 3, 32, 32)),
}


def test_every_backbone_has_a_tiny_config() -> None:
    assert "r2plus1d_18" in list_backbones()
    assert set(list_backbones()) <= set(TINY), "add the new backbone to TINY"


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="r2plus1d_18"):
        build_backbone("r2plus1d_19")


@pytest.mark.parametrize("name", list_backbones())
def test_build_backbone_uses_the_registered_builder(name: str) -> None:
    kwargs, _ = TINY[name]
    model = build_backbone(name, **kwargs)
    assert type(model) is type(BACKBONES[name](**kwargs))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in BACKBONES[name](**kwargs).parameters())


@pytest.mark.parametrize("name", list_backbones())
def test_forward_returns_logits_of_fc_on_features(name: str) -> None:
    kwargs, shape = TINY[name]
    torch.manual_seed(0)
    model = build_backbone(name, **kwargs).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        head = model.forward_head(features)
    assert logits.shape == (shape[0], kwargs["num_classes"])
    assert features.shape == (shape[0], model.num_features)
    assert model.takes_clips == (len(shape) == 5)
    # logits = head(features), no softmax
    assert torch.allclose(logits, head, atol=1e-6)
    assert not torch.allclose(logits.sum(-1), torch.ones(shape[0]))


@pytest.mark.parametrize("name", list_backbones())
def test_backward_reaches_every_parameter(name: str) -> None:
    kwargs, shape = TINY[name]
    torch.manual_seed(0)
    model = build_backbone(name, **kwargs).train()
    x = torch.randn((2, *shape[1:]))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize("name", list_backbones())
def test_cost_meter_counts_backbone_per_sample(name: str) -> None:
    kwargs, shape = TINY[name]
    model = build_backbone(name, **kwargs).eval()
    with torch.no_grad(), CostMeter(model) as meter:
        model(torch.randn((3, *shape[1:])))
    assert not meter.uncounted
    macs = meter.per_sample_macs
    assert macs.shape == (3,)
    assert macs.min() > 0 and torch.all(macs == macs[0])  # a static network: same for all
    assert macs[0].item() == model_cost(model, shape[1:])["macs"]
