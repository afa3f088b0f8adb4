"""Looking Fast and Slow: memory-guided interleaved video detection with an adaptive policy
(Liu, Zhu, Chen, Kalenichenko, "Looking Fast and Slow: Memory-Guided Mobile Video Object
Detection", 2019; ``shared/papers/looking-fast-and-slow-interleaved-detection.txt``).

Modules:

- :mod:`~dynvid.methods.lfs.memory`: the speed-optimized grouped conv-LSTM (Sec. 3.2) and
  its cost formula against a plain ConvLSTM (Table 1).
- :mod:`~dynvid.methods.lfs.model`: f0 / f1 MobileNetV2 extractors with per-extractor
  projections, the memory with the f1 skip rule, the SSDLite head (Sec. 3.1), the fixed
  interleave schedule and the per-frame cost of the path that ran.
- :mod:`~dynvid.data.detection`: synthetic and COCO-style video clips, and the
  shifted-crop image clips of Sec. 3.3.
- :mod:`~dynvid.methods.lfs.calibration`: per-extractor, per-class Platt scaling of the
  detection scores, fitted on training videos, so that mAP over all frames ranks f0's and
  f1's detections on one scale (our addition).
- :mod:`~dynvid.methods.lfs.evaluation`: fixed and learned policies, mAP per τ, amortized
  MACs, synchronous vs asynchronous latency (Sec. 3.5).
- :mod:`~dynvid.methods.lfs.env`, :mod:`~dynvid.methods.lfs.policy` and
  :mod:`~dynvid.methods.lfs.adaptive`: the adaptive interleaving policy (Sec. 3.4): a
  gymnasium environment with Eq. 1's observation and Eq. 2's reward, the Q-network of Fig. 4
  and the loader of an exported one, and what the engine's RLlib runner
  (:mod:`dynvid.engine.rl`) is handed to train it (a ``PolicySpec``) and to judge it. No
  module here imports Ray.
- :mod:`~dynvid.methods.lfs.trigger`: a label-free policy (ours): f0 after an abrupt change of
  the memory output between two f1 frames, its threshold a quantile fitted on other videos.

:class:`LFSTask` trains the detector on the engine in one stage, ``interleaved`` (Sec. 3.3:
the LSTM unrolled over 6 steps, a uniformly random extractor per step after an f0 first
step, video clips mixed with shifted-crop image clips, SSD losses summed over the steps).
The paper first pretrains the interleaved model on ImageNet classification; no ImageNet
exists on this machine, so the detector trains from scratch unless extractor weights are
given (``lfs.f0_pretrained`` / ``lfs.f1_pretrained``). Its evaluation fits the score calibration on training videos, then runs the fixed policy
``lfs.tau`` (or the learned policy ``lfs.policy``) over whole validation videos; the job's report adds the
mAP-vs-τ curve (Fig. 6) and the async vs sync latency.
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "F0": "model",
    "F1": "model",
    "LFSConfig": "config",
    "LFSTask": "task",
    "build_detector": "task",
    "fixed_schedule": "model",
    "random_actions": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
