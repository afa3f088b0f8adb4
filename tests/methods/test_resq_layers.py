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
        # W32A32 is the float layer up to rounding: key mode adds the bias after a bias-free
        # convolution, which a different kernel may round differently (seen: 2.4e-7)
        torch.testing.assert_close(q(frames[1]), conv(frames[1]), rtol=0, atol=1e-5)
        q.mode = "key"
        torch.testing.assert_close(q(frames[0]), conv(frames[0]), rtol=0, atol=1e-5)
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


def test_bit_configurations_in_the_papers_notation():
    from dynvid.methods.resq.layers import parse_bits

    assert parse_bits("W8A8->W4A4") == ((8, 8), (4, 4), None)
    assert parse_bits("W4A4→W3A3") == ((4, 4), (3, 3), None)
    assert parse_bits("W8A8->W8A{0,4,8}") == ((8, 8), (8, 8), (0, 4, 8))
    assert parse_bits("W8A8->W4A[8,0,4]") == ((8, 8), (4, 8), (0, 4, 8))
    for bad in ("W8A8", "8->4", "W8A8->W8A{4}", "W8A8->W8A{4,4}"):
        with pytest.raises(ValueError, match="W8A8->W4A4|two distinct"):
            parse_bits(bad)


def _dynamic(pool=(0, 4, 8), tau=None):
    from dynvid.methods.resq.policy import TAU

    conv = _conv()
    frames = _frames()
    q = QuantConv2d(conv, key_bits=(8, 8), res_bits=(8, pool[-1]), res_pool=pool, tau=TAU if tau is None else tau)
    q.calibrate("key", frames[0])
    q.calibrate("residual", torch.cat([x - frames[0] for x in frames[1:]]))
    return conv, frames, q


def test_dynamic_resq_quantizes_each_pixel_with_the_policys_choice():
    from dynvid.methods.resq.policy import error_maps, select_quantizers
    from dynvid.methods.resq.quantizers import quantize
    from dynvid.metrics.cost import CostMeter, conv_macs

    conv, frames, q = _dynamic(tau=0.05)
    assert all(q.pool_scale[b] > 0 for b in (4, 8)) and q.pool_scale[4] > q.pool_scale[8]
    x = frames[1].clone()
    x[:, :, :4] = frames[0][:, :, :4]  # the top half is static: its residual is exactly zero
    q.record_bits = True
    with torch.no_grad():
        q.mode = "key"
        z_key = q(frames[0])
        q.mode = "residual"
        with CostMeter(q, batch_size=2) as meter:
            out = q(x)
    delta = x - frames[0]
    w_hat = q.weight_q("residual")
    scales = [1.0, q.pool_scale[4], q.pool_scale[8]]
    choice = select_quantizers(error_maps(delta, scales, (0, 4, 8), w_hat), 0.05)
    bits = torch.tensor([0, 4, 8])[choice]
    assert torch.equal(q.last_bits.long(), bits)
    assert (bits[:, :4] == 0).all() and (bits[:, 4:] > 0).any()  # static pixels skipped, moving ones not
    mixed = sum(quantize(delta, s, b) * (choice == i).unsqueeze(1) for i, (s, b) in enumerate(zip(scales, (0, 4, 8))))
    expected = torch.nn.functional.conv2d(mixed, w_hat, None, 1, 1) + z_key
    assert torch.allclose(out, expected, atol=1e-5)
    macs = conv_macs(4, 6, (3, 3), (8, 8))
    mean_bits = bits.flatten(1).double().mean(1)
    policy = 3 * 4 * 8 * 8 * 8 * 8  # 3 quantizers x C x H x W MACs at A8 x A8
    assert torch.allclose(meter.per_sample_bops, macs * 8 * mean_bits + policy)
    on = (bits > 0).flatten(1).double().mean(1)
    assert torch.allclose(meter.per_sample_macs, macs * on + 3 * 4 * 8 * 8)


