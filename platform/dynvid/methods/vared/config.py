"""VA-RED²'s configuration: the ``vared`` section of :class:`dynvid.config.ExperimentConfig`
(``--set vared.KEY=VALUE``). A leaf module: the central config imports it, and it imports
nothing of dynvid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VaredConfig"]


@dataclass
class VaredConfig:
    """VA-RED² (Pan et al., thesis Ch. 3, Sec. 4.3, App. A.2). Used by ``method="vared"``."""

    search_space: int = 2
    """S_t = S_c: choices per dimension, 2 = {all, 1/2} or 3 = {all, 1/2, 1/4} (Table 4.1)."""
    temporal: bool = True
    """Temporal-wise dynamic convolution, stride × R = 2^p (Eq. 3.1); off for the Table 4.11 ablation."""
    channel: bool = True
    """Channel-wise dynamic convolution, r = (1/2)^p of the outputs computed (Sec. 3.1)."""
    gate_hidden: int = 32
    """D_h, hidden size of each soft modulation gate (Eq. 3.4; the thesis gives no value)."""
    cheap_kernel: int = 1
    """Spatial kernel of the cheap operations Φ^t, Φ^c: 1 = per-channel scale, 3 = depthwise 3×3."""
    gate_lr_mult: float = 1.0
    """Learning-rate multiplier of the gates' parameters in the efficiency finetune (1 = the
    thesis, one lr for all); a short finetune with Adam, whose step does not grow with the
    gradient, needs more."""
    gate_threshold: float = 0.0
    """Inference-time knob (dynvid's extension, not in the thesis): gate weights at or below it
    count as 0 in eval mode, so cheaper sub-convolutions run (``threshold_weights`` in
    ``methods/vared/dynconv.py``); 0 = the thesis' rule. Swept without retraining."""
    efficiency_weight: float = 0.8
    """λ_e of L = L_a + λ_e·L_e (Eq. 3.6; 0.8 in Sec. 4.3)."""
    dynamic_epochs: int | None = None
    """Epochs of stage 2 (dynamic model from the static base); None = ``optim.epochs``."""
    finetune_epochs: int | None = None
    """Epochs of stage 3 (efficiency-loss finetune); None = a third of ``optim.epochs`` (40 of 120)."""
    finetune_lr: float | None = None
    """Stage-3 learning rate; None = ``optim.lr`` / 18, which is the thesis' 0.01 for R(2+1)D
    (base 0.18) and 0.1 for I3D/X3D (base 1.8), App. A.2 / Sec. 4.3."""
    dynamic_lr: float | None = None
    """Stage-2 learning rate; None = ``optim.lr`` (the thesis trains base and dynamic alike)."""
    explore: float = 0.0
    """Stage 2 only (dynvid's, not the thesis'): share of training samples whose decision, per
    dynamic layer, is replaced by a uniformly drawn choice, so the cheap choices and their
    cheap operations are trained before the efficiency finetune turns them on (the thesis'
    dynamic model trains from scratch with every choice mixed in; ours starts as the static
    base with the gates on "compute all"). 0 = off."""
