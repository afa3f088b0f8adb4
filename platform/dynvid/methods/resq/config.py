"""ResQ's configuration: the ``resq`` section of :class:`dynvid.config.ExperimentConfig`
(``--set resq.KEY=VALUE``). A leaf module: the central config imports it, and it imports
nothing of dynvid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResQConfig"]


@dataclass
class ResQConfig:
    """ResQ (residual quantization, Sec. 4–5). Used by ``method="resq"``: stage ``float`` (the
    segmentation network in floating point) and, with ``qat_epochs > 0``, stage ``qat``
    (quantization-aware fine-tuning of ResQ at ``bits``, scales initialised by PTQ)."""

    network: str = "ddrnet23_slim"
    """Segmentation network: ``ddrnet23_slim`` (Fig. 7, Table 2) or ``ddrnet23``."""
    crop_size: int | None = None
    """Training crop of a folder dataset (``video-seg:ROOT``); None trains on full frames."""
    bits: str = "W8A8->W4A4"
    """Bit configuration in the paper's notation, keyframe -> residual: ``W8A8->W4A4``, or a
    Dynamic-ResQ pool ``W8A8->W8A{0,4,8}``. Inference only (PTQ), except for the QAT stage."""
    scheme: str = "resq"
    """``resq`` (residuals between keyframes) or ``frame`` (frame quantization: the same
    keyframes, every other frame quantized on its own). Inference only."""
    period: int = 3
    """Keyframe period T (Sec. 5.2: T = 3 on Cityscapes). Inference only."""
    tau: float = 0.0003
    """Dynamic-ResQ's threshold of Eq. (11) (Sec. 5: 0.0003). Inference only."""
    per_channel: bool = False
    """Channel quantization of the weights (Sec. 5: tensor quantization unless stated)."""
    calib_samples: int = 64
    """PTQ calibration samples c, in frames (Sec. 5: 64)."""
    calib_candidates: int = 20
    """Line-search points r of Eq. (8) (Sec. 5: 20)."""
    qat_epochs: int = 0
    """Epochs of the QAT stage (0: PTQ only, no QAT stage)."""
    qat_lr: float = 5e-4
    """QAT learning rate (Sec. 5.2: 5e-4)."""
    eval_frames: int | None = None
    """Frames scored per val video (None: all)."""
    report_bits: tuple[str, ...] = ("W8A8->W4A4", "W4A4->W3A3", "W8A8->W8A8", "W8A8->W8A{0,4,8}")
    """Bit configurations the job's report compares (frame quantization vs ResQ; a pool: Dynamic-ResQ)."""
    map_layer: str = "conv1.3"
    """Layer whose Dynamic-ResQ bit-width maps the report saves (Fig. 6 shows HRNet's second stem conv;
    DDRNet's is ``conv1.3``)."""
    map_frames: int = 6
    """Frames of the bit-width map figure: one keyframe, then residuals at growing distance."""
