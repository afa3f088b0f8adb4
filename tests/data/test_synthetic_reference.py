"""The synthetic data stays what it was: videos and training clips against a reference.

``synthetic_reference.npz`` was written by the renderer and dataset before they were made
faster (issue 20: render only the frames a clip samples, one scene set-up per video), so any
change in what the embedded dataset means shows up here. Regenerate it (``python
tests/data/test_synthetic_reference.py``) only for an intended change of the data, and say so.
"""

from pathlib import Path

import numpy as np
import pytest

from dynvid.config import DataConfig
from dynvid.data.datasets import build_clip_dataset
from dynvid.data.synthetic import SceneConfig, generate_video
from dynvid.data.transforms import KINETICS_MEAN, KINETICS_STD

REFERENCE = Path(__file__).with_name("synthetic_reference.npz")
SCENE = SceneConfig(height=36, width=48, num_frames=12)
NOISY = SceneConfig(height=36, width=48, num_frames=12, noise_std=2.0, shot_noise=0.03)
VIDEOS = [(3, SCENE, 1), (7, SCENE, 5), (11, SCENE, 8), (2, SCENE, 9), (5, SCENE, 10), (4, SCENE, 11),
          (9, NOISY, 2)]  # (index, scene, label): moves, rotation, zoom, blink, bounce, circle, noise
DATA = DataConfig(clip_len=4, stride=3, crop_size=32, train_short_side=36, test_short_side=32, num_test_clips=2,
                  synthetic_height=36, synthetic_width=48, synthetic_frames=12,
                  synthetic_train_videos=24, synthetic_val_videos=12)
ITEMS = [("train", 0, 0), ("train", 0, 13), ("train", 1, 13), ("train", 2, 5), ("val", 0, 3), ("test", 0, 4)]


def _grey_levels(clip: np.ndarray) -> np.ndarray:
    """A normalized clip (..., C, T, H, W) back to its uint8 grey levels (kept small on disk)."""
    mean = np.array(KINETICS_MEAN, np.float32)[:, None, None, None]
    std = np.array(KINETICS_STD, np.float32)[:, None, None, None]
    return np.clip(np.rint((clip * std + mean) * 255), 0, 255).astype(np.uint8)


def _current() -> dict[str, np.ndarray]:
    out = {}
    for index, scene, label in VIDEOS:
        v = generate_video(index, seed=1, cfg=scene, label=label)
        out[f"video{index}_frames"] = v.frames
        out[f"video{index}_masks"] = v.masks
        out[f"video{index}_boxes"] = np.concatenate(v.boxes)
        out[f"video{index}_ids"] = np.concatenate([np.concatenate(v.track_ids), np.concatenate(v.box_classes)])
        out[f"video{index}_motion"] = np.array(v.motion)
    for mode, epoch, i in ITEMS:
        ds = build_clip_dataset(DATA, "train" if mode == "train" else "val", mode, seed=3)
        ds.set_epoch(epoch)
        clip, label = ds[i]
        out[f"{mode}_e{epoch}_i{i}"] = _grey_levels(clip.numpy())
        out[f"{mode}_e{epoch}_i{i}_label"] = np.array(label)
    return out


@pytest.fixture(scope="module")
def current():
    return _current()


def test_videos_match_reference(current):
    ref = np.load(REFERENCE)
    for index, _, _ in VIDEOS:
        key = f"video{index}"
        frames = current[f"{key}_frames"].astype(np.int16)
        diff = np.abs(frames - ref[f"{key}_frames"].astype(np.int16))
        # Exact on this machine; a different SIMD path for sin/cos/exp may move a pixel by one level.
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, key
        assert (current[f"{key}_masks"] != ref[f"{key}_masks"]).mean() < 1e-3, key
        np.testing.assert_allclose(current[f"{key}_boxes"], ref[f"{key}_boxes"], atol=1)
        np.testing.assert_array_equal(current[f"{key}_ids"], ref[f"{key}_ids"])
        np.testing.assert_allclose(current[f"{key}_motion"], ref[f"{key}_motion"], rtol=1e-6)


def test_clips_match_reference(current):
    ref = np.load(REFERENCE)
    for mode, epoch, i in ITEMS:
        key = f"{mode}_e{epoch}_i{i}"
        diff = np.abs(current[key].astype(np.int16) - ref[key].astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, key
        assert current[f"{key}_label"] == ref[f"{key}_label"]


if __name__ == "__main__":
    np.savez_compressed(REFERENCE, **_current())
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
