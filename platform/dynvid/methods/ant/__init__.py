"""ANT: Adapt Network across Time (``shared/papers/ant-adapt-network-across-time.txt``).

Work in progress (issue 8): the EfficientNet-B0 width supernet is
``dynvid.backbones.efficientnet``; the BiFPN and head are ``dynvid.detection.efficientdet``;
:mod:`.modules` holds the sandwich rule, in-place distillation, BN recalibration, the fusion
module, the dynamic gate and the key-frame rule; :mod:`.model` the ANT detector (key frames at
full width, non-key frames through fusion + gates with per-sample widths). The two training
stages, the baselines, the evaluation, the job and the benchmark are not built yet.
"""
