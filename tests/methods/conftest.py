"""Fixtures shared by the method tests."""

from __future__ import annotations

import pytest
import torch

from dynvid.data.detection import build_detection_dataset
from dynvid.data.synthetic import SceneConfig
from dynvid.methods.lfs.model import InterleavedDetector


@pytest.fixture(scope="module")
def env_parts():
    """A tiny untrained Looking Fast and Slow detector and 2 short videos for its environment."""
    torch.manual_seed(0)
    model = InterleavedDetector(6, f0_size=64, f1_size=32, memory_input=16, state_channels=8, groups=4,
                                num_levels=2).eval()
    videos = build_detection_dataset("synthetic:detection", "train", size=64, clip_len=2, mode="eval", num_videos=2,
                                     scene=SceneConfig(height=64, width=64, num_frames=10))
    return model, videos
