"""ResQ quantizers: Eq. (1) lands on the grid and clips, Eq. (6) scale, Eq. (7) min–max per
tensor/channel, Eq. (8) line search against answers known without it (data on a grid, a brute
force over the candidate ranges with another quantization route, min–max), the STE gradients."""

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


def _conv(inp, weight):
    return F.conv2d(inp, weight, padding=1)


def test_line_search_finds_the_grid_that_data_lie_on():
    """Data on the 4-bit grid of scale 0.1 are quantized without error at that scale and at no
    other scale among the candidates: the line search must pick it (known without the search)."""
    torch.manual_seed(0)
    levels = torch.randint(-8, 8, (4, 2, 5, 5)).float()
    levels[0, 0, 0, :2] = torch.tensor([-8.0, 7.0])  # the data span the whole grid: [-0.8, 0.7]
    x = levels * 0.1
    w = torch.randn(3, 2, 3, 3)
    # linspace(-0.8, 0.7, 31) steps by 0.05 and holds r_min = -0.75, whose scale 2 · 0.75 / 15 = 0.1
    out = line_search_range(x, w, w, _conv, bits=4, candidates=31)
    assert out["scale"] == pytest.approx(0.1, abs=1e-6)
    assert out["error"] < 1e-4 * float(torch.linalg.vector_norm(_conv(x, w)))


def _nearest_level(x: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    """Quantization by another route than Eq. (1)'s round-and-clip: the nearest of the grid's levels."""
    levels = scale * torch.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=torch.float64)
    flat = x.double().reshape(-1, 1)
    return levels[(flat - levels).abs().argmin(1)].reshape(x.shape).float()


def test_line_search_agrees_with_a_brute_force_over_every_candidate_range():
    """Eq. (8) by brute force: every candidate pair (r_max > r_min) of linspace(min x, max x, r),
    its symmetric scale, the output error with nearest-level quantization; the line search's
    range must reach the brute-force minimum."""
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, 5) * 0.4
    x[0, 0, 0, 0], x[1, 2, 3, 3] = 4.0, -2.5  # outliers that a good range clips
    w = torch.randn(4, 3, 3, 3) * 0.3
    w_hat = quantize(w, scale_from_range(*minmax_range(w), 8), 8)
    bits, r = 3, 12
    reference = _conv(x, w)
    space = torch.linspace(float(x.min()), float(x.max()), r).tolist()
    brute = min(
        (float(torch.linalg.vector_norm(reference - _conv(_nearest_level(x, 2 * max(hi, -lo) / (2 ** bits - 1), bits),
                                                          w_hat))), 2 * max(hi, -lo) / (2 ** bits - 1))
        for hi in space for lo in space if lo < hi and max(hi, -lo) > 0)
    out = line_search_range(x, w, w_hat, _conv, bits=bits, candidates=r)
    assert out["error"] == pytest.approx(brute[0], rel=1e-5)
    assert out["scale"] == pytest.approx(brute[1], rel=1e-5)
    minmax_scale = float(scale_from_range(x.max(), x.min(), bits))
    assert out["scale"] < minmax_scale  # the outliers are clipped


def test_line_search_clips_an_outlier_better_than_minmax():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 6, 6) * 0.5
    x[0, 0, 0, 0] = 6.0  # one outlier: min–max would waste the 4-bit grid on it
    w = torch.randn(3, 4, 3, 3) * 0.2
    s_w = scale_from_range(*minmax_range(w), 8)
    w_hat = quantize(w, s_w, 8)
    out = line_search_range(x, w, w_hat, _conv, bits=4, candidates=20)
    minmax_scale = float(scale_from_range(x.max(), x.min(), 4))
    assert out["scale"] < minmax_scale  # the outlier is clipped
    minmax_error = float(torch.linalg.vector_norm(_conv(x, w) - _conv(_nearest_level(x, minmax_scale, 4), w_hat)))
    assert out["error"] < 0.7 * minmax_error
    assert out["scale"] == pytest.approx(float(scale_from_range(out["r_max"], out["r_min"], 4)))
    with pytest.raises(ValueError, match="2 candidate"):
        line_search_range(x, w, w_hat, _conv, 4, candidates=1)


def test_straight_through_estimator():
    x = torch.tensor([0.12, -0.33, 5.0], requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    q = quantize_ste(x, s, 4)  # levels -8..7: 5.0 clips
    assert torch.allclose(q, quantize(x.detach(), s.detach(), 4))
    q.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]
    expected_s = (round(1.2) - 1.2) + (round(-3.3) + 3.3) + 7  # LSQ: inside ⌊v⌉ − v, clipped: the level
    assert float(s.grad) == pytest.approx(expected_s, abs=1e-5)
