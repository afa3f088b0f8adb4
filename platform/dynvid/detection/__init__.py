"""Detection components shared by ANT and Looking Fast and Slow (anchors, box coding,
SSDLite head, losses, NMS). The datasets they train on live in ``dynvid.data.coco_vid``."""
