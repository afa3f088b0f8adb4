"""Dataset specs and the in-memory synthetic action dataset."""

import pytest
import torch

from dynvid.config import DataConfig
from dynvid.data.datasets import SyntheticActions, build_clip_dataset, parse_spec
from dynvid.data.errors import DatasetError
from dynvid.data.kinetics import KineticsDataset
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig, SyntheticVideoSource

SMALL = DataConfig(clip_len=4, stride=2, crop_size=32, train_short_side=36, test_short_side=32, num_test_clips=2,
                   synthetic_height=36, synthetic_width=48, synthetic_frames=16,
                   synthetic_train_videos=24, synthetic_val_videos=12)


def test_synthetic_modes_shapes_and_labels():
    train = build_clip_dataset(SMALL, "train", "train")
    assert isinstance(train, SyntheticActions) and len(train) == 24 and train.num_classes == 12
    clip, label = train[13]
    assert clip.shape == (3, 4, 32, 32) and label == 13 % 12
    val_clip, _ = build_clip_dataset(SMALL, "val", "val")[0]
    views, _ = build_clip_dataset(SMALL, "val", "test")[0]
    assert val_clip.shape == (3, 4, 32, 32) and views.shape == (6, 3, 4, 32, 32)


@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_synthetic_frames_come_from_the_generator(mode):
    ds = build_clip_dataset(SMALL, "train", mode)  # train and val render a clip's frames, test the whole video
    scene = SceneConfig(height=36, width=48, num_frames=16)
    frames = SyntheticVideoSource(24, seed=0, cfg=scene, split="train").get(5).frames
    got = ds.read_frames(5, [0, 3, 40, 3], short_side=36)
    assert (got[[0, 1, 3]] == frames[[0, 3, 3]]).all() and (got[2] == frames[-1]).all()  # past the end: last frame


def test_flip_default_depends_on_dataset(tmp_path):
    assert build_clip_dataset(SMALL, "train", "train").spec.flip_prob == 0.0  # direction classes
    write_synthetic("actions", tmp_path, 5, cfg=SceneConfig(height=36, width=48, num_frames=16))
    cfg = DataConfig(dataset=f"kinetics:{tmp_path}", clip_len=4, stride=2, crop_size=32, train_short_side=36,
                     test_short_side=32)
    ds = build_clip_dataset(cfg, "train", "train")
    assert isinstance(ds, KineticsDataset) and ds.spec.flip_prob == 0.5
    assert ds[0][0].dtype == torch.float32
    forced = DataConfig(flip_prob=0.25)
    assert build_clip_dataset(forced, "train", "train").spec.flip_prob == 0.25


def test_spec_errors_name_the_input(tmp_path):
    assert parse_spec("kinetics:/data/k400") == ("kinetics", "/data/k400")
    assert parse_spec(str(tmp_path)) == ("kinetics", str(tmp_path))
    with pytest.raises(DatasetError, match="unknown kind 'imagenet'"):
        parse_spec("imagenet:/x")
    with pytest.raises(DatasetError, match="dataset folder not found: .*nowhere"):
        build_clip_dataset(DataConfig(dataset=f"kinetics:{tmp_path}/nowhere"), "train", "train")
    with pytest.raises(DatasetError, match="no annotation for split 'train'"):
        build_clip_dataset(DataConfig(dataset=f"kinetics:{tmp_path}"), "train", "train")
    with pytest.raises(DatasetError, match="synthetic:actions"):
        build_clip_dataset(DataConfig(dataset="synthetic:detection"), "train", "train")


def test_test_dataset_is_the_multiview_val_split_cut_to_max_videos():
    from dynvid.data.datasets import build_test_dataset

    cfg = DataConfig(synthetic_val_videos=6, synthetic_train_videos=6, synthetic_height=36, synthetic_width=48,
                     synthetic_frames=16, clip_len=4, crop_size=32, test_short_side=32, num_test_clips=2)
    full = build_test_dataset(cfg)
    assert len(full) == 6 and len(build_test_dataset(cfg, 4)) == 4 and len(build_test_dataset(cfg, 10)) == 6
    views, _ = full[0]
    assert views.shape[:2] == (2 * 3, 3)  # K clips × 3 crops, channels first
