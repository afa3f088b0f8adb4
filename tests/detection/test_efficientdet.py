"""EfficientDet BiFPN + head on the EfficientNet-B0 backbone: shapes, anchors, fusion weights."""

from __future__ import annotations

import pytest
import torch

from dynvid.backbones.efficientnet import EfficientNetSupernet
from dynvid.detection.efficientdet import BiFPN, EfficientDetHead, retina_anchors
from dynvid.metrics.cost import CostMeter


def test_d0_layout_on_the_supernet_backbone():
    torch.manual_seed(0)
    backbone = EfficientNetSupernet(1).eval()
    neck = BiFPN((40, 112, 320), channels=64, layers=3, levels=5).eval()
    head = EfficientDetHead(64, num_classes=4, repeats=3, levels=5).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        stages = backbone.stage_features(x, (3, 2, 6, 1, 4, 5))
        feats = neck([stages[3], stages[5], stages[7]])  # P3 (stride 8), P4 (16), P5 (32)
        cls, box = head(feats)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    assert sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)] and all(f.shape[1] == 64 for f in feats)
    anchors = retina_anchors(sizes, (128, 128))
    assert anchors.shape == (sum(h * w for h, w in sizes) * 9, 4) == (box.shape[1], 4)
    assert cls.shape == (2, box.shape[1], 4)
    assert torch.sigmoid(cls).mean().item() == pytest.approx(0.01, rel=0.5)  # the prior
    with CostMeter(neck) as meter, torch.no_grad():
        neck([stages[3], stages[5], stages[7]])
    assert meter.per_sample_macs[0].item() > 0 and not meter.uncounted  # every weighted layer counted


def test_retina_anchors_follow_the_stride():
    a = retina_anchors([(2, 2)], (64, 64))  # stride 32: base size 4 × 32 = 128 px = 2.0 normalised
    first = a[:9]
    wh = first[:, 2:] - first[:, :2]
    assert torch.allclose(wh[1], torch.tensor([2.0, 2.0]))  # scale 2^0, ratio 1 (scales outer, ratios inner)
    assert torch.allclose(wh[4], torch.tensor([2.0, 2.0]) * 2 ** (1 / 3))
    assert torch.allclose((a[0, :2] + a[0, 2:]) / 2, torch.tensor([0.25, 0.25]))


def test_fast_normalized_fusion_weights_are_trained_and_nonnegative():
    neck = BiFPN((8, 16, 32), channels=8, layers=1, levels=5)
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2)]
    out = neck(feats)
    sum(o.sum() for o in out).backward()
    node = neck.layers[0].top_down[0]
    assert node.fuse.weights.grad is not None and node.fuse.weights.grad.abs().sum() > 0
    with torch.no_grad():
        node.fuse.weights.copy_(torch.tensor([-1.0, 1.0]))  # ReLU: the first input is switched off
        x, y = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
        node.eval()
        assert torch.allclose(node([x, y]), node([torch.zeros_like(x), y]), atol=1e-6)
    with pytest.raises(ValueError, match="levels"):
        BiFPN((8, 16, 32), levels=2)
