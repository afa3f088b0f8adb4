"""Tests for dynvid.data.synth_writer: exact on-disk layouts of the three synthetic tasks."""

from __future__ import annotations

import csv
import json
import math

import av
import numpy as np
import pytest
from PIL import Image

from dynvid.data.synth_writer import TASKS, split_sizes, write_synthetic
from dynvid.data.synthetic import ACTION_CLASSES, OBJECT_CLASSES, SceneConfig, SyntheticVideoSource

CFG = SceneConfig(height=64, width=86, num_frames=32, fps=25.0)
NUM, SEED = 5, 3  # 4 train + 1 val with the default val_fraction 0.2


def _videos(split: str, n: int):
    src = SyntheticVideoSource(n, seed=SEED, cfg=CFG, split=split)
    return [src[i] for i in range(n)]


def _no_temporaries(root) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers, leftovers


def test_split_sizes():
    assert split_sizes(5, 0.2) == {"train": 4, "val": 1}
    assert split_sizes(3, 0.1) == {"train": 2, "val": 1}  # at least one val video
    assert split_sizes(1, 0.5) == {"train": 1, "val": 0}
    assert split_sizes(10, 0.0) == {"train": 10, "val": 0}
    with pytest.raises(ValueError, match="val_fraction"):
        split_sizes(10, 1.0)


def test_unknown_task_rejected(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="actions, detection, segmentation"):
        write_synthetic("tracking", out, 2)
    assert not out.exists()
    assert TASKS == ("actions", "detection", "segmentation")


def test_actions_layout(tmp_path):
    calls = []
    summary = write_synthetic("actions", tmp_path, NUM, seed=SEED, cfg=CFG, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, NUM) for i in range(1, NUM + 1)]
    assert summary["counts"] == {"train": 4, "val": 1} and summary["task"] == "actions"
    assert (tmp_path / "classes.txt").read_text().splitlines() == list(ACTION_CLASSES)
    end = math.ceil(CFG.num_frames / CFG.fps)
    global_index = 0
    for split, n in (("train", 4), ("val", 1)):
        videos = _videos(split, n)
        with open(tmp_path / f"{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["label", "youtube_id", "time_start", "time_end", "split"]
        lines = (tmp_path / f"{split}_list.txt").read_text().splitlines()
        assert len(rows) == n + 1 and len(lines) == n
        for row, line, video in zip(rows[1:], lines, videos):
            name = ACTION_CLASSES[video.label]
            youtube_id = f"synth{global_index:06d}"
            rel = f"videos/{split}/{name}/{youtube_id}_000000_{end:06d}.mp4"
            assert row == [name, youtube_id, "0", str(end), split]
            assert line == f"{rel} {video.label}"
            with av.open(str(tmp_path / rel)) as container:
                decoded = [fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)]
            assert len(decoded) == CFG.num_frames
            assert decoded[0].shape == (CFG.height, CFG.width, 3)
            # Lossy H.264 at this tiny size: close to the rendered frame, and in RGB order.
            err = np.abs(decoded[5].astype(int) - video.frames[5].astype(int)).mean()
            swapped = np.abs(decoded[5].astype(int) - video.frames[5, ..., ::-1].astype(int)).mean()
            assert err < 10 and err < swapped, f"{rel}: decoded frame 5 differs by {err:.1f} (BGR: {swapped:.1f})"
            global_index += 1
    _no_temporaries(tmp_path)


