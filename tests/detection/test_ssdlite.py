"""Tests of dynvid.detection.ssdlite: constant-depth levels, one predictor shared by all of
them, outputs aligned with the anchors, and post-processing."""

from __future__ import annotations

import torch

from dynvid.detection.boxes import encode
from dynvid.detection.ssdlite import SSDLiteHead, postprocess
from dynvid.metrics.cost import CostMeter


def test_levels_share_one_predictor_and_outputs_match_anchors() -> None:
    torch.manual_seed(0)
    head = SSDLiteHead(in_channels=32, num_classes=3, num_levels=3).eval()
    cls, box, sizes = head(torch.randn(2, 32, 10, 10))
    assert sizes == [(10, 10), (5, 5), (3, 3)]
    anchors = head.anchors(sizes)
    assert cls.shape == (2, anchors.shape[0], 3) and box.shape == (2, anchors.shape[0], 4)
    assert anchors.shape[0] == (100 + 25 + 9) * 4
    # the predictor's parameters do not grow with the number of levels: it is shared
    deeper = SSDLiteHead(in_channels=32, num_classes=3, num_levels=5)
    count = lambda m: sum(p.numel() for p in m.predictor.parameters())  # noqa: E731
    assert count(deeper) == count(head)
    with torch.no_grad(), CostMeter(head) as meter:
        head(torch.randn(2, 32, 10, 10))
    assert not meter.uncounted and meter.per_sample_macs.min() > 0


def test_postprocess_decodes_and_suppresses() -> None:
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.05, 0.0, 0.55, 0.5], [0.5, 0.5, 1.0, 1.0]])
    target = torch.tensor([[0.1, 0.1, 0.6, 0.6]])
    codes = encode(target.expand(3, 4), anchors)[None]  # every anchor predicts the same box
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 0, 1], logits[0, 1, 1], logits[0, 2, 0] = 5.0, 4.0, 3.0
    (det,) = postprocess(logits, codes, anchors, score_threshold=0.5)
    # anchors 0 and 1 give the same class-1 box: NMS keeps the higher score; anchor 2 is class 0
    assert det["labels"].tolist() == [1, 0]
    assert torch.allclose(det["boxes"], target.expand(2, 4), atol=1e-5)
    assert det["scores"][0].item() > det["scores"][1].item()
