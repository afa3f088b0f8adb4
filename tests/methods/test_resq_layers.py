"""ResQ's quantized convolution: W32A32 reproduces the float layer, residuals of correlated
frames quantize with less error than the frames themselves (the paper's Fig. 2 claim), and
modes that are not ready say so."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.methods.resq.layers import QuantConv2d


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(4, 6, 3, padding=1)


def _frames(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    key = torch.randn(2, 4, 8, 8, generator=g)
    return [key] + [key + 0.05 * torch.randn(2, 4, 8, 8, generator=g) for _ in range(n - 1)]


def test_w32a32_reproduces_the_float_layer():
    conv = _conv()
    q = QuantConv2d(conv, key_bits=(32, 32), res_bits=(32, 32))
    frames = _frames()
    with torch.no_grad():
        q.mode = "frame"
        assert torch.equal(q(frames[1]), conv(frames[1]))
        q.mode = "key"
        assert torch.equal(q(frames[0]), conv(frames[0]))
        q.mode = "residual"
        for x in frames[1:]:
            assert torch.allclose(q(x), conv(x), atol=1e-5)


def test_residuals_of_correlated_frames_quantize_better_than_frames():
    conv = _conv()
    frames = _frames(4)
    q = QuantConv2d(conv, key_bits=(8, 8), res_bits=(4, 4))
    with torch.no_grad():
        q.calibrate("key", frames[0])
        q.calibrate("frame", torch.cat(frames))
        q.calibrate("residual", torch.cat([x - frames[0] for x in frames[1:]]))
        q.mode = "key"
        q(frames[0])
        res_err, frame_err = 0.0, 0.0
        for x in frames[1:]:
            q.mode = "residual"
            res_err += float(torch.linalg.vector_norm(q(x) - conv(x)))
            q.mode = "frame"
            frame_err += float(torch.linalg.vector_norm(q(x) - conv(x)))
    assert res_err < 0.5 * frame_err
    assert q.act_scale["residual"] < q.act_scale["frame"]  # the residuals' range is narrower


def test_modes_that_are_not_ready_say_so():
    q = QuantConv2d(_conv())
    x = torch.randn(1, 4, 8, 8)
    q.mode = "frame"
    with pytest.raises(RuntimeError, match="not calibrated"):
        q(x)
    q.calibrate("residual", x)
    q.mode = "residual"
    with pytest.raises(RuntimeError, match="keyframe"):
        q(x)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        QuantConv2d(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="quantized mode"):
        q.calibrate("float", x)


def test_bops_of_each_mode_on_a_single_layer():
    from dynvid.metrics.cost import CostMeter, conv_macs

    conv = _conv()
    frames = _frames()
    macs = conv_macs(4, 6, (3, 3), (8, 8))
    expected = {"float": 32 * 32, "frame": 4 * 4, "key": 8 * 8, "residual": 4 * 4}
    q = QuantConv2d(conv, key_bits=(8, 8), res_bits=(4, 4))
    for mode in ("frame", "key", "residual"):
        q.calibrate(mode, frames[0] if mode != "residual" else frames[1] - frames[0])
    model = nn.Sequential(q)
    for mode in ("float", "frame", "key", "residual"):
        q.mode = mode
        with torch.no_grad(), CostMeter(model) as meter:
            model(frames[1] if mode == "residual" else frames[0])
        assert meter.per_sample_macs.tolist() == [macs] * 2
        assert meter.per_sample_bops.tolist() == [macs * expected[mode]] * 2, mode
    zero = QuantConv2d(conv, key_bits=(8, 8), res_bits=(8, 0))  # a 0-bit residual is skipped
    zero.calibrate("key", frames[0])
    assert zero.calibrate("residual", frames[1] - frames[0]) == 1.0  # nothing to calibrate at 0 bits
    zero.mode = "key"
    with torch.no_grad():
        z_key = zero(frames[0])
        zero.mode = "residual"
        with CostMeter(zero, batch_size=2) as meter:
            out = zero(frames[1])
    assert torch.equal(out, z_key) and meter.per_sample_macs.tolist() == [0.0, 0.0]
