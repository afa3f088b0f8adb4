"""Frame-wise execution of one-frame 3-D convolutions (``dynvid.backbones.frameconv``)."""

import pytest
import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.backbones.frameconv import FrameConv3d, frame_conv3d, use_frame_convs


@pytest.mark.parametrize("stride,groups", [((1, 1, 1), 1), ((2, 2, 2), 1), ((3, 1, 1), 4)])
def test_frame_conv3d_equals_conv3d(stride, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 9, 9)
    w, b = torch.randn(12, 8 // groups, 1, 3, 3), torch.randn(12)
    expected = nn.functional.conv3d(x, w, b, stride, (0, 1, 1), 1, groups)
    torch.testing.assert_close(frame_conv3d(x, w, b, stride, (0, 1, 1), (1, 1, 1), groups), expected, atol=1e-5, rtol=1e-5)


def test_use_frame_convs_switches_one_frame_kernels_only_and_keeps_the_function():
    torch.manual_seed(0)
    model = build_backbone("r2plus1d_18", width_mult=0.125, num_classes=5).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected = model(x)
    keys = list(model.state_dict())
    use_frame_convs(model)
    switched = [m for m in model.modules() if isinstance(m, FrameConv3d)]
    plain = [m for m in model.modules() if type(m) is nn.Conv3d]
    assert switched and all(m.kernel_size[0] == 1 for m in switched)
    assert plain and all(m.kernel_size[0] > 1 or m.padding[0] > 0 for m in plain)  # temporal convs stay
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)
