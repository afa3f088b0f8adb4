import numpy as np
import pytest

from dynvid.data.sampling import clip_span, random_clip_indices, resampled_length, uniform_clip_indices


def test_clip_span():
    assert clip_span(8, 8) == 57
    assert clip_span(1, 4) == 1
    with pytest.raises(ValueError):
        clip_span(0, 1)


def test_random_clip_within_video():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = random_clip_indices(100, 8, 4, rng)
        assert idx[-1] < 100 and np.all(np.diff(idx) == 4)
        starts.add(int(idx[0]))
    assert max(starts) <= 100 - 29 and min(starts) < 10 and max(starts) > 60  # covers the range
    assert len(starts) > 30


def test_short_video_starts_at_zero():
    idx = random_clip_indices(10, 8, 4, np.random.default_rng(0))
    assert idx.tolist() == [0, 4, 8, 12, 16, 20, 24, 28]  # the reader clamps past the end


def test_uniform_clips_spread_and_centred():
    clips = uniform_clip_indices(250, 8, 8, 10)
    assert clips.shape == (10, 8)
    centres = clips.mean(axis=1)
    # clip k centred at (k + 0.5) / K of the video; the outer clips are clamped inside it
    assert np.allclose(centres[2:-2], ((np.arange(10) + 0.5) * 25)[2:-2], atol=1.0)
    assert clips[0, 0] == 0 and clips[-1, -1] == 249
    assert clips.min() >= 0 and clips.max() < 250
    single = uniform_clip_indices(250, 8, 8, 1)
    assert single[0, 0] == (250 - 57) // 2


def test_resampled_length():
    assert resampled_length(250, 25, None) == 250
    assert resampled_length(250, 25, 30) == 300
    assert resampled_length(300, 30, 15) == 150
