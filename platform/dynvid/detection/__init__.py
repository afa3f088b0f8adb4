"""Detection components shared by ANT and Looking Fast and Slow. The datasets they train on
live in ``dynvid.data.coco_vid``.

- :mod:`~dynvid.detection.boxes`: batched IoU, SSD box coding, and the candidates of many
  images and classes moved apart for one call of torchvision's NMS.
- :mod:`~dynvid.detection.anchors`: SSD anchors, aspect ratios {1, 0.5, 2}.
- :mod:`~dynvid.detection.losses`: anchor matching, focal (torchvision's) / sigmoid
  classification with hard-example mining, smooth-L1 localisation.

- :mod:`~dynvid.detection.ssdlite`: the SSDLite head (constant 256-channel levels, one shared
  box predictor) and post-processing.
- :mod:`~dynvid.detection.efficientdet`: EfficientDet's anchors, BiFPN neck (fast normalized
  fusion) and class/box head, for ANT.

COCO-style evaluation (mAP@0.5, AP@[.5:.95]) is ``dynvid.metrics.detection``.
"""
