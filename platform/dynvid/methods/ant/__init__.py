"""ANT: Adapt Network across Time (``shared/papers/ant-adapt-network-across-time.txt``).

Work in progress (issue 8): the EfficientNet-B0 width supernet is
``dynvid.backbones.efficientnet``; :mod:`.modules` holds the sandwich rule, in-place
distillation, BN recalibration, the fusion module, the dynamic gate and the key-frame rule.
The detector (BiFPN neck and head), the two training stages and the evaluation are not
built yet.
"""
