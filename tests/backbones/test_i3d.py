"""Tests of dynvid.backbones.i3d (I3D-InceptionV2).

The layer table below is written out from BN-Inception (Ioffe & Szegedy 2015, Figure 5)
and I3D's inflation, not read from the model under test; the expected MACs and
parameters are computed from it by hand-written formulas.

Published cost. No published figure matches the architecture-faithful count within
10 %: the VA-RED² thesis lists 56.0 GFLOPs (Tables 4.2/4.5) for the 16-frame
I3D-InceptionV2 at 256×256 (Sec. 4.4); we count 43.14 GMACs there (1 FLOP = 1 MAC,
the meter's convention), 23 % below. The test pins that gap with a 25 % tolerance; see
the module docstring of dynvid.backbones.i3d for the analysis.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from dynvid.backbones import build_backbone, i3d
from dynvid.backbones.i3d import BasicConv3d, I3D
from dynvid.metrics.cost import model_cost

# name: (#1×1, #3×3 reduce, #3×3, double reduce, double 3×3, pool proj); 0 = no branch
# (reduction modules 3c and 4e: no 1×1, max-pool pass-through instead of a projection).
BN_INCEPTION = [
    ("inception3a", (64, 64, 64, 64, 96, 32)),
    ("inception3b", (64, 64, 96, 64, 96, 64)),
    ("inception3c", (0, 128, 160, 64, 96, 0)),
    ("inception4a", (224, 64, 96, 96, 128, 128)),
    ("inception4b", (192, 96, 128, 96, 128, 128)),
    ("inception4c", (160, 128, 160, 128, 160, 128)),
    ("inception4d", (96, 128, 192, 160, 192, 128)),
    ("inception4e", (0, 128, 192, 192, 256, 0)),
    ("inception5a", (352, 192, 320, 160, 224, 128)),
    ("inception5b", (352, 192, 320, 192, 224, 128)),
]
REDUCTIONS = {"inception3c", "inception4e"}
OUT_CHANNELS = [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]

# VA-RED² thesis, Tables 4.2/4.5: I3D-InceptionV2, 16 frames, 256×256 (Sec. 4.4).
PUBLISHED_GFLOPS_16x256 = 56.0
# Our count is 23 % below it (see module docstring); 25 % holds that, and no more.
PUBLISHED_TOLERANCE = 0.25


def expected_cost(frames: int, size: int, num_classes: int = 400) -> tuple[int, int]:
    """(MACs, parameters) of I3D-InceptionV2 on ``3×frames×size×size``, from the table.

    Valid for ``frames`` divisible by 8 and ``size`` by 32 (every stride halves exactly).
    """
    macs, params = 0, 0

    def conv(cin: int, cout: int, k: int, t: int, s: int) -> None:
        nonlocal macs, params
        macs += t * s * s * cout * cin * k**3
        params += cout * cin * k**3 + 2 * cout  # weight + BN affine

    t, s = frames // 2, size // 2
    conv(3, 64, 7, t, s)  # conv1, stride 2 in T, H, W
    s //= 2  # pool1
    conv(64, 64, 1, t, s)
    conv(64, 192, 3, t, s)
    s //= 2  # pool2
    cin = 192
    for (name, (c1, r3, c3, rd, d, pp)), cout in zip(BN_INCEPTION, OUT_CHANNELS):
        if name in REDUCTIONS:
            conv(cin, r3, 1, t, s)
            conv(cin, rd, 1, t, s)
            conv(rd, d, 3, t, s)
            t, s = t // 2, s // 2
            conv(r3, c3, 3, t, s)  # strided
            conv(d, d, 3, t, s)  # strided
            assert c3 + d + cin == cout
        else:
            conv(cin, c1, 1, t, s)
            conv(cin, r3, 1, t, s)
            conv(r3, c3, 3, t, s)
            conv(cin, rd, 1, t, s)
            conv(rd, d, 3, t, s)
            conv(d, d, 3, t, s)
            conv(cin, pp, 1, t, s)
            assert c1 + c3 + d + pp == cout
        cin = cout
    macs += cin * num_classes
    params += cin * num_classes + num_classes
    return macs, params


@pytest.fixture(scope="module")
def full_model() -> nn.Module:
    torch.manual_seed(0)
    return i3d().eval()


@pytest.fixture(scope="module")
def full_costs() -> dict[int, dict]:
    # The meter reads only output shapes, so a forward on the meta device counts the
    # same MACs in 0.1 s instead of several seconds of CPU time per size
    # (test_meta_count_equals_real_count checks that).
    with torch.device("meta"):
        model = i3d()
    return {size: model_cost(model, (3, 16, size, size)) for size in (224, 256)}


# ---------------------------------------------------------------------------------
# Cost and parameters
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 256])
def test_cost_and_params_match_the_layer_table(full_costs: dict, size: int) -> None:
    macs, params = expected_cost(16, size)
    assert full_costs[size]["macs"] == macs
    assert full_costs[size]["params"] == params


def test_measured_figures(full_costs: dict) -> None:
    assert full_costs[224]["gflops"] == pytest.approx(33.027, abs=5e-4)
    assert full_costs[256]["gflops"] == pytest.approx(43.137, abs=5e-4)
    assert full_costs[256]["params"] == 24_495_376


def test_cost_against_the_published_figure(full_costs: dict) -> None:
    # VA-RED² thesis: 56.0 GFLOPs at 16×256². Not matched within 10 % (ours is 23 %
    # below, 1 FLOP = 1 MAC); 2 FLOPs per MAC would be 54 % above, further off.
    ours = full_costs[256]["gflops"]
    assert ours == pytest.approx(PUBLISHED_GFLOPS_16x256, rel=PUBLISHED_TOLERANCE)
    assert abs(ours / PUBLISHED_GFLOPS_16x256 - 1) > 0.10  # the gap the docstring explains
    assert abs(2 * ours / PUBLISHED_GFLOPS_16x256 - 1) > abs(ours / PUBLISHED_GFLOPS_16x256 - 1)


def test_meta_count_equals_real_count(full_model: nn.Module) -> None:
    with torch.device("meta"):
        meta_model = i3d()
    shape = (3, 8, 32, 32)
    assert model_cost(meta_model, shape) == model_cost(full_model, shape)


def test_cost_agrees_with_fvcore(full_model: nn.Module) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    shape = (3, 8, 32, 32)
    analysis = fvcore_nn.FlopCountAnalysis(full_model, torch.zeros(1, *shape))
    # BN is folded at inference; our meter counts it at zero.
    analysis.set_op_handle("aten::batch_norm", lambda inputs, outputs: Counter())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert set(analysis.by_operator()) == {"conv", "linear"}
    assert model_cost(full_model, shape)["macs"] == pytest.approx(analysis.total(), rel=1e-6)


# ---------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------


def test_stage_shapes_and_temporal_downsampling(full_model: nn.Module) -> None:
    names = ["conv1", "pool1", "conv2", "pool2"] + [name for name, _ in BN_INCEPTION]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(full_model, name).register_forward_hook(
            lambda module, inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape[1:]))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            full_model(torch.zeros(1, 3, 16, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    # conv1 halves T, H, W; the stem pools halve H, W only; 3c and 4e halve all three.
    assert shapes["conv1"] == (64, 8, 16, 16)
    assert shapes["pool1"] == (64, 8, 8, 8)
    assert shapes["conv2"] == (192, 8, 8, 8)
    assert shapes["pool2"] == (192, 8, 4, 4)
    thw = {"3": (8, 4, 4), "3c": (4, 2, 2), "4": (4, 2, 2), "4e": (2, 1, 1), "5": (2, 1, 1)}
    for (name, _), channels in zip(BN_INCEPTION, OUT_CHANNELS):
        key = name[-2:] if name in REDUCTIONS else name[-2]
        assert shapes[name] == (channels, *thw[key]), name


def test_every_conv_is_a_plain_conv3d_followed_by_bn_relu(full_model: nn.Module) -> None:
    convs = [(n, m) for n, m in full_model.named_modules() if isinstance(m, nn.Conv3d)]
    # stem 3 + 8 inception modules × 7 + 2 reduction modules × 5
    assert len(convs) == 3 + 8 * 7 + 2 * 5
    assert all(type(m) is nn.Conv3d and m.bias is None for _, m in convs)
    units = [m for m in full_model.modules() if isinstance(m, BasicConv3d)]
    assert len(units) == len(convs)
    assert all(isinstance(u.bn, nn.BatchNorm3d) and isinstance(u.relu, nn.ReLU) for u in units)
    kernels = Counter(m.kernel_size for _, m in convs)
    assert kernels == {(7, 7, 7): 1, (1, 1, 1): 1 + 8 * 4 + 2 * 2, (3, 3, 3): 1 + 8 * 3 + 2 * 3}


def test_width_mult_scales_channels() -> None:
    model = i3d(width_mult=0.25, num_classes=7)
    assert model.conv1.conv.out_channels == 16
    assert model.conv2.conv.out_channels == 48
    assert model.inception3a.out_channels == 16 + 16 + 24 + 8
    assert model.num_features == 88 + 80 + 56 + 32  # 5b's branches at width 1/4
    assert model.fc.in_features == model.num_features and model.fc.out_features == 7
    assert i3d().num_features == 1024


@pytest.mark.parametrize("shape", [(1, 3, 1, 16, 16), (2, 3, 5, 33, 17)])
def test_odd_clip_sizes_survive_the_strides(shape: tuple[int, ...]) -> None:
    model = i3d(width_mult=0.125, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 3)


def test_dropout_is_in_front_of_the_head() -> None:
    model = i3d(width_mult=0.125, num_classes=3, dropout=0.3)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.3


def test_registered_as_i3d() -> None:
    assert type(build_backbone("i3d", width_mult=0.125, num_classes=3)) is I3D


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 32, 32), torch.zeros(1, 4, 8, 32, 32)])
def test_wrong_input_is_a_clear_error(bad: torch.Tensor) -> None:
    model = i3d(width_mult=0.125)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(bad)


@pytest.mark.parametrize(
    "kwargs", [{"width_mult": 0.0}, {"width_mult": -1.0}, {"num_classes": 0}, {"dropout": 1.0}, {"dropout": -0.1}]
)
def test_bad_builder_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        i3d(**kwargs)

