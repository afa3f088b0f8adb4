"""Tests for dynvid.data.segmentation on tiny frame/label PNG folders built in tmp_path.

Frames encode their own coordinates so crops and flips can be checked pixel by
pixel: red = 5 * x, blue = 5 * y, green = 10 * frame_id (+ 100 for the second video).
Labels are ``(x // 16) % 3`` with the last row set to ignore (255).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dynvid.data.errors import AnnotationError, DatasetError
from dynvid.data.segmentation import VideoSegmentation

H, W = 32, 48
IGNORE = 255
VIDEOS = {"city_a": 4, "city_b": 3}
CLASSES = ["background", "road", "car"]


def _frame_array(video_index: int, frame_id: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    green = np.full((H, W), 10 * frame_id + 100 * video_index)
    return np.stack([5 * x, green, 5 * y], axis=-1).astype(np.uint8)


def _label_array() -> np.ndarray:
    x = np.arange(W)[None, :].repeat(H, axis=0)
    label = ((x // 16) % 3).astype(np.uint8)
    label[-1, :] = IGNORE
    return label


def _expected_labels(frames: torch.Tensor) -> torch.Tensor:
    """The label each returned pixel should carry, decoded from the frame's coordinates."""
    rgb = (frames * 255).round().long()
    x, y = rgb[:, 0] // 5, rgb[:, 2] // 5
    expected = (x // 16) % 3
    expected[y == H - 1] = IGNORE
    return expected


@pytest.fixture()
def seg_root(tmp_path):
    root = tmp_path / "seg"
    for split in ("train",):
        for vi, (name, n) in enumerate(VIDEOS.items()):
            fdir, ldir = root / "frames" / split / name, root / "labels" / split / name
            fdir.mkdir(parents=True)
            ldir.mkdir(parents=True)
            for f in range(n):
                Image.fromarray(_frame_array(vi, f), "RGB").save(fdir / f"{f:06d}.png")
                Image.fromarray(_label_array(), "L").save(ldir / f"{f:06d}.png")
        (root / f"{split}_videos.txt").write_text("\n".join(VIDEOS) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _green_frame_ids(frames: torch.Tensor, video_index: int) -> list[int]:
    green = (frames[:, 1, 0, 0] * 255).round().long() - 100 * video_index
    return (green // 10).tolist()


# ---- layout and items ---------------------------------------------------------------


def test_parses_layout(seg_root):
    ds = VideoSegmentation(seg_root)
    assert ds.classes == CLASSES and ds.num_classes == 3
    assert ds.videos == ["city_a", "city_b"]
    assert len(ds) == 2


def test_train_item_contents(seg_root):
    ds = VideoSegmentation(seg_root, clip_len=2, frame_stride=2, hflip_prob=0.0)
    item = ds[0]
    assert item["frames"].shape == (2, 3, H, W) and item["frames"].dtype == torch.float32
    assert item["labels"].shape == (2, H, W) and item["labels"].dtype == torch.int64
    assert item["video"] == "city_a" and item["video_index"] == 0
    f0, f1 = item["frame_ids"].tolist()
    assert f1 == f0 + 2 and f0 in (0, 1)
    assert _green_frame_ids(item["frames"], 0) == [f0, f1]  # the right files
    assert torch.equal(item["frames"][0, 0, 0, :], torch.arange(W) * 5 / 255.0)
    assert torch.equal(item["labels"][0], torch.from_numpy(_label_array()).long())
    assert item["valid"].tolist() == [True, True]


def test_short_video_repeats_last_frame(seg_root):
    ds = VideoSegmentation(seg_root, clip_len=5, hflip_prob=0.0)
    item = ds[1]  # city_b has 3 frames
    assert item["frame_ids"].tolist() == [0, 1, 2, 2, 2]
    assert item["valid"].tolist() == [True, True, True, False, False]


def test_crop_and_flip_apply_equally_to_frames_and_labels(seg_root):
    flips = Counter()
    for seed in range(12):
        ds = VideoSegmentation(seg_root, clip_len=2, crop_size=(16, 20), seed=seed)
        item = ds[seed % 2]
        assert item["frames"].shape == (2, 3, 16, 20) and item["labels"].shape == (2, 16, 20)
        assert torch.equal(item["labels"], _expected_labels(item["frames"]))
        xs = (item["frames"][:, 0, 0, :] * 255).round().long() // 5  # x coordinate per column
        assert torch.equal(xs[0], xs[1])  # same crop and flip for both frames
        step = (xs[0, 1:] - xs[0, :-1]).unique().tolist()
        assert step in ([1], [-1])
        flips[step[0]] += 1
    assert flips[1] > 0 and flips[-1] > 0


def test_crop_larger_than_frame_pads_with_ignore(seg_root):
    ds = VideoSegmentation(seg_root, crop_size=(40, 48), hflip_prob=0.0)
    item = ds[0]
    assert item["frames"].shape == (1, 3, 40, 48)
    assert (item["labels"][:, H:] == IGNORE).all() and (item["frames"][:, :, H:] == 0).all()
    assert torch.equal(item["labels"][0, :H], torch.from_numpy(_label_array()).long())


def test_seeded_per_item_and_epoch(seg_root):
    a = VideoSegmentation(seg_root, clip_len=2, crop_size=8, seed=5)
    b = VideoSegmentation(seg_root, clip_len=2, crop_size=8, seed=5)
    seen = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        ia, ib = a[0], b[0]
        assert torch.equal(ia["frames"], ib["frames"]) and torch.equal(ia["labels"], ib["labels"])
        seen.add(ia["frames"].sum().item())
    assert len(seen) > 1


@pytest.mark.parametrize("clip_len,stride", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_test_mode_covers_every_frame_once(seg_root, clip_len, stride):
    ds = VideoSegmentation(seg_root, clip_len=clip_len, frame_stride=stride, mode="test", crop_size=8)
    seen = Counter()
    for i in range(len(ds)):
        item = ds[i]
        assert item["frames"].shape == (clip_len, 3, H, W)  # no crop in test mode
        ids = _green_frame_ids(item["frames"], item["video_index"])
        assert ids == item["frame_ids"].tolist()
        for t in range(clip_len):
            if item["valid"][t]:
                seen[item["video"], ids[t]] += 1
                assert torch.equal(item["labels"][t], torch.from_numpy(_label_array()).long())
            else:  # tail padding scores nothing
                assert (item["labels"][t] == IGNORE).all()
    assert seen == Counter({(v, f): 1 for v, n in VIDEOS.items() for f in range(n)})


def test_default_collate(seg_root):
    ds = VideoSegmentation(seg_root, clip_len=2, crop_size=16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["frames"].shape == (2, 2, 3, 16, 16) and batch["labels"].shape == (2, 2, 16, 16)
    assert batch["video"] == ["city_a", "city_b"]


# ---- bad input ----------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="dataset root not found") as e:
        VideoSegmentation(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


@pytest.mark.parametrize(
    "remove,message",
    [
        ("classes.txt", "class list not found"),
        ("train_videos.txt", "video list not found"),
        ("labels/train", "directory not found"),
        ("labels/train/city_b/000001.png", "label file not found"),
    ],
)
def test_missing_files_are_named(seg_root, remove, message):
    import shutil

    target = seg_root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError, match=message) as e:
        VideoSegmentation(seg_root)
    assert str(target) in str(e.value)


def test_listed_video_without_directory_names_line(seg_root):
    lst = seg_root / "train_videos.txt"
    lst.write_text("city_a\n\ncity_x\n")
    with pytest.raises(AnnotationError) as e:
        VideoSegmentation(seg_root)
    assert e.value.path == str(lst) and e.value.line == 3
    assert f"{lst}:3: video 'city_x': directory not found: {seg_root / 'frames/train/city_x'}" == str(e.value)


def test_duplicate_video_names_line(seg_root):
    lst = seg_root / "train_videos.txt"
    lst.write_text("city_a\ncity_b\ncity_a\n")
    with pytest.raises(AnnotationError, match="already listed on line 1") as e:
        VideoSegmentation(seg_root)
    assert str(e.value).startswith(f"{lst}:3:")


def test_empty_class_name_names_line(seg_root):
    classes = seg_root / "classes.txt"
    classes.write_text("background\n\ncar\n")
    with pytest.raises(AnnotationError) as e:
        VideoSegmentation(seg_root)
    assert str(e.value) == f"{classes}:2: empty class name for class id 1"


def test_bad_frame_file_name(seg_root):
    odd = seg_root / "frames/train/city_a/frame_7.png"
    odd.write_bytes(b"")
    with pytest.raises(DatasetError, match="not {frame_id:06d}.png") as e:
        VideoSegmentation(seg_root)
    assert str(odd) in str(e.value)


def test_ignore_index_colliding_with_a_class(seg_root):
    with pytest.raises(ValueError, match="ignore_index=2 is a class id"):
        VideoSegmentation(seg_root, ignore_index=2)


def test_out_of_range_label_names_file(seg_root):
    label = _label_array()
    label[3, 4] = 7
    path = seg_root / "labels/train/city_b/000000.png"
    Image.fromarray(label, "L").save(path)
    ds = VideoSegmentation(seg_root, mode="test")
    ds[len(ds) - 1]  # city_b frame 2: fine
    with pytest.raises(AnnotationError) as e:
        ds.verify_files()
    assert e.value.path == str(path)
    assert str(e.value) == f"{path}: label values [7] outside [0, 3) and not ignore_index=255"
    with pytest.raises(AnnotationError, match="label values"):
        ds[4]  # city_b frame 0 in test mode (clip_len 1)


def test_wrong_label_mode_and_size(seg_root):
    path = seg_root / "labels/train/city_a/000001.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(path)
    ds = VideoSegmentation(seg_root, mode="test")
    with pytest.raises(AnnotationError, match="label image mode is 'RGB'") as e:
        ds[1]
    assert e.value.path == str(path)
    Image.fromarray(np.zeros((H, W - 1), np.uint8), "L").save(path)
    with pytest.raises(AnnotationError, match=r"label size \(32, 47\) != frame size \(32, 48\)") as e:
        ds[1]
    assert e.value.path == str(path)


def test_corrupt_frame_skipped_in_train_and_reported(seg_root, caplog):
    bad = [seg_root / f"frames/train/city_b/{f:06d}.png" for f in range(3)]
    for p in bad:
        p.write_bytes(b"\x89PNG broken")
    ds = VideoSegmentation(seg_root, max_bad_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="dynvid.data.coco_vid"):
        item = ds[1]
    assert item["video"] == "city_a"  # the next good item
    assert len(ds.bad_files) == 1 and ds.bad_files[0] in caplog.text
    assert sorted(ds.verify_files()) == sorted(map(str, bad))


def test_corrupt_frame_in_test_mode_is_invalid_and_ignored(seg_root):
    bad = seg_root / "frames/train/city_a/000002.png"
    bad.write_bytes(b"garbage")
    ds = VideoSegmentation(seg_root, clip_len=2, mode="test", max_bad_fraction=0.2)
    item = ds[1]  # city_a frames 2, 3
    assert item["frame_ids"].tolist() == [2, 3]
    assert item["valid"].tolist() == [False, True]
    assert (item["labels"][0] == IGNORE).all() and (item["frames"][0] == 0).all()
    assert ds.bad_files == [str(bad)]


def test_too_many_bad_frames_raises(seg_root):
    bad = seg_root / "frames/train/city_a/000000.png"
    bad.write_bytes(b"garbage")
    ds = VideoSegmentation(seg_root, mode="test")  # 1 of 7 > 5 %
    with pytest.raises(DatasetError, match="1 of 7 files unreadable") as e:
        ds[0]
    assert str(bad) in str(e.value)


def _synthetic(mode="test", clip_len=3, **kw):
    from dynvid.data.segmentation import SyntheticSegmentation
    from dynvid.data.synthetic import SceneConfig

    scene = SceneConfig(height=32, width=40, num_frames=7)
    return SyntheticSegmentation(2, "val", scene, clip_len=clip_len, mode=mode, **kw)


def test_synthetic_segmentation_labels_are_the_rendered_masks_and_cover_every_frame_once():
    ds = _synthetic(max_frames=5)
    assert ds.num_classes == 7 and ds.classes[0] == "background"
    assert len(ds) == 2 * 2  # 5 frames in windows of 3: [0, 1, 2], [3, 4, pad]
    seen = []
    for i in range(len(ds)):
        item = ds[i]
        video = ds.source.get(item["video_index"])
        assert item["frames"].shape == (3, 3, 32, 40) and item["labels"].shape == (3, 32, 40)
        for t, (fid, ok) in enumerate(zip(item["frame_ids"].tolist(), item["valid"].tolist())):
            if ok:
                seen.append((item["video_index"], fid))
                assert torch.equal(item["labels"][t], torch.from_numpy(video.masks[fid]).long())
                assert torch.allclose(item["frames"][t], torch.from_numpy(video.frames[fid]).permute(2, 0, 1) / 255.0)
            else:
                assert (item["labels"][t] == 255).all()
    assert sorted(seen) == [(v, f) for v in range(2) for f in range(5)]


def test_synthetic_segmentation_train_flip_applies_to_frames_and_labels():
    flipped = _synthetic("train", clip_len=2, hflip_prob=1.0, seed=4)[0]
    plain = _synthetic("train", clip_len=2, hflip_prob=0.0, seed=4)[0]
    assert torch.equal(flipped["frame_ids"], plain["frame_ids"])
    assert torch.equal(flipped["labels"], plain["labels"].flip(-1))
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))


def test_build_segmentation_dataset_specs(seg_root):
    from dynvid.data.segmentation import SyntheticSegmentation, VideoSegmentation, build_segmentation_dataset

    assert isinstance(build_segmentation_dataset("synthetic:segmentation", "train", clip_len=1, mode="train",
                                                 num_videos=2), SyntheticSegmentation)
    assert isinstance(build_segmentation_dataset(f"video-seg:{seg_root}", "train", clip_len=1, mode="test"),
                      VideoSegmentation)
    with pytest.raises(DatasetError, match="synthetic:segmentation"):
        build_segmentation_dataset("synthetic:actions", "train", clip_len=1, mode="train", num_videos=2)
    with pytest.raises(DatasetError, match="video-seg:ROOT"):
        build_segmentation_dataset("kinetics:/x", "train", clip_len=1, mode="train")


# ---- sensor noise of the embedded scenes (issue 18, item 11) ----------------------------------


def _noisy(mode="test", clip_len=3, std=2.0, shot=0.03, **kw):
    from dynvid.data.segmentation import SyntheticSegmentation
    from dynvid.data.synthetic import SceneConfig

    scene = SceneConfig(height=32, width=40, num_frames=7, noise_std=std, shot_noise=shot)
    return SyntheticSegmentation(2, "val", scene, clip_len=clip_len, mode=mode, **kw)


def _bytes(frames: torch.Tensor) -> np.ndarray:
    return (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_noisy_items_are_the_frames_of_the_whole_noisy_video_and_labels_stay_clean():
    ds = _noisy(max_frames=6)
    for i in range(len(ds)):
        item = ds[i]
        noisy, clean = ds.source.get(item["video_index"]), ds.source.get(item["video_index"], noise=False)
        ids = item["frame_ids"].numpy()
        assert np.array_equal(_bytes(item["frames"]), noisy.frames[ids])  # noise on the returned frames only
        assert not np.array_equal(noisy.frames[ids], clean.frames[ids])
        assert np.array_equal(noisy.masks, clean.masks)
        ok = item["valid"].numpy()
        assert torch.equal(item["labels"][ok], torch.from_numpy(clean.masks[ids[ok]]).long())
    # a training clip of one frame carries the same noise as that frame in the whole video
    train = _noisy("train", clip_len=1, hflip_prob=0.0, seed=3)
    item = train[1]
    fid = int(item["frame_ids"][0])
    assert np.array_equal(_bytes(item["frames"])[0], train.source.get(1).frames[fid])


def test_sensor_noise_has_the_read_plus_shot_variance_and_is_seeded_per_frame():
    from dynvid.data.synthetic import add_sensor_noise

    grey = np.full((2, 200, 200, 3), 100, np.uint8)
    noisy = add_sensor_noise(grey, [0, 1], seed=0, index=5, noise_std=2.0, shot_noise=0.03)
    diff = noisy.astype(np.float64) - 100
    # variance 2² + 0.03 · 100 = 7 grey levels², plus 1/12 from rounding to integers
    assert diff.std() == pytest.approx(np.sqrt(7 + 1 / 12), rel=0.02) and abs(diff.mean()) < 0.05
    bright = add_sensor_noise(np.full((1, 200, 200, 3), 200, np.uint8), [0], 0, 5, 2.0, 0.03)
    assert (bright.astype(np.float64) - 200).std() == pytest.approx(np.sqrt(4 + 6 + 1 / 12), rel=0.02)
    assert np.array_equal(add_sensor_noise(grey[:1], [1], 0, 5, 2.0, 0.03)[0], noisy[1])  # frame 1 alone
    assert not np.array_equal(noisy[0], noisy[1])  # independent per frame
    assert not np.array_equal(add_sensor_noise(grey, [0, 1], 1, 5, 2.0, 0.03), noisy)  # and per seed
    assert add_sensor_noise(grey, [0, 1], 0, 5, 0.0, 0.0) is grey
    clipped = add_sensor_noise(np.array([[[[0, 255, 254]]]], np.uint8), [0], 0, 0, 50.0, 0.0)
    assert clipped.dtype == np.uint8  # clipped to [0, 255], not wrapped around


def test_noise_removes_the_exactly_repeated_pixels_of_the_renderer():
    """The saving of Dynamic-ResQ must not come from residuals that are exactly zero only because
    the renderer repeated a background pixel: with noise, next to none are."""
    def zero_share(ds):
        frames = ds[0]["frames"] * 255
        residual = frames[1:] - frames[:1]
        return float((residual == 0).all(1).float().mean())  # every channel of the pixel exactly 0

    assert zero_share(_noisy(clip_len=7, std=0.0, shot=0.0)) > 0.05
    assert zero_share(_noisy(clip_len=7)) < 0.005


def test_segmentation_scenes_are_noisy_by_default_and_the_other_synthetic_data_are_not():
    from dynvid.config import DataConfig
    from dynvid.data.datasets import scene_config
    from dynvid.data.synthetic import SceneConfig, generate_video

    seg = scene_config(DataConfig(dataset="synthetic:segmentation"))
    assert (seg.noise_std, seg.shot_noise) == (2.0, 0.03)
    actions = scene_config(DataConfig(dataset="synthetic:actions"))
    assert (actions.noise_std, actions.shot_noise) == (0.0, 0.0)
    off = scene_config(DataConfig(dataset="synthetic:segmentation", synthetic_noise_std=0.0, synthetic_shot_noise=0.0))
    assert (off.noise_std, off.shot_noise) == (0.0, 0.0)
    on = scene_config(DataConfig(dataset="synthetic:actions", synthetic_noise_std=3.0))
    assert (on.noise_std, on.shot_noise) == (3.0, 0.0)
    with pytest.raises(DatasetError, match="synthetic_noise_std"):
        scene_config(DataConfig(dataset="synthetic:segmentation", synthetic_noise_std=-1.0))
    with pytest.raises(ValueError, match="noise_std"):
        SceneConfig(shot_noise=-0.1)
    cfg = SceneConfig(height=32, width=40, num_frames=4)  # noise-free scenes render as before
    assert np.array_equal(generate_video(3, 0, cfg).frames, generate_video(3, 0, cfg, noise=False).frames)
