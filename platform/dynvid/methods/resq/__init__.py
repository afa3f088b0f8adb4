"""ResQ: residual quantization for video perception (Abati et al., "ResQ: Residual Quantization
for Video Perception"; ``shared/papers/resq-residual-quantization.txt``).

Modules:

- :mod:`.quantizers`: Eq. (1) uniform symmetric quantization, the Eq. (6) scale, the Eq. (7)
  min–max weight range, the Eq. (8) line search for activations, the straight-through
  estimator of QAT — pure functions, usable by any method.
- :mod:`.layers`: ``QuantConv2d`` in float / frame / key / residual mode (Eq. 4–5), Dynamic-ResQ's
  per-pixel quantizer pool (Sec. 4.2), QAT scales, BOPs reported to the cost meter.
- :mod:`.policy`: Dynamic-ResQ's Eq. (10) error bounds and Eq. (11) per-pixel selection.
- :mod:`.wrap`: any model's convolutions wrapped (model-agnostic), bit configurations in the
  paper's notation, sequences with a keyframe every T frames, every layer calibrated.
- :mod:`.evaluation`: the Sec. 5 protocol (mIoU and BOPs over every frame), PTQ copies,
  bit-width maps (Fig. 6). :mod:`.report`: frame quantization vs ResQ vs Dynamic-ResQ.
- ``dynvid.backbones.ddrnet``: DDRNet-23-slim, the segmentation network of Fig. 7 / Table 2.

:class:`ResQTask` trains on the engine:

1. ``float``: the segmentation network in floating point (cross-entropy, ``ignore_index``
   255) on single frames. Its evaluation scores the float network and, after PTQ calibration of
   a copy (c = ``resq.calib_samples`` frames, r = ``resq.calib_candidates`` points), the
   configured scheme (``resq.scheme``, ``resq.bits``, ``resq.period``, ``resq.tau``, all
   inference knobs: ``search_spaces/resq.yaml`` sweeps them over one checkpoint).
2. ``qat`` (only with ``resq.qat_epochs > 0``; Sec. 5): the network wrapped at ``resq.bits``,
   scales initialised by PTQ on the first step, then fine-tuned on clips of T frames (the
   first a keyframe, the others residuals, the loss over all of them) with the
   straight-through estimator at ``resq.qat_lr`` (Sec. 5.2: 5e-4).

The embedded segmentation data are the synthetic scenes with their per-pixel object masks
(7 classes, background included); ``--data video-seg:ROOT`` reads Cityscapes / CamVid style
folders (``dynvid.data.segmentation``).

Choice: the paper evaluates Cityscapes' sparse labels on clips in which each labelled frame
falls at position t ≤ T; every frame of the embedded data is labelled, so every frame of every
val video is scored (keyframes included), which is the average over all frames the paper asks
for (Sec. 5.1).
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "IGNORE_INDEX": "task",
    "NETWORKS": "task",
    "QAT_KEYS": "task",
    "ResQConfig": "config",
    "ResQTask": "task",
    "build_network": "task",
    "num_outputs": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
