import numpy as np
import pytest
import torch

from dynvid.data.transforms import (
    EvalViewsTransform,
    TrainClipTransform,
    left_center_right_crops,
    multiscale_crop_params,
    resize_short_side,
    to_normalized_tensor,
)


def _frames(t=4, h=60, w=80):
    x = torch.arange(w, dtype=torch.float32).view(1, 1, w, 1).expand(t, h, w, 3)
    return (x * 3).clamp(0, 255).to(torch.uint8).contiguous()


def test_resize_short_side_keeps_aspect():
    assert resize_short_side(_frames(), 30).shape == (4, 30, 40, 3)
    assert resize_short_side(_frames(h=80, w=60), 30).shape == (4, 40, 30, 3)


def test_left_center_right_along_long_axis():
    f = _frames(h=60, w=80)
    left, centre, right = left_center_right_crops(f, 60)
    assert left[0, 0, 0, 0] == 0 and centre[0, 0, 0, 0] == 3 * 10 and right[0, 0, -1, 0] == 3 * 79
    tall = f.transpose(1, 2)  # 80 x 60: crops along height
    top, mid, bottom = left_center_right_crops(tall, 60)
    assert top.shape == mid.shape == bottom.shape == (4, 60, 60, 3)
    assert not torch.equal(top, bottom)
    with pytest.raises(ValueError, match="smaller than crop"):
        left_center_right_crops(f, 61)


def test_multiscale_crop_params_in_bounds_and_tsn_scales():
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(300):
        top, left, ch, cw = multiscale_crop_params(72, 96, rng, jitter_prob=0.5)
        assert 0 <= top and top + ch <= 72 and 0 <= left and left + cw <= 96
        sizes.add((ch, cw))
    allowed = {int(72 * s) for s in (1.0, 0.875, 0.75, 0.66)}
    assert {c for pair in sizes for c in pair} <= allowed
    assert all(abs(sorted(allowed).index(a) - sorted(allowed).index(b)) <= 1 for a, b in sizes)


def test_train_transform_shape_and_flip_consistency():
    t = TrainClipTransform(crop_size=32, short_side=40, jitter_prob=0.0, flip_prob=1.0, scales=(1.0,))
    out = t(_frames(), np.random.default_rng(0))
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    # flipped: intensity decreases left to right in every frame
    assert torch.all(out[0, :, :, 0] > out[0, :, :, -1])


def test_eval_views_and_normalization():
    views = EvalViewsTransform(crop_size=30, short_side=30, num_crops=3)(_frames())
    assert views.shape == (3, 3, 4, 30, 30)
    x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    n = to_normalized_tensor(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert n.shape == (3, 1, 2, 2) and torch.allclose(n, torch.ones_like(n))