def test_detection_layout(tmp_path):
    summary = write_synthetic("detection", tmp_path, NUM, seed=SEED, cfg=CFG)
    assert summary["counts"] == {"train": 4, "val": 1}
    offset = 0
    for split, n in (("train", 4), ("val", 1)):
        videos = _videos(split, n)
        doc = json.loads((tmp_path / "annotations" / f"{split}.json").read_text())
        assert set(doc) == {"info", "videos", "images", "annotations", "categories"}
        assert doc["categories"] == [{"id": k + 1, "name": c} for k, c in enumerate(OBJECT_CLASSES)]
        assert [v["name"] for v in doc["videos"]] == [f"synth{offset + i:06d}" for i in range(n)]
        for entry, video in zip(doc["videos"], videos):
            assert set(entry) == {"id", "name", "width", "height", "length", "fps", "action"}
            assert (entry["width"], entry["height"], entry["length"]) == (CFG.width, CFG.height, CFG.num_frames)
            assert entry["fps"] == CFG.fps and entry["action"] == ACTION_CLASSES[video.label]
        for key in ("videos", "images", "annotations"):
            ids = [e["id"] for e in doc[key]]
            assert len(set(ids)) == len(ids) and min(ids) >= 1
        assert [im["id"] for im in doc["images"]] == list(range(1, n * CFG.num_frames + 1))
        video_ids = {v["name"]: v["id"] for v in doc["videos"]}
        images = {im["id"]: im for im in doc["images"]}
        for im in doc["images"][:: CFG.num_frames // 4]:
            assert set(im) == {"id", "video_id", "frame_id", "file_name", "width", "height"}
            name = f"synth{im['video_id'] - 1:06d}"
            assert im["file_name"] == f"frames/{split}/{name}/{im['frame_id']:06d}.jpg"
            assert video_ids[name] == im["video_id"]
            with Image.open(tmp_path / im["file_name"]) as jpg:
                assert jpg.format == "JPEG" and jpg.mode == "RGB" and jpg.size == (CFG.width, CFG.height)
        # Annotations reproduce the generator's boxes, classes and tracks exactly.
        by_frame: dict[tuple[int, int], list[dict]] = {}
        for a in doc["annotations"]:
            assert set(a) == {"id", "image_id", "video_id", "category_id", "bbox", "area", "iscrowd", "track_id"}
            assert a["video_id"] == images[a["image_id"]]["video_id"] and a["iscrowd"] == 0
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x + w <= CFG.width and y + h <= CFG.height
            assert a["area"] == pytest.approx(w * h)
            by_frame.setdefault((a["video_id"], images[a["image_id"]]["frame_id"]), []).append(a)
        tracks_per_video: dict[int, set[int]] = {}
        for v_entry, video in zip(doc["videos"], videos):
            for t in range(CFG.num_frames):
                anns = by_frame.get((v_entry["id"], t), [])
                assert len(anns) == len(video.boxes[t])
                if anns:
                    xywh = np.array([a["bbox"] for a in anns])
                    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
                    np.testing.assert_allclose(xyxy, video.boxes[t], atol=1e-4)
                    assert [a["category_id"] for a in anns] == (video.box_classes[t] + 1).tolist()
                tracks_per_video.setdefault(v_entry["id"], set()).update(a["track_id"] for a in anns)
        all_tracks = [tid for s in tracks_per_video.values() for tid in s]
        assert len(all_tracks) == len(set(all_tracks))  # track ids unique within the file
        assert sorted(all_tracks) == list(range(1, len(all_tracks) + 1))
        offset += n
    _no_temporaries(tmp_path)


def test_segmentation_layout(tmp_path):
    write_synthetic("segmentation", tmp_path, NUM, seed=SEED, cfg=CFG)
    assert (tmp_path / "classes.txt").read_text().splitlines() == ["background", *OBJECT_CLASSES]
    offset = 0
    for split, n in (("train", 4), ("val", 1)):
        names = (tmp_path / f"{split}_videos.txt").read_text().splitlines()
        assert names == [f"synth{offset + i:06d}" for i in range(n)]
        for name, video in zip(names, _videos(split, n)):
            frames = sorted((tmp_path / "frames" / split / name).iterdir())
            labels = sorted((tmp_path / "labels" / split / name).iterdir())
            assert [p.name for p in frames] == [f"{t:06d}.png" for t in range(CFG.num_frames)]
            assert [p.name for p in labels] == [p.name for p in frames]
            for t in (0, CFG.num_frames - 1):
                with Image.open(frames[t]) as img:
                    assert img.mode == "RGB"
                    np.testing.assert_array_equal(np.asarray(img), video.frames[t])  # lossless
                with Image.open(labels[t]) as img:
                    assert img.mode == "L"
                    lab = np.asarray(img)
                np.testing.assert_array_equal(lab, video.masks[t])
                assert lab.max() <= len(OBJECT_CLASSES) and (lab > 0).any()
        offset += n
    _no_temporaries(tmp_path)


def test_same_seed_same_files_and_class_list_conflict(tmp_path):
    small = SceneConfig(height=32, width=44, num_frames=6)
    write_synthetic("detection", tmp_path / "a", 3, seed=1, cfg=small)
    write_synthetic("detection", tmp_path / "b", 3, seed=1, cfg=small)
    for split in ("train", "val"):
        a = (tmp_path / "a" / "annotations" / f"{split}.json").read_bytes()
        assert a == (tmp_path / "b" / "annotations" / f"{split}.json").read_bytes()
    write_synthetic("actions", tmp_path / "c", 2, cfg=small)
    before = sorted(p.name for p in (tmp_path / "c").rglob("*"))
    with pytest.raises(ValueError, match="different class list"):
        write_synthetic("segmentation", tmp_path / "c", 2, cfg=small)
    assert sorted(p.name for p in (tmp_path / "c").rglob("*")) == before  # nothing written
