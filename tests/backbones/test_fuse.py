"""Inference-time BatchNorm folding (``dynvid.backbones.fuse``)."""

import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.backbones.frameconv import use_frame_convs
from dynvid.backbones.fuse import bn_affine, fold_batchnorm


def _trained_looking(model: nn.Module) -> nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_bn_affine_is_the_eval_batchnorm():
    bn = _trained_looking(nn.Sequential(nn.BatchNorm3d(5)))[0]
    x = torch.randn(2, 5, 3, 4, 4)
    a, b = bn_affine(bn)
    torch.testing.assert_close(a.view(1, -1, 1, 1, 1) * x + b.view(1, -1, 1, 1, 1), bn(x))


def test_folded_r2plus1d_computes_the_same_function_without_batchnorm():
    torch.manual_seed(0)
    model = _trained_looking(build_backbone("r2plus1d_18", width_mult=0.125, num_classes=5))
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(use_frame_convs(model))
        assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())  # every BN follows a conv
        torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-4)


def test_2d_convs_fold_and_self_folding_modules_are_not_entered():
    class OwnFold(nn.Module):  # holds a conv–BN Sequential it does not run as one
        def __init__(self):
            super().__init__()
            self.pair = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
            self.folded_by_itself = False

        def fold_batchnorm_(self):
            self.folded_by_itself = True

    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6), nn.SiLU()),
                          nn.Conv2d(6, 5, 1), nn.BatchNorm2d(5), nn.BatchNorm2d(5))  # the second BN follows no conv
    own = OwnFold()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        expected = model(x)
        fold_batchnorm(nn.ModuleList([model, own]))
        got = model(x)
    assert [type(m).__name__ for m in model[0]] == ["Conv2d", "Identity", "SiLU"]
    assert [type(m).__name__ for m in model[1:]] == ["Conv2d", "Identity", "BatchNorm2d"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert own.folded_by_itself and isinstance(own.pair[1], nn.BatchNorm2d)