def test_dynamic_resq_skips_a_static_frame_and_reproduces_float_with_a_lossless_pool():
    from dynvid.metrics.cost import CostMeter

    conv, frames, q = _dynamic()
    with torch.no_grad():
        q.mode = "key"
        z_key = q(frames[0])
        q.mode = "residual"
        with CostMeter(q, batch_size=2) as meter:
            out = q(frames[0])  # nothing moved: every pixel at 0 bits, the convolution does not run
    assert torch.equal(out, z_key) and meter.per_sample_macs.tolist() == [3 * 4 * 64] * 2  # the policy only
    lossless = QuantConv2d(conv, key_bits=(32, 32), res_bits=(32, 32), res_pool=(0, 32), tau=0.0)
    with torch.no_grad():
        lossless.mode = "key"
        lossless(frames[0])
        lossless.mode = "residual"
        assert torch.allclose(lossless(frames[1]), conv(frames[1]), atol=1e-5)


def _qat_layer():
    """A W8A8->W4A4 layer calibrated on the test frames, QAT on: ``(frames, layer)``."""
    frames = _frames()
    q = QuantConv2d(_conv(), key_bits=(8, 8), res_bits=(4, 4))
    q.calibrate("key", frames[0])
    q.calibrate("residual", frames[1] - frames[0])
    q.enable_qat()
    return frames, q


def test_qat_scales_start_from_ptq_and_learn_through_the_ste():
    frames, q = _qat_layer()
    assert float(q.qat_scale["key"].detach()) == pytest.approx(q.act_scale["key"])
    assert float(q.qat_scale["residual"].detach()) == pytest.approx(q.act_scale["residual"])
    q.train()
    q.mode = "key"
    q(frames[0])
    q.mode = "residual"
    q(frames[1]).square().sum().backward()
    assert q.qat_scale["residual"].grad is not None and q.qat_scale["residual"].grad != 0
    assert q.qat_scale["key"].grad != 0  # the residual step reaches the keyframe's quantizer
    assert q.conv.weight.grad is not None and q.conv.weight.grad.abs().sum() > 0
    state = q.state_dict()
    assert {"qat_scale.key", "qat_scale.residual", "conv.weight"} <= set(state)


def test_float_checkpoints_load_into_wrapped_layers():
    from dynvid.methods.resq.wrap import wrap_model

    float_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    wrapped = wrap_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)))
    wrapped.load_state_dict(float_net.state_dict())
    assert torch.equal(wrapped[0].conv.weight, float_net[0].weight)
    assert torch.equal(wrapped[2].conv.bias, float_net[2].bias)


def test_linear_layers_run_every_mode_like_convolutions():
    from dynvid.methods.resq.layers import QuantLinear
    from dynvid.metrics.cost import CostMeter

    torch.manual_seed(0)
    fc = nn.Linear(6, 5)
    g = torch.Generator().manual_seed(3)
    key = torch.randn(2, 4, 6, generator=g)  # (B, rows, features)
    nxt = key + 0.05 * torch.randn(2, 4, 6, generator=g)
    nxt[:, :2] = key[:, :2]  # two static rows
    exact = QuantLinear(fc, key_bits=(32, 32), res_bits=(32, 32))
    with torch.no_grad():
        exact.mode = "key"
        assert torch.allclose(exact(key), fc(key), atol=1e-6)
        exact.mode = "residual"
        assert torch.allclose(exact(nxt), fc(nxt), atol=1e-5)
    q = QuantLinear(fc, key_bits=(8, 8), res_bits=(8, 8), res_pool=(0, 4, 8), tau=1e-3)
    q.calibrate("key", key)
    q.calibrate("residual", nxt - key)
    q.record_bits = True
    with torch.no_grad():
        q.mode = "key"
        q(key)
        q.mode = "residual"
        with CostMeter(q, batch_size=2) as meter:
            out = q(nxt)
    assert out.shape == (2, 4, 5) and q.last_bits.shape == (2, 4)
    assert (q.last_bits[:, :2] == 0).all() and (q.last_bits[:, 2:] > 0).all()
    assert torch.allclose(out, fc(nxt), atol=0.05)
    on = (q.last_bits > 0).double().mean(1)
    assert torch.allclose(meter.per_sample_macs, 6 * 5 * 4 * on + 3 * 4 * 6)  # rows computed + the policy
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear(nn.Conv2d(1, 1, 1))
    state = nn.Linear(6, 5).state_dict()
    q.load_state_dict(state)
    assert torch.equal(q.linear.weight, state["weight"])


