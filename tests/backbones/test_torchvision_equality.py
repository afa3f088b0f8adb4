"""Every dynvid backbone that torchvision also has is torchvision's network (issue 22): built with
the same weights, both give the same outputs (≤ 1e-5) and the cost meter counts the same MACs.
dynvid's builders keep only what torchvision lacks (width multipliers, LFS's removed stride,
the split into features and head)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from dynvid.backbones import build_backbone
from dynvid.metrics.cost import model_cost

CASES = [  # dynvid name, torchvision builder, input (C, [T,] H, W)
    ("mobilenet_v2", torchvision.models.mobilenet_v2, (3, 64, 64)),
    ("resnet18", torchvision.models.resnet18, (3, 64, 64)),
    ("resnet34", torchvision.models.resnet34, (3, 64, 64)),
    ("resnet50", torchvision.models.resnet50, (3, 64, 64)),
    ("resnet101", torchvision.models.resnet101, (3, 64, 64)),
    ("efficientnet_b0", torchvision.models.efficientnet_b0, (3, 64, 64)),
    ("r2plus1d_18", torchvision.models.video.r2plus1d_18, (3, 4, 32, 32)),
]


@pytest.mark.parametrize("name,tv_builder,shape", CASES, ids=[c[0] for c in CASES])
def test_the_same_network_as_torchvision(name, tv_builder, shape):
    torch.manual_seed(0)
    theirs = tv_builder(weights=None, num_classes=7).eval()
    ours = build_backbone(name, num_classes=7).eval()
    ours.load_state_dict(theirs.state_dict())  # strict: the same parameters and buffers, by name
    # BatchNorm statistics away from (0, 1), so that a misplaced normalisation would show
    for m in theirs.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert model_cost(ours, shape)["macs"] == model_cost(theirs, shape)["macs"] > 0
