"""Tests for dynvid.data.coco_vid on tiny COCO-style video fixtures built in tmp_path."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dynvid.data.coco_vid import (
    CocoVideoDetection,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    collate_detection,
    sample_clip,
    eval_windows,
)
from dynvid.data.errors import AnnotationError, DatasetError

H, W = 32, 48
# video id -> (name, number of frames)
VIDEOS = {1: ("synth000000", 5), 2: ("synth000001", 3)}


def _frame_value(video_id: int, frame_id: int) -> int:
    """Grey level written into a frame, so a test can tell which file it got."""
    return 20 + 40 * (video_id - 1) + 30 * frame_id


def _jpeg_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (W, H), (value, value, value)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _box(video_id: int, frame_id: int) -> list[float]:
    """Object box [x, y, w, h] in video v, frame f: moves right by 2 px per frame."""
    return [4.0 + 2 * frame_id, 6.0 + video_id, 10.0, 8.0]


def _make_dataset(root) -> dict:
    images, annotations = [], []
    image_id, ann_id = 1, 1
    for vid, (name, n) in VIDEOS.items():
        (root / "frames" / "train" / name).mkdir(parents=True)
        for f in range(n):
            rel = f"frames/train/{name}/{f:06d}.jpg"
            (root / rel).write_bytes(_jpeg_bytes(_frame_value(vid, f)))
            images.append(
                {"id": image_id, "video_id": vid, "frame_id": f, "file_name": rel, "width": W, "height": H}
            )
            box = _box(vid, f)
            annotations.append(
                {"id": ann_id, "image_id": image_id, "video_id": vid, "category_id": vid, "bbox": box,
                 "area": box[2] * box[3], "iscrowd": 0, "track_id": 10 * vid}
            )
            ann_id += 1
            image_id += 1
    # A crowd region on the first frame of video 1, and a box sticking out of the right edge.
    annotations.append({"id": ann_id, "image_id": 1, "category_id": 2, "bbox": [20, 2, 6, 4], "iscrowd": 1})
    annotations.append({"id": ann_id + 1, "image_id": 2, "category_id": 2, "bbox": [40, 10, 10, 5]})
    images.reverse()  # the loader must sort frames by frame_id itself
    data = {
        "info": {"description": "tiny"},
        "videos": [{"id": v, "name": name, "width": W, "height": H, "length": n, "fps": 10}
                   for v, (name, n) in VIDEOS.items()],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    return data


@pytest.fixture()
def coco_root(tmp_path):
    root = tmp_path / "vid"
    data = _make_dataset(root)
    (root / "annotations").mkdir()
    ann = root / "annotations" / "train.json"
    ann.write_text(json.dumps(data, indent=1))
    return root, ann, data


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=1))
    return path


def _image_id(data, vid, fid):
    return next(im["id"] for im in data["images"] if im["video_id"] == vid and im["frame_id"] == fid)


# ---- parsing and grouping -----------------------------------------------------------


def test_parses_metadata_and_groups_frames(coco_root):
    root, ann, data = coco_root
    ds = CocoVideoDetection(ann)
    assert ds.image_root == str(root.resolve())
    assert ds.num_classes == 2
    assert ds.categories == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(v["id"], v["name"], v["num_frames"]) for v in ds.videos] == [
        (1, "synth000000", 5), (2, "synth000001", 3)]
    assert len(ds) == 2  # train mode: one item per video
    frame_ids = [f.frame_id for f in ds._frames[0]]
    assert frame_ids == [0, 1, 2, 3, 4]


def test_train_item_contents(coco_root):
    _, ann, data = coco_root
    ds = CocoVideoDetection(ann, clip_len=2, frame_stride=2, mode="train")
    item = ds[0]
    assert item["frames"].shape == (2, 3, H, W) and item["frames"].dtype == torch.float32
    assert item["video_id"] == 1
    f0, f1 = item["frame_ids"].tolist()
    assert f1 == f0 + 2 and 0 <= f0 <= 2
    assert item["image_ids"].tolist() == [_image_id(data, 1, f0), _image_id(data, 1, f1)]
    assert item["valid"].tolist() == [True, True]
    assert item["orig_sizes"].tolist() == [[H, W], [H, W]]
    for t, f in enumerate((f0, f1)):
        # the right file: its grey level, within JPEG error
        assert abs(item["frames"][t].mean().item() * 255 - _frame_value(1, f)) < 3
        x, y, w, h = _box(1, f)
        expected = [[x, y, x + w, y + h]]
        expected_labels = [1]
        if f == 1:  # the category-2 box at x=40..50 is clamped to the 48-px frame
            expected.append([40.0, 10.0, 48.0, 15.0])
            expected_labels.append(2)
        assert item["boxes"][t].dtype == torch.float32
        assert item["boxes"][t].tolist() == expected
        assert item["labels"][t].dtype == torch.int64
        assert item["labels"][t].tolist() == expected_labels
    if f0 == 0:
        assert item["crowd_boxes"][0].tolist() == [[20.0, 2.0, 26.0, 6.0]]


def test_crowd_box_is_flagged_not_a_target(coco_root):
    _, ann, _ = coco_root
    ds = CocoVideoDetection(ann, mode="test")
    item = ds[0]  # video 1, frame 0 (image id of frame 0 is where the crowd region is)
    assert item["frame_ids"].tolist() == [0]
    assert item["boxes"][0].tolist() == [[4.0, 7.0, 14.0, 15.0]]
    assert item["labels"][0].tolist() == [1]
    assert item["track_ids"][0].tolist() == [10]
    assert item["crowd_boxes"][0].tolist() == [[20.0, 2.0, 26.0, 6.0]]


def test_sampling_is_seeded_per_item_and_epoch(coco_root):
    _, ann, _ = coco_root
    a = CocoVideoDetection(ann, clip_len=2, seed=3)
    b = CocoVideoDetection(ann, clip_len=2, seed=3)
    starts = set()
    for epoch in range(12):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        ia, ib = a[0], b[0]
        assert torch.equal(ia["frame_ids"], ib["frame_ids"])
        starts.add(int(ia["frame_ids"][0]))
    assert len(starts) > 1  # new clips each epoch


def test_sample_clip_short_video_repeats_last_frame():
    pos, valid = sample_clip(3, clip_len=4, stride=1)
    assert pos == [0, 1, 2, 2] and valid == [True, True, True, False]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pos, valid = sample_clip(10, clip_len=3, stride=4, generator=g)
        assert pos[1] - pos[0] == 4 and pos[2] - pos[1] == 4 and pos[-1] <= 9 and all(valid)


# ---- transforms ---------------------------------------------------------------------


def test_resize_scales_boxes(coco_root):
    _, ann, _ = coco_root
    ds = CocoVideoDetection(ann, mode="test", transform=Resize((16, 96)))
    item = ds[0]
    assert item["frames"].shape == (1, 3, 16, 96)
    # [4, 7, 14, 15] with sx = 96/48 = 2, sy = 16/32 = 0.5
    assert item["boxes"][0].tolist() == [[8.0, 3.5, 28.0, 7.5]]
    assert item["crowd_boxes"][0].tolist() == [[40.0, 1.0, 52.0, 3.0]]
    assert item["orig_sizes"].tolist() == [[H, W]]


def test_flip_mirrors_frames_and_boxes(coco_root):
    _, ann, _ = coco_root
    plain = CocoVideoDetection(ann, mode="test")[0]
    flipped = CocoVideoDetection(ann, mode="test", transform=RandomHorizontalFlip(p=1.0))[0]
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))
    # [4, 7, 14, 15] in a 48-px frame -> [48-14, 7, 48-4, 15]
    assert flipped["boxes"][0].tolist() == [[34.0, 7.0, 44.0, 15.0]]
    assert flipped["crowd_boxes"][0].tolist() == [[22.0, 2.0, 28.0, 6.0]]


def test_flip_is_one_decision_per_clip(coco_root):
    _, ann, _ = coco_root
    outcomes = Counter()
    for seed in range(16):
        base = CocoVideoDetection(ann, clip_len=3, seed=seed)[0]
        aug = CocoVideoDetection(ann, clip_len=3, seed=seed, transform=RandomHorizontalFlip(0.5))[0]
        assert torch.equal(base["frame_ids"], aug["frame_ids"])  # same clip drawn
        per_frame = [bool(torch.equal(a, b)) for a, b in zip(base["boxes"], aug["boxes"])]
        assert len(set(per_frame)) == 1  # all frames flipped or none
        if not per_frame[0]:
            assert torch.equal(aug["frames"], base["frames"].flip(-1))
        outcomes[per_frame[0]] += 1
    assert outcomes[True] > 0 and outcomes[False] > 0


def test_normalize(coco_root):
    _, ann, _ = coco_root
    plain = CocoVideoDetection(ann, mode="test")[0]
    norm = CocoVideoDetection(ann, mode="test", transform=Compose([Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))]))[0]
    assert torch.allclose(norm["frames"][0, 0], (plain["frames"][0, 0] - 0.5) / 0.25)
    assert torch.allclose(norm["frames"][0, 2], plain["frames"][0, 2] - 0.5)


# ---- test mode ----------------------------------------------------------------------


def test_test_windows_layout():
    assert eval_windows(5, 2, 2) == [([0, 2], [True, True]), ([1, 3], [True, True]), ([4, 4], [True, False])]
    assert eval_windows(4, 3, 1) == [([0, 1, 2], [True] * 3), ([3, 3, 3], [True, False, False])]


@pytest.mark.parametrize("clip_len,stride", [(1, 1), (2, 1), (3, 1), (2, 2), (2, 3)])
def test_test_mode_covers_every_frame_once(coco_root, clip_len, stride):
    _, ann, data = coco_root
    ds = CocoVideoDetection(ann, clip_len=clip_len, frame_stride=stride, mode="test")
    seen = Counter()
    order = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["frames"].shape[0] == clip_len
        for t in range(clip_len):
            if item["valid"][t]:
                seen[int(item["image_ids"][t])] += 1
                order.append((item["video_id"], int(item["frame_ids"][t])))
    assert seen == Counter({im["id"]: 1 for im in data["images"]})
    assert [v for v, _ in order] == sorted(v for v, _ in order)  # videos in order


def test_collate_with_dataloader(coco_root):
    _, ann, _ = coco_root
    ds = CocoVideoDetection(ann, clip_len=2, transform=Resize(24))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_detection)))
    assert batch["frames"].shape == (2, 2, 3, 24, 24)
    assert batch["image_ids"].shape == (2, 2) and batch["valid"].shape == (2, 2)
    assert batch["video_id"].tolist() == [1, 2]
    assert len(batch["boxes"]) == 2 and len(batch["boxes"][0]) == 2
    assert batch["boxes"][1][0].shape[1] == 4


# ---- bad input ----------------------------------------------------------------------


def test_missing_annotation_file(tmp_path):
    path = tmp_path / "annotations" / "nope.json"
    with pytest.raises(DatasetError, match="annotation file not found") as e:
        CocoVideoDetection(path)
    assert str(path) in str(e.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "videos": [],\n  "images": [,]\n}\n')
    with pytest.raises(AnnotationError) as e:
        CocoVideoDetection(path)
    assert e.value.line == 3 and e.value.path == str(path)
    assert f"{path}:3: invalid JSON" in str(e.value)


def _drop(key):
    def edit(d):
        del d[key]
    return edit


def _set(section, index, key, value):
    def edit(d):
        d[section][index][key] = value
    return edit


def _del(section, index, key):
    def edit(d):
        del d[section][index][key]
    return edit


BAD_EDITS = {
    "missing top-level key": (_drop("images"), "images: missing required top-level key"),
    "missing annotation key": (_del("annotations", 3, "bbox"), "annotations[3]: missing required key 'bbox'"),
    "unknown category": (
        _set("annotations", 1, "category_id", 7),
        "annotations[1].category_id: category_id=7 not in categories",
    ),
    "unknown image": (
        _set("annotations", 2, "image_id", 99),
        "annotations[2].image_id: image_id=99 not in images",
    ),
    "unknown video": (_set("images", 0, "video_id", 5), "images[0].video_id: video_id=5 not in videos"),
    "zero width box": (
        _set("annotations", 0, "bbox", [1, 2, 0, 3]),
        "annotations[0].bbox: bbox=[1, 2, 0, 3] has non-positive",
    ),
    "negative height box": (
        _set("annotations", 4, "bbox", [1, 2, 3, -1]),
        "annotations[4].bbox: bbox=[1, 2, 3, -1] has non-positive",
    ),
    "short bbox": (
        _set("annotations", 0, "bbox", [1, 2, 3]),
        "annotations[0].bbox: bbox=[1, 2, 3] is not 4 finite numbers",
    ),
    "duplicate frame": (
        _set("images", 1, "frame_id", 2),
        "images[1].frame_id: frame_id=2 of video 2 already used by images[0]",
    ),
    "string id": (_set("images", 2, "id", "7"), "images[2].id: expected an integer, got '7'"),
    "video mismatch": (
        _set("annotations", 0, "video_id", 2),
        "annotations[0].video_id: video_id=2 but image 1 belongs to video 1",
    ),
    "category gap": (_set("categories", 1, "id", 3), "categories: category ids must be exactly 1..2"),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_bad_annotation_names_file_and_entry(coco_root, tmp_path, case):
    _, _, data = coco_root
    edit, message = BAD_EDITS[case]
    bad = copy.deepcopy(data)
    edit(bad)
    path = _write(tmp_path, bad)
    with pytest.raises(AnnotationError) as e:
        CocoVideoDetection(path, image_root=tmp_path)
    assert str(e.value).startswith(f"{path}: {message}")
    assert e.value.path == str(path)


def test_annotation_error_pickles_with_fields():
    err = AnnotationError("/d/a.json", "bad thing", line=4, key="images[0].id")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.line, back.key, str(back)) == ("/d/a.json", 4, "images[0].id", str(err))
    assert str(err) == "/d/a.json:4: images[0].id: bad thing"
    assert isinstance(back, DatasetError) and isinstance(back, ValueError)


def test_json_size_disagreeing_with_file(coco_root, tmp_path):
    root, _, data = coco_root
    bad = copy.deepcopy(data)
    for im in bad["images"]:
        im["height"] = 64
    path = _write(tmp_path, bad)
    ds = CocoVideoDetection(path, image_root=root, mode="test")
    with pytest.raises(AnnotationError, match=r"height/width=\(64, 48\) but .*000000\.jpg is \(32, 48\)") as e:
        ds[0]
    assert e.value.path == str(path)


# ---- unreadable images --------------------------------------------------------------


def _corrupt(path, how):
    if how == "garbage":
        path.write_bytes(b"this is not a jpeg")
    else:  # truncated: a valid header, half the data
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_jpeg_skipped_in_train_and_reported(coco_root, caplog, how):
    root, ann, _ = coco_root
    bad = root / "frames/train/synth000001"
    for f in range(3):  # all of video 2: its clip can never be built
        _corrupt(bad / f"{f:06d}.jpg", how)
    ds = CocoVideoDetection(ann, clip_len=1, max_bad_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="dynvid.data.coco_vid"):
        item = ds[1]
    assert item["video_id"] == 1  # the next good item (wrapped around)
    assert len(ds.bad_files) == 1 and ds.bad_files[0].startswith(str(bad))
    assert ds.bad_files[0] in caplog.text and "unreadable" in caplog.text
    assert sorted(ds.verify_images()) == sorted(str(bad / f"{f:06d}.jpg") for f in range(3))


def test_corrupt_jpeg_in_test_mode_keeps_window(coco_root):
    root, ann, data = coco_root
    bad = root / "frames/train/synth000000/000001.jpg"
    _corrupt(bad, "garbage")
    ds = CocoVideoDetection(ann, clip_len=2, mode="test", max_bad_fraction=0.5)
    item = ds[0]  # frames 0, 1 of video 1
    assert item["frame_ids"].tolist() == [0, 1]
    assert item["valid"].tolist() == [True, False]
    assert item["frames"][1].abs().sum() == 0 and item["boxes"][1].shape == (0, 4)
    assert item["boxes"][0].shape == (1, 4)
    assert ds.bad_files == [str(bad)]


def test_too_many_bad_files_raises(coco_root):
    root, ann, _ = coco_root
    bad = root / "frames/train/synth000000/000000.jpg"
    _corrupt(bad, "garbage")
    ds = CocoVideoDetection(ann, mode="test")  # 1 of 8 images > 5 %
    with pytest.raises(DatasetError, match=r"1 of 8 files unreadable") as e:
        ds[0]
    assert str(bad) in str(e.value)
    with pytest.raises(DatasetError, match="max_bad_fraction"):
        CocoVideoDetection(ann).verify_images()


def test_missing_image_file_is_a_bad_file(coco_root):
    root, ann, _ = coco_root
    missing = root / "frames/train/synth000001/000002.jpg"
    missing.unlink()
    ds = CocoVideoDetection(ann, mode="test", max_bad_fraction=0.2)
    for i in range(len(ds)):
        ds[i]
    assert ds.bad_files == [str(missing)]


# ---- COCO ground truth ----------------------------------------------------------------


def test_to_coco_gt_loads_in_pycocotools_and_scores_perfect_detections(coco_root):
    from pycocotools.cocoeval import COCOeval

    _, ann, data = coco_root
    ds = CocoVideoDetection(ann, mode="test")
    gt_dict = ds.to_coco_gt()
    assert len(gt_dict["images"]) == 8 and len(gt_dict["annotations"]) == 10
    assert all("area" in a and "iscrowd" in a for a in gt_dict["annotations"])
    gt = ds.to_coco_gt(as_coco=True)
    assert sorted(gt.getImgIds()) == list(range(1, 9))
    assert len(gt.getAnnIds(iscrowd=False)) == 9
    assert gt.loadCats(2)[0]["name"] == "dog"

    # Perfect detections built from the loader's own targets: mAP@0.5 must be 1.
    dets = []
    for i in range(len(ds)):
        item = ds[i]
        for t in range(len(item["image_ids"])):
            for box, label in zip(item["boxes"][t].tolist(), item["labels"][t].tolist()):
                x1, y1, x2, y2 = box
                dets.append({"image_id": int(item["image_ids"][t]), "category_id": label,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP@0.5