def test_a_qat_scale_pushed_below_zero_still_quantizes():
    from dynvid.methods.resq.layers import QAT_MIN_SCALE

    conv = _conv()
    frames = _frames()
    q = QuantConv2d(conv, key_bits=(8, 8), res_bits=(4, 4))
    q.calibrate("key", frames[0])
    q.enable_qat()
    with torch.no_grad():
        q.qat_scale["key"].fill_(-0.5)
    q.mode = "key"
    out = q(frames[0])
    assert torch.isfinite(out).all()
    assert float(q._scale("key")) == pytest.approx(QAT_MIN_SCALE)


def test_qat_forward_reads_nothing_back_from_the_device(monkeypatch):
    """Whether a QAT scale is set and the bits it was trained at are read to the host once
    after each change (enable_qat, init, a state-dict load), not on every forward: on CUDA
    each read is a synchronisation, per layer and frame. A load is a change: a NaN (unset)
    scale loaded afterwards is seen."""
    frames, q = _qat_layer()
    q.train()
    q.mode = "key"
    q(frames[0])  # the first forward reads the state once
    with monkeypatch.context() as m:
        for name in ("tolist", "item", "__float__", "__bool__"):
            m.setattr(torch.Tensor, name, lambda *a, _n=name: pytest.fail(f"host read: Tensor.{_n}"))
        q.mode = "residual"
        q(frames[1]).square().sum().backward()
        assert q.qat_ready
    state = q.state_dict()
    state["qat_scale.residual"] = torch.tensor(float("nan"))
    q.load_state_dict(state)
    assert q._scale("residual") == pytest.approx(q.act_scale["residual"])  # unset: PTQ's scale applies


def test_dynamic_resq_statistics_count_each_pixels_bits_and_the_static_pixels():
    conv, frames, q = _dynamic(tau=0.05)
    x = frames[1].clone()
    x[:, :, :4] = frames[0][:, :, :4]  # the top half is static: every channel of its residual is 0
    q.record_bits = True
    with torch.no_grad():
        q.mode = "key"
        q(frames[0])
        q.mode = "residual"
        q(x)
        seen = [q.last_bits.long()]
        q(frames[2])
        seen.append(q.last_bits.long())
    counts, zeros = q.statistics()
    every = torch.cat([b.flatten() for b in seen])
    assert counts == {b: int((every == b).sum()) for b in (0, 4, 8)}
    assert zeros == 2 * 4 * 8  # 2 samples x the 4 static rows x 8 columns (frame 2 moves everywhere)
    q.reset_statistics()
    assert q.statistics() == ({}, 0)


def test_dynamic_resq_step_reads_nothing_back_off_the_cpu():
    """Off the CPU, Dynamic-ResQ's residual step keeps its statistics on the device and skips
    the shortcuts that would read a value back (a synchronisation per layer and frame on a
    GPU). On ``meta`` any such read raises, so the step running there shows it reads nothing."""
    from dynvid.metrics.cost import CostMeter

    conv, frames, q = _dynamic(tau=0.05)
    q = q.to("meta")
    with torch.no_grad():
        q.mode = "key"
        q(frames[0].to("meta"))
        q.mode = "residual"
        with CostMeter(q, batch_size=2) as meter:  # the per-sample costs stay on the device too
            out = q(frames[1].to("meta"))
    assert out.device.type == "meta" and out.shape == (2, 6, 8, 8)
    assert meter.batch_size == 2
