"""VA-RED² efficiency loss (thesis Sec. 3.4, Eq. 3.6).

    L_e = ( μ0 · Σ_l  C(f_l) / Σ_k C(f_k) · r_l^s / R_l^s )²,   μ0 = 1 if the sample is
    classified correctly, else 0;   L = L_a + λ_e · L_e   (λ_e = 0.8, Sec. 4.3).

Per sample; the batch loss is the mean over the batch. ``r_l^s / R_l^s`` is the fraction
of layer l that actually runs (the largest executed choice, App. A.2). Its value is
piecewise constant in the gate outputs; :class:`~dynvid.methods.vared.dynconv.DynamicConv3d`
hands over a straight-through version (value = executed fraction, gradient of
``Σ r_i V_c[i] · Σ V_t[j] / R_j``), see :func:`dynvid.methods.vared.dynconv.soft_fraction`.
The fractions are those of the sub-convolution that runs, ⌈r·C⌉/C · ⌈T_o/R⌉/T_o, not the
nominal r/R: a layer with one output frame saves nothing by R = 2.

The straight-through gradient is this implementation's: A.1 computes the largest filter
(i_s = 1) throughout training, which would make L_e a constant without it.
Misclassified samples get no efficiency pressure (μ0 = 0): they may use more computation.
"""

from __future__ import annotations

import torch

__all__ = ["efficiency_loss", "layer_weights"]


def layer_weights(layer_costs: torch.Tensor) -> torch.Tensor:
    """``C(f_l) / Σ_k C(f_k)``: each dynamic layer's share of the full cost of all of them."""
    total = layer_costs.sum()
    if total <= 0:
        raise ValueError("layer costs must have a positive sum")
    return layer_costs / total


def efficiency_loss(fractions: torch.Tensor, layer_costs: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Eq. 3.6, averaged over the batch.

    Args:
        fractions: ``(B, L)`` executed fraction r_l^s / R_l^s of each dynamic layer per sample.
        layer_costs: ``(L,)`` full cost C(f_l) of each layer (MACs at the current input size).
        correct: ``(B,)`` bool, μ0 (prediction == label).
    """
    if fractions.dim() != 2 or fractions.shape[1] != layer_costs.shape[0] or correct.shape != fractions.shape[:1]:
        raise ValueError(f"shapes do not match: fractions {tuple(fractions.shape)}, "
                         f"layer_costs {tuple(layer_costs.shape)}, correct {tuple(correct.shape)}")
    # float32 throughout: under CUDA autocast the fractions are float16, where MAC counts
    # (~1e8) overflow to inf before they are normalised
    fractions = fractions.float()
    weights = layer_weights(layer_costs.to(device=fractions.device, dtype=torch.float64)).float()
    per_sample = correct.to(fractions) * (fractions * weights).sum(1)
    return per_sample.square().mean()
