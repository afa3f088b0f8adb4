"""Tests of the 2-D frame backbones (MobileNetV2, ResNet): torchvision's key layout, the
published parameter counts and MACs, an independent FLOP count, and LFS's last-stride option.

Expected keys and shapes are written out from the architectures (torchvision's
``mobilenet_v2`` / ``resnet*``), not read from the models under test. The registry-wide
forward/backward/cost tests in ``test_r2plus1d.py`` cover these networks too.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dynvid.backbones import mobilenet_v2, resnet18, resnet50, resnet101
from dynvid.backbones.mobilenetv2 import make_divisible
from dynvid.metrics.cost import model_cost

MOBILENET_V2_KEYS = {
    "features.0.0.weight": (32, 3, 3, 3),
    "features.0.1.running_var": (32,),
    "features.1.conv.0.0.weight": (32, 1, 3, 3),  # t = 1: no expansion, depthwise first
    "features.1.conv.1.weight": (16, 32, 1, 1),
    "features.1.conv.2.weight": (16,),
    "features.2.conv.0.0.weight": (96, 16, 1, 1),  # t = 6: expand, depthwise, project
    "features.2.conv.1.0.weight": (96, 1, 3, 3),
    "features.2.conv.2.weight": (24, 96, 1, 1),
    "features.2.conv.3.running_mean": (24,),
    "features.17.conv.2.weight": (320, 960, 1, 1),
    "features.18.0.weight": (1280, 320, 1, 1),
    "classifier.1.weight": (1000, 1280),
}

RESNET50_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_mean": (64,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),  # v1.5: the stride sits on the 3x3
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "layer4.2.bn3.weight": (2048,),
    "fc.weight": (1000, 2048),
}


def _shapes(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_mobilenet_v2_has_torchvision_keys() -> None:
    shapes = _shapes(mobilenet_v2())
    for key, shape in MOBILENET_V2_KEYS.items():
        assert shapes[key] == shape, key
    assert len([k for k in shapes if k.startswith("features.") and k.endswith(".conv.0.0.weight")]) == 17


def test_resnet_has_torchvision_keys() -> None:
    shapes = _shapes(resnet50())
    for key, shape in RESNET50_KEYS.items():
        assert shapes[key] == shape, key
    r101 = _shapes(resnet101())
    assert r101["layer3.22.conv2.weight"] == (256, 256, 3, 3) and "layer3.23.conv1.weight" not in r101
    assert "layer1.0.downsample.0.weight" not in _shapes(resnet18())  # basic blocks keep 64 channels


@pytest.mark.parametrize(("builder", "params", "gmacs"), [
    (mobilenet_v2, 3_504_872, 0.3008),
    (resnet18, 11_689_512, 1.814),
    (resnet50, 25_557_032, 4.089),
    (resnet101, 44_549_160, 7.801),
])
def test_published_parameters_and_macs(builder, params: int, gmacs: float) -> None:
    """torchvision's model cards: parameters exactly, GFLOPs (= GMACs) at 224x224 within 0.5%."""
    cost = model_cost(builder(), (3, 224, 224))
    assert cost["params"] == params
    assert cost["gflops"] == pytest.approx(gmacs, rel=0.005)


def test_liteeval_per_frame_costs() -> None:
    """LiteEval Sec. 4.1: MobileNetV2 at 112x112 costs 0.08 GFLOPs, ResNet-101 at 224 7.82."""
    assert model_cost(mobilenet_v2(), (3, 112, 112))["gflops"] == pytest.approx(0.08, abs=0.005)
    assert model_cost(resnet101(), (3, 224, 224))["gflops"] == pytest.approx(7.82, rel=0.01)


@pytest.mark.parametrize("builder", [mobilenet_v2, resnet18])
def test_meter_matches_fvcore(builder) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    model = builder(width_mult=0.5, num_classes=10).eval()
    x = torch.zeros(1, 3, 96, 96)
    analysis = fvcore_nn.FlopCountAnalysis(model, x)
    analysis.set_op_handle("aten::batch_norm", lambda inputs, outputs: Counter())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert model_cost(model, (3, 96, 96))["macs"] == pytest.approx(analysis.total(), rel=0.01)


def test_make_divisible_rounds_like_torchvision() -> None:
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 320)] == [16, 8, 8, 112]
    assert make_divisible(1280 * 1.4) == 1792


def test_mobilenet_last_stride_removed_doubles_the_output_grid() -> None:
    """Looking Fast and Slow's f1: the 160-channel stage keeps stride 1 (Sec. 3.1)."""
    x = torch.zeros(1, 3, 160, 160)
    full = mobilenet_v2(width_mult=0.35).eval().features(x)
    f1 = mobilenet_v2(width_mult=0.35, last_stride=1).eval().features(x)
    assert full.shape[-1] == 5 and f1.shape[-1] == 10


def test_frame_backbones_reject_clips() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        resnet18(width_mult=0.125)(torch.zeros(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        mobilenet_v2(width_mult=0.25)(torch.zeros(1, 3, 4, 32, 32))


@pytest.mark.parametrize(("width", "mmacs", "mparams"), [(1.4, 582, 6.06), (0.35, 59, 1.66), (0.75, 209, 2.61)])
def test_mobilenet_v2_widths_match_the_published_table(width: float, mmacs: float, mparams: float) -> None:
    """The MobileNetV2 release's table (TF-slim, 224×224, 1001 classes there: params within 2%)."""
    cost = model_cost(mobilenet_v2(width_mult=width), (3, 224, 224))
    assert cost["macs"] / 1e6 == pytest.approx(mmacs, rel=0.01)
    assert cost["params"] / 1e6 == pytest.approx(mparams, rel=0.02)


def test_lfs_extractors_output_grids_align() -> None:
    """Looking Fast and Slow, Sec. 3.1: f0 = MobileNetV2 1.4 at 320², f1 = 0.35 at 160² with the
    last stride removed, so both end on the same 10×10 grid."""
    with torch.no_grad():
        f0 = mobilenet_v2(width_mult=1.4).eval().features(torch.zeros(1, 3, 320, 320))
        f1 = mobilenet_v2(width_mult=0.35, last_stride=1).eval().features(torch.zeros(1, 3, 160, 160))
    assert f0.shape[-2:] == f1.shape[-2:] == (10, 10)
