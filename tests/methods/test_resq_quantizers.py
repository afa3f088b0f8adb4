"""ResQ quantizers: Eq. (1) lands on the grid and clips, Eq. (6) scale, Eq. (7) min–max per
tensor/channel, Eq. (8) line search on a case with a known better range, the STE gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dynvid.methods.resq.quantizers import (FLOAT_BITS, line_search_range, minmax_range, quantize, quantize_ste,
                                            scale_from_range)


def test_values_lie_on_the_grid_and_clip_at_the_bounds():
    torch.manual_seed(0)
    x = torch.randn(1000) * 3
    s = torch.tensor(0.05)
    for bits in (2, 4, 8):
        q = quantize(x, s, bits)
        levels = q / s
        assert torch.allclose(levels, levels.round(), atol=1e-4)
        assert levels.min() >= -(2 ** (bits - 1)) and levels.max() <= 2 ** (bits - 1) - 1
    q4 = quantize(torch.tensor([100.0, -100.0, 0.26, -0.26]), s, 4)
    assert q4.tolist() == pytest.approx([7 * 0.05, -8 * 0.05, 5 * 0.05, -5 * 0.05])
    x_in = torch.linspace(-0.3, 0.3, 50)  # inside the 8-bit range: error at most half a step
    assert (quantize(x_in, s, 8) - x_in).abs().max() <= 0.025 + 1e-6


def test_float_and_zero_bit_quantizers():
    x = torch.randn(5)
    assert quantize(x, 1.0, FLOAT_BITS) is x
    assert torch.equal(quantize(x, 1.0, 0), torch.zeros(5))
    with pytest.raises(ValueError, match="scale must be > 0"):
        quantize(x, 0.0, 8)
    with pytest.raises(ValueError, match="non-negative integer"):
        quantize(x, 1.0, -1)


def test_scale_of_eq6_and_minmax_of_eq7():
    assert float(scale_from_range(1.0, -3.0, 8)) == pytest.approx(6 / 255)
    assert float(scale_from_range(2.0, -0.5, 4)) == pytest.approx(4 / 15)
    w = torch.tensor([[[[1.0, -2.0]]], [[[0.5, 0.25]]]])  # (2, 1, 1, 2)
    hi, lo = minmax_range(w)
    assert (float(hi), float(lo)) == (1.0, -2.0)
    hi_c, lo_c = minmax_range(w, per_channel=True)
    assert hi_c.shape == (2, 1, 1, 1) and hi_c.flatten().tolist() == [1.0, 0.5] and lo_c.flatten().tolist() == [-2.0, 0.25]
    s_c = scale_from_range(hi_c, lo_c, 8)
    q = quantize(w, s_c, 8)  # per-channel: each channel's extreme is representable within a step
    assert (q - w).abs().max() <= s_c.max() / 2 + 1e-6


def test_line_search_clips_an_outlier_and_returns_the_minimum_of_eq8():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 6, 6) * 0.5
    x[0, 0, 0, 0] = 6.0  # one outlier: min–max would waste the 4-bit grid on it
    w = torch.randn(3, 4, 3, 3) * 0.2
    s_w = scale_from_range(*minmax_range(w), 8)
    w_hat = quantize(w, s_w, 8)

    def conv(inp, weight):
        return F.conv2d(inp, weight, padding=1)

    out = line_search_range(x, w, w_hat, conv, bits=4, candidates=20)
    assert out["error"] == min(out["errors"])  # the argmin of Eq. (8) over the searched ranges
    assert len(out["magnitudes"]) == len(out["errors"])
    minmax_scale = float(scale_from_range(x.max(), x.min(), 4))
    assert out["scale"] < minmax_scale  # the outlier is clipped
    minmax_error = float(torch.linalg.vector_norm(conv(x, w) - conv(quantize(x, minmax_scale, 4), w_hat)))
    assert out["error"] < minmax_error
    assert out["scale"] == pytest.approx(float(scale_from_range(out["r_max"], out["r_min"], 4)))
    with pytest.raises(ValueError, match="2 candidate"):
        line_search_range(x, w, w_hat, conv, 4, candidates=1)


def test_straight_through_estimator():
    x = torch.tensor([0.12, -0.33, 5.0], requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    q = quantize_ste(x, s, 4)  # levels -8..7: 5.0 clips
    assert torch.allclose(q, quantize(x.detach(), s.detach(), 4))
    q.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]
    expected_s = (round(1.2) - 1.2) + (round(-3.3) + 3.3) + 7  # LSQ: inside ⌊v⌉ − v, clipped: the level
    assert float(s.grad) == pytest.approx(expected_s, abs=1e-5)
