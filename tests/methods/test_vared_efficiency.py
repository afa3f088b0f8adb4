"""VA-RED² efficiency loss (thesis Sec. 3.4, Eq. 3.6)."""

from __future__ import annotations

import pytest
import torch

from dynvid.methods.vared import efficiency_loss

def test_efficiency_loss_weights_layers_by_cost_and_masks_wrong_samples():
    fractions = torch.tensor([[1.0, 0.5], [0.25, 0.25], [1.0, 1.0]])
    costs = torch.tensor([300.0, 100.0])  # shares 0.75 and 0.25
    correct = torch.tensor([True, True, False])
    # sample 0: (0.75*1 + 0.25*0.5)^2 = 0.875^2; sample 1: 0.25^2; sample 2: μ0 = 0
    expected = (0.875**2 + 0.25**2 + 0.0) / 3
    assert efficiency_loss(fractions, costs, correct).item() == pytest.approx(expected)


def test_efficiency_loss_gradient_and_shape_errors():
    fractions = torch.tensor([[0.5, 0.5]], requires_grad=True)
    efficiency_loss(fractions, torch.tensor([1.0, 3.0]), torch.tensor([True])).backward()
    assert fractions.grad[0, 1] == pytest.approx(3 * fractions.grad[0, 0].item())  # ∝ the layer's share
    with pytest.raises(ValueError, match="shapes"):
        efficiency_loss(torch.ones(2, 3), torch.ones(2), torch.ones(2, dtype=torch.bool))



def test_efficiency_loss_is_finite_with_float16_fractions():
    """Under CUDA autocast the fractions are float16; real MAC counts overflow float16."""
    fractions = torch.tensor([[0.5, 1.0]], dtype=torch.float16)
    loss = efficiency_loss(fractions, torch.tensor([3e8, 1e8]), torch.tensor([True]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx((0.75 * 0.5 + 0.25) ** 2)
