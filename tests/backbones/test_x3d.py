"""Tests of dynvid.backbones.x3d (X3D-M with the VA-RED² thesis's non-linearities).

The stage table below is written out from Table 1 of the X3D paper, not read from the
model under test; the expected MACs and parameters are computed from it by
hand-written formulas.

Published cost, in the paper's convention (FLOPs = multiply-adds, the meter's GMACs):
X3D-M is 4.73 GFLOPs at 16×224² (X3D Table 2) and 6.2 GFLOPs with 3.8 M parameters at
16×256² (X3D Table 3; the VA-RED² thesis, Table 4.2, lists 6.20 at 256², Sec. 4.4).
We count 4.732 and 6.181 GMACs and 3.79 M parameters, asserted within 1 % (the
parameters to the published precision, ±0.05 M).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from dynvid.backbones import build_backbone, x3d_m
from dynvid.backbones.x3d import X3D, SqueezeExcitation, X3DBlock
from dynvid.metrics.cost import model_cost

# X3D-M, Table 1: (stage, blocks, width, inner width); plus the SE hidden width
# (inner / 16 rounded to a multiple of 8, at least 8, as in the reference code).
STAGES = [("res2", 3, 24, 54, 8), ("res3", 5, 48, 108, 8), ("res4", 11, 96, 216, 16), ("res5", 7, 192, 432, 32)]
STEM = 24
CONV5 = 432
FC1 = 2048

PUBLISHED_GFLOPS_16x224 = 4.73  # X3D Table 2
PUBLISHED_GFLOPS_16x256 = 6.2  # X3D Table 3 (6.20 in the VA-RED² thesis, Table 4.2)
PUBLISHED_PARAMS = 3.8e6  # X3D Table 3, given to 0.1 M


def expected_cost(frames: int, size: int, num_classes: int = 400) -> tuple[int, int]:
    """(MACs, parameters) of X3D-M on ``3×frames×size×size`` from Table 1 (``size`` divisible by 32)."""
    macs, params = 0, 0

    def conv(cin: int, cout: int, kernel_volume: int, spatial: int, groups: int = 1, bn: bool = True) -> None:
        nonlocal macs, params
        macs += frames * spatial * spatial * cout * (cin // groups) * kernel_volume
        params += cout * (cin // groups) * kernel_volume + (2 * cout if bn else 0)

    s = size // 2
    conv(3, STEM, 9, s, bn=False)  # 1×3×3, spatial stride 2
    conv(STEM, STEM, 5, s, groups=STEM)  # depthwise 5×1×1, then BN
    cin = STEM
    for _, depth, width, inner, se_hidden in STAGES:
        for index in range(depth):
            s_in = s
            if index == 0:
                s //= 2
            conv(cin, inner, 1, s_in)  # conv_a
            conv(inner, inner, 27, s, groups=inner)  # conv_b, depthwise 3×3×3
            if index % 2 == 0:  # SE on the pooled vector: two 1×1×1 convs with bias
                macs += 2 * inner * se_hidden
                params += 2 * inner * se_hidden + se_hidden + inner
            conv(inner, width, 1, s)  # conv_c
            if index == 0:
                conv(cin, width, 1, s)  # shortcut projection
            cin = width
    conv(cin, CONV5, 1, s)
    macs += CONV5 * FC1 + FC1 * num_classes
    params += CONV5 * FC1 + FC1 * num_classes + num_classes  # fc1 has no bias
    return macs, params


@pytest.fixture(scope="module")
def full_model() -> nn.Module:
    torch.manual_seed(0)
    return x3d_m().eval()


@pytest.fixture(scope="module")
def full_costs() -> dict[int, dict]:
    # The meter reads only output shapes: a meta-device forward counts the same MACs
    # without the CPU time (test_meta_count_equals_real_count checks that).
    with torch.device("meta"):
        model = x3d_m()
    return {size: model_cost(model, (3, 16, size, size)) for size in (224, 256)}


# ---------------------------------------------------------------------------------
# Cost and parameters
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 256])
def test_cost_and_params_match_table_1(full_costs: dict, size: int) -> None:
    macs, params = expected_cost(16, size)
    assert full_costs[size]["macs"] == macs
    assert full_costs[size]["params"] == params


def test_published_figures(full_costs: dict) -> None:
    assert full_costs[224]["gflops"] == pytest.approx(PUBLISHED_GFLOPS_16x224, rel=0.01)
    assert full_costs[256]["gflops"] == pytest.approx(PUBLISHED_GFLOPS_16x256, rel=0.01)
    assert full_costs[256]["params"] == pytest.approx(PUBLISHED_PARAMS, abs=0.05e6)


def test_measured_figures(full_costs: dict) -> None:
    assert full_costs[224]["gflops"] == pytest.approx(4.7325, abs=5e-4)
    assert full_costs[256]["gflops"] == pytest.approx(6.1806, abs=5e-4)
    assert full_costs[256]["params"] == 3_794_322


def test_meta_count_equals_real_count(full_model: nn.Module) -> None:
    with torch.device("meta"):
        meta_model = x3d_m()
    shape = (3, 8, 32, 32)
    assert model_cost(meta_model, shape) == model_cost(full_model, shape)


def test_cost_agrees_with_fvcore(full_model: nn.Module) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    shape = (3, 8, 32, 32)
    analysis = fvcore_nn.FlopCountAnalysis(full_model, torch.zeros(1, *shape))
    # BN is folded at inference; our meter counts it at zero. Sigmoid, swish and the SE
    # product are elementwise, uncounted by both.
    analysis.set_op_handle("aten::batch_norm", lambda inputs, outputs: Counter())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert set(analysis.by_operator()) == {"conv", "linear"}
    assert model_cost(full_model, shape)["macs"] == pytest.approx(analysis.total(), rel=1e-6)


# ---------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------


def test_stage_shapes_keep_time_and_halve_space(full_model: nn.Module) -> None:
    names = ["stem"] + [name for name, *_ in STAGES] + ["conv5"]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(full_model, name).register_forward_hook(
            lambda module, inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape[1:]))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            features = full_model.features(torch.zeros(1, 3, 16, 64, 64))
    finally:
        for hook in hooks:
            hook.remove()
    assert shapes == {
        "stem": (24, 16, 32, 32),
        "res2": (24, 16, 16, 16),
        "res3": (48, 16, 8, 8),
        "res4": (96, 16, 4, 4),
        "res5": (192, 16, 2, 2),
        "conv5": (432, 16, 2, 2),
    }
    assert features.shape == (1, FC1) and full_model.num_features == FC1


def test_blocks_follow_table_1(full_model: nn.Module) -> None:
    stem = full_model.stem
    assert stem.conv_xy.kernel_size == (1, 3, 3) and stem.conv_xy.stride == (1, 2, 2)
    assert stem.conv_t.kernel_size == (5, 1, 1) and stem.conv_t.groups == STEM
    for name, depth, width, inner, se_hidden in STAGES:
        stage = getattr(full_model, name)
        assert len(stage) == depth
        for index, block in enumerate(stage):
            assert isinstance(block, X3DBlock)
            assert (block.conv_a.out_channels, block.conv_c.out_channels) == (inner, width)
            assert block.conv_b.kernel_size == (3, 3, 3) and block.conv_b.groups == inner  # depthwise
            assert block.conv_b.stride == ((1, 2, 2) if index == 0 else (1, 1, 1))
            assert (block.shortcut is not None) == (index == 0)
            if index % 2 == 0:  # SE in every other block, from the first
                assert isinstance(block.act_b, SqueezeExcitation)
                assert block.act_b.fc1.out_channels == se_hidden
            else:
                assert isinstance(block.act_b, nn.ReLU)
    assert full_model.conv5[0].out_channels == CONV5
    assert full_model.fc1.out_features == FC1 and full_model.fc1.bias is None


def test_every_conv_is_a_plain_conv3d_and_no_conv_strides_time(full_model: nn.Module) -> None:
    convs = [m for m in full_model.modules() if isinstance(m, nn.Conv3d)]
    assert all(type(m) is nn.Conv3d for m in convs)
    assert all(m.stride[0] == 1 for m in convs)


def test_swish_only_inside_squeeze_excitation(full_model: nn.Module) -> None:
    # VA-RED² thesis Sec. 4.2: "we remove all the swish non-linearity except those in SE layer".
    se_modules = [m for m in full_model.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se_modules) == 2 + 3 + 6 + 4
    swishes = {id(m) for m in full_model.modules() if isinstance(m, nn.SiLU)}
    assert swishes == {id(se.swish) for se in se_modules}


def test_features_are_the_fc1_activations() -> None:
    torch.manual_seed(0)
    model = x3d_m(width_mult=0.25, num_classes=5).eval()
    x = torch.randn(1, 3, 8, 32, 32)  # the registry tests' TINY shape: cached conv kernels
    with torch.no_grad():
        features = model.features(x)
        x = model.res5(model.res4(model.res3(model.res2(model.stem(x)))))
        pooled = torch.flatten(model.avgpool(model.conv5(x)), 1)
    torch.testing.assert_close(features, torch.relu(model.fc1(pooled)), rtol=0, atol=1e-6)
    assert model.fc.in_features == model.num_features == 512


def test_width_mult_scales_channels() -> None:
    model = x3d_m(width_mult=0.5, num_classes=7)
    assert model.stem.conv_xy.out_channels == 12
    assert [getattr(model, name)[0].conv_c.out_channels for name, *_ in STAGES] == [12, 24, 48, 96]
    assert [getattr(model, name)[0].conv_a.out_channels for name, *_ in STAGES] == [27, 54, 108, 216]
    assert model.conv5[0].out_channels == 216
    assert model.num_features == 1024 and model.fc.out_features == 7


def test_zero_init_residual_zeroes_last_bn() -> None:
    model = x3d_m(width_mult=0.25, zero_init_residual=True)
    assert all(torch.count_nonzero(m.bn_c.weight) == 0 for m in model.modules() if isinstance(m, X3DBlock))


@pytest.mark.parametrize("shape", [(1, 3, 1, 16, 16), (2, 3, 5, 33, 17)])
def test_odd_clip_sizes_survive_the_strides(shape: tuple[int, ...]) -> None:
    model = x3d_m(width_mult=0.25, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 3)


def test_registered_as_x3d_m() -> None:
    assert type(build_backbone("x3d_m", width_mult=0.25, num_classes=3)) is X3D


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 32, 32), torch.zeros(1, 1, 8, 32, 32)])
def test_wrong_input_is_a_clear_error(bad: torch.Tensor) -> None:
    model = x3d_m(width_mult=0.25)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(bad)


@pytest.mark.parametrize(
    "kwargs", [{"width_mult": 0.0}, {"width_mult": -0.5}, {"num_classes": 0}, {"dropout": 1.0}, {"dropout": -0.1}]
)
def test_bad_builder_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        x3d_m(**kwargs)


def test_bad_stage_depths() -> None:
    with pytest.raises(ValueError, match="stage_depths"):
        X3D(stage_depths=(3, 5, 11))
