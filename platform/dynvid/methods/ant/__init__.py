"""ANT: Adapt Network across Time (Liu et al.; ``shared/papers/ant-adapt-network-across-time.txt``).

Modules:

- ``dynvid.backbones.efficientnet``: EfficientNet-B0 and its width supernet (6 MBConv6 stages
  × expansion ratios {1, …, 6}, sliced shared weights; Sec. 3.1, 4.1); ``width_mult=1.1`` is
  Table 1's D0+. ``dynvid.detection.efficientdet``: the BiFPN and the EfficientDet head.
- :mod:`.modules`: sandwich rule, in-place distillation, BatchNorm recalibration, the fusion
  module and the dynamic gate (Sec. 3.2), the key-frame rule (Sec. 3.3).
- :mod:`.model`: the ANT detector (key frames at full width; non-key frames through fusion +
  gates with per-sample widths run on sub-batches) and the non-temporal baseline.
- :mod:`.training`: the loss steps of the three stages below.
- :mod:`.evaluation`: static / ANT / non-temporal modes over whole videos, AP@[.5:.95],
  amortized GMACs, single-core latency. :mod:`.nas`: the static NAS baselines (Fig. 4).
- :mod:`.report`: Table 1 / Fig. 4 comparisons (the job's report and the benchmark).

:class:`ANTTask` trains on the engine in three stages:

1. ``static``: the standalone network (EfficientDet-D0, all ratios 6) on single frames. The
   paper starts it from MS COCO weights; none exist here, so it trains from scratch.
2. ``supernet`` (Sec. 3.1): initialised from it; the sandwich rule with in-place distillation,
   the same schedule (``ant.supernet_epochs``, 0 = ``optim.epochs``). Its evaluation
   recalibrates BatchNorm for the largest and the smallest subnet (buffers restored after).
3. ``gates`` (Sec. 3.2): fusion modules and gates added (random init), the stem frozen, clips
   of ``ant.key_every`` frames with the first a key frame, Gumbel-softmax gates, KD between
   fused and golden features, lr ``ant.gate_lr`` (0.002) for ``ant.gate_epochs`` (8). With
   ``ant.temporal=false`` this stage trains the non-temporal baseline instead. Its evaluation
   runs adaptive key frames at ``ant.key_threshold`` (an inference knob: ``search_spaces/ant.yaml``).

Choice (BatchNorm): the supernet's shared statistics fit no width (they average over all
the subnets it trained). Static subnets are recalibrated before evaluation. The dynamic
network gets private statistics per expansion ratio in each elastic block ("switchable
BN", Slimmable Networks): calibrated per ratio on training frames at the start of stage 2,
updated by stage-2 training, and used at inference by whichever width each frame runs.
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "ANTTask": "task",
    "AntConfig": "config",
    "GATE_KEYS": "task",
    "SUPERNET_KEYS": "task",
    "build_detector": "task",
    "frame_targets": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
