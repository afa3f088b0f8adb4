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


def _randomize_batchnorms(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("image,batch", [(192, 1), (320, 3), (72, 2)])
def test_folded_neck_and_head_compute_what_the_training_modules_compute(image, batch, channels_last):
    import copy

    from dynvid.backbones.fuse import fold_batchnorm

    torch.manual_seed(0)
    neck = BiFPN((8, 16, 32), channels=16, layers=2, levels=5)
    head = EfficientDetHead(16, num_classes=3, repeats=2, levels=5)
    with torch.no_grad():
        for layer in neck.layers:  # fusion weights away from their init, one switched off by the ReLU
            for node in [*layer.top_down, *layer.bottom_up]:
                node.fuse.weights.uniform_(-0.5, 2.0)
    _randomize_batchnorms(neck)
    _randomize_batchnorms(head)
    neck.eval()
    head.eval()
    fneck, fhead = fold_batchnorm(copy.deepcopy(neck)), fold_batchnorm(copy.deepcopy(head))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        fneck, fhead = fneck.to(memory_format=layout), fhead.to(memory_format=layout)
    s = -(-image // 8)  # P3 of a stride-8 backbone, rounded up like a conv with padding
    feats = [torch.randn(batch, c, -(-s // 2 ** k), -(-s // 2 ** k)).contiguous(memory_format=layout)
             for k, c in enumerate((8, 16, 32))]
    with torch.no_grad():
        levels = neck(feats)
        cls, box = head(levels)
        flevels = fneck(feats)
        fcls, fbox = fhead(flevels)
    assert len(flevels) == 5
    for a, b in zip(flevels, levels):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert cls.shape == fcls.shape == (batch, sum(x.shape[-2] * x.shape[-1] for x in levels) * 9, 3)
    torch.testing.assert_close(fcls, cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fbox, box, atol=1e-5, rtol=1e-5)
    for folded in (fneck, fhead):
        folded.train()
    with pytest.raises(RuntimeError, match="inference"):
        fneck(feats)
    with pytest.raises(RuntimeError, match="inference"):
        fhead(levels)


@pytest.mark.parametrize("sizes", [[(12, 12), (6, 6), (3, 3), (2, 2)], [(5, 7), (3, 4), (2, 2), (1, 1)],
                                   [(4, 4)], [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]])
def test_canvas_layout_keeps_a_zero_border_between_levels_and_gathers_them_back(sizes):
    from dynvid.detection.efficientdet import canvas_layout

    layout = canvas_layout(sizes)
    H, W = layout.size
    owner = torch.full((H + 2, W + 2), -1)  # a frame of -1 around the canvas: the conv's padding
    for k, ((h, w), (top, left)) in enumerate(zip(sizes, layout.origins)):
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        assert (owner[top + 1:top + h + 1, left + 1:left + w + 1] == -1).all()  # no overlap
        owner[top + 1:top + h + 1, left + 1:left + w + 1] = k
    for k, ((h, w), (top, left)) in enumerate(zip(sizes, layout.origins)):
        ring = owner[top:top + h + 2, left:left + w + 2].clone()
        ring[1:-1, 1:-1] = -1
        assert (ring == -1).all(), f"level {k}'s 3×3 neighbourhood reaches another level"
    maps = [torch.randn(2, 3, h, w) for h, w in sizes]
    canvas = layout.paint(maps)
    assert canvas.shape == (2, 3, H, W) and canvas.abs().sum() == pytest.approx(sum(m.abs().sum() for m in maps))
    gathered = canvas.flatten(2).index_select(2, layout.index)
    torch.testing.assert_close(gathered, torch.cat([m.flatten(2) for m in maps], 2))


def test_canvas_affine_refuses_mismatched_levels():
    from dynvid.detection.efficientdet import CanvasAffine, canvas_layout

    with pytest.raises(ValueError, match="levels, channels"):
        CanvasAffine(torch.ones(3, 4), torch.ones(3, 5))
    affine = CanvasAffine(torch.ones(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2 levels"):
        affine(torch.zeros(1, 4, 4, 9), canvas_layout([(4, 4), (2, 2), (1, 1)]))


@pytest.mark.parametrize("assign", [False, True])
def test_a_folded_neck_and_head_given_new_weights_run_them_not_their_stale_fold(assign):
    import copy

    from dynvid.backbones.fuse import fold_batchnorm

    def folded_pair(seed):
        torch.manual_seed(seed)
        neck = BiFPN((8, 16, 32), channels=16, layers=1, levels=5)
        head = EfficientDetHead(16, num_classes=3, repeats=2, levels=5)
        with torch.no_grad():
            for node in [*neck.layers[0].top_down, *neck.layers[0].bottom_up]:
                node.fuse.weights.uniform_(0.1, 2.0)
        _randomize_batchnorms(neck)
        _randomize_batchnorms(head)
        return fold_batchnorm(neck), fold_batchnorm(head)

    feats = [torch.randn(2, c, s, s) for c, s in ((8, 12), (16, 6), (32, 3))]
    (neck, head), (new_neck, new_head) = folded_pair(0), folded_pair(1)
    with torch.no_grad():
        head(neck(feats))  # every cache built from the first weights
        neck.load_state_dict(copy.deepcopy(new_neck.state_dict()), assign=assign)
        head.load_state_dict(copy.deepcopy(new_head.state_dict()), assign=assign)
        levels, expected_levels = neck(feats), new_neck(feats)
        for a, b in zip(levels, expected_levels):
            torch.testing.assert_close(a, b)
        for a, b in zip(head(expected_levels), new_head(expected_levels)):
            torch.testing.assert_close(a, b)
