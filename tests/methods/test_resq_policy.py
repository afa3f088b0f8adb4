"""Dynamic-ResQ's policy: Eq. (10) error bounds on residuals with a known answer, and Eq. (11)
on constructed error maps."""

from __future__ import annotations

import pytest
import torch

from dynvid.methods.resq.policy import TAU, error_maps, select_quantizers


def test_eq10_error_bounds():
    delta = torch.zeros(1, 2, 1, 2)
    delta[0, :, 0, 0] = torch.tensor([0.3, 0.4])  # on the 8-bit grid of scale 0.1, norm 0.5
    delta[0, :, 0, 1] = torch.tensor([0.05, 0.0])  # half a step: rounds to 0 at scale 0.1
    w_hat = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # Frobenius norm 5
    maps = error_maps(delta, [1.0, 0.1], [0, 8], w_hat)
    assert maps.shape == (2, 1, 1, 2)
    assert maps[0, 0, 0].tolist() == pytest.approx([0.5 * 5, 0.05 * 5])  # 0 bits: the whole residual
    assert maps[1, 0, 0].tolist() == pytest.approx([0.0, 0.05 * 5], abs=1e-6)
    with pytest.raises(ValueError, match="low to high"):
        error_maps(delta, [0.1, 1.0], [8, 0], w_hat)


def test_eq11_stops_at_the_first_small_gain():
    # three pixels, pool {0, 4, 8} bits
    errors = torch.tensor([[1.0, 1.0, 1.0],      # 0 bits
                           [0.9999, 0.5, 0.5],   # 4 bits
                           [0.9998, 0.4999, 0.1]])  # 8 bits
    choice = select_quantizers(errors, tau=TAU)
    # pixel 0: 0 -> 4 gains 1e-4 < τ: stay at 0 bits; pixel 1: 4 -> 8 gains 1e-4: 4 bits;
    # pixel 2: every step gains more than τ: 8 bits
    assert choice.tolist() == [0, 1, 2]
    assert select_quantizers(errors, tau=10.0).tolist() == [0, 0, 0]  # nothing is worth it
    assert select_quantizers(errors[:1]).tolist() == [0, 0, 0]
