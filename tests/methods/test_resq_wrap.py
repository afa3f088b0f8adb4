"""ResQ on a whole network: W32A32 reproduces the float model exactly through a sequence, and
residual quantization beats frame quantization on correlated frames, layer by layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.methods.resq.layers import QuantConv2d
from dynvid.methods.resq.wrap import calibrate_model, quant_layers, run_sequence, set_mode, wrap_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU()), nn.Conv2d(8, 4, 1)).eval()


def _video(T: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 3, 12, 12, generator=g)
    return torch.stack([base + 0.03 * t * torch.randn(1, 3, 12, 12, generator=g) for t in range(T)])


def test_wrap_replaces_every_conv():
    net = wrap_model(_net())
    assert len(quant_layers(net)) == 3 and not any(type(m) is nn.Conv2d and not isinstance(p, QuantConv2d)
                                                   for p in net.modules() for m in p.children())
    with pytest.raises(ValueError, match="mode must be"):
        set_mode(net, "fast")
    with pytest.raises(ValueError, match="no QuantConv2d"):
        quant_layers(_net())


def test_w32a32_resq_reproduces_the_float_model():
    video = _video()
    with torch.no_grad():
        reference = [_net()(x) for x in video]
    net = wrap_model(_net(), key_bits=(32, 32), res_bits=(32, 32))
    outs = run_sequence(net, video, period=3)
    for a, b in zip(outs, reference):
        assert torch.allclose(a, b, atol=1e-5)


def test_residual_quantization_beats_frame_quantization_on_correlated_frames():
    video = _video(6)
    with torch.no_grad():
        reference = [_net()(x) for x in video]
    net = wrap_model(_net(), key_bits=(8, 8), res_bits=(4, 4))
    assert calibrate_model(net, [video], period=3) == 6
    resq = run_sequence(net, video, period=3, quantization="residual")
    frame = run_sequence(net, video, period=3, quantization="frame")
    err = lambda outs: sum(float(torch.linalg.vector_norm(o - r)) for o, r in zip(outs, reference))  # noqa: E731
    assert err(resq) < err(frame)


def test_wrap_covers_linear_layers_and_a_mixed_network_keeps_w32a32_exact():
    from dynvid.methods.resq.layers import QuantLinear

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 5)).eval()
    video = _video(4)
    with torch.no_grad():
        reference = [net(x) for x in video]
    wrap_model(net, key_bits=(32, 32), res_bits=(32, 32))
    assert [type(m) for m in quant_layers(net)] == [QuantConv2d, QuantLinear]
    for a, b in zip(run_sequence(net, video, period=2), reference):
        assert torch.allclose(a, b, atol=1e-5)
