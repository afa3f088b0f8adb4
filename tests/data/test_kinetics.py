"""Kinetics-style loader: synth mp4 -> CSV/list -> real loader round trip, views, bad input."""

import csv
import logging
import os
import shutil

import pytest
import torch

from dynvid.config import DataConfig
from dynvid.data.clips import ClipSpec
from dynvid.data.datasets import build_clip_dataset
from dynvid.data.errors import AnnotationError, DatasetError
from dynvid.data.kinetics import KineticsDataset, read_kinetics_csv, read_list_file
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import ACTION_CLASSES, SceneConfig, SyntheticVideoSource

SCENE = SceneConfig(height=48, width=64, num_frames=24, fps=12.0)
SPEC = ClipSpec(clip_len=4, stride=2, crop_size=32, train_short_side=36, test_short_side=32, num_test_clips=2)


@pytest.fixture(scope="module")
def kinetics_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-k")
    write_synthetic("actions", root, num_videos=15, seed=3, cfg=SCENE, val_fraction=0.2)
    return root


def _copy(src, tmp_path):
    dst = tmp_path / "k"
    shutil.copytree(src, dst)
    return dst


def _expected_labels(root, split):
    with open(root / f"{split}.csv", newline="") as f:
        return {row["youtube_id"]: ACTION_CLASSES.index(row["label"]) for row in csv.DictReader(f)}


@pytest.mark.parametrize("annotation", ["train.csv", "train_list.txt"])
def test_round_trip_labels(kinetics_dir, annotation):
    ds = KineticsDataset(kinetics_dir / annotation, spec=SPEC, mode="val")
    expected = _expected_labels(kinetics_dir, "train")
    assert len(ds) == len(expected) == 12
    assert ds.classes == list(ACTION_CLASSES)
    for i, rec in enumerate(ds.records):
        youtube_id = rec.path.rsplit("/", 1)[1].split("_")[0]
        assert rec.label == expected[youtube_id]
        clip, label = ds[i]
        assert label == rec.label
        assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32


def test_decoded_clip_matches_generator(kinetics_dir):
    """The loader decodes the frames the generator rendered (up to H.264 loss)."""
    ds = KineticsDataset(kinetics_dir / "train.csv", spec=SPEC, mode="val")
    source = SyntheticVideoSource(12, seed=3, cfg=SCENE, split="train")
    i = 0
    youtube_id = ds.records[i].path.rsplit("/", 1)[1].split("_")[0]
    index = int(youtube_id.replace("synth", ""))
    rendered = torch.from_numpy(source.get(index).frames[[0, 5, 10]]).float()
    decoded = torch.from_numpy(ds.read_frames(i, [0, 5, 10], short_side=48)).float()
    assert decoded.shape == rendered.shape
    assert (decoded - rendered).abs().mean() < 12  # lossy codec, same content
    other = torch.from_numpy(source.get((index + 1) % 12).frames[[0, 5, 10]]).float()
    assert (decoded - other).abs().mean() > (decoded - rendered).abs().mean()


def test_train_mode_is_reproducible_per_epoch(kinetics_dir):
    ds = KineticsDataset(kinetics_dir / "train.csv", spec=SPEC, mode="train", seed=1)
    a, _ = ds[3]
    b, _ = ds[3]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    c, _ = ds[3]
    assert not torch.equal(a, c)


def test_k_left_center_right_views(kinetics_dir):
    ds = KineticsDataset(kinetics_dir / "val.csv", spec=SPEC, mode="test")
    views, label = ds[0]
    assert views.shape == (2 * 3, 3, 4, 32, 32)  # K=2 clips x 3 crops
    # left, centre and right crops of a 32x43 frame differ; the two clips differ in time
    assert not torch.equal(views[0], views[2])
    assert not torch.equal(views[1], views[4])


def test_corrupt_video_skipped_and_reported(kinetics_dir, tmp_path, caplog):
    root = _copy(kinetics_dir, tmp_path)
    ds = KineticsDataset(root / "train.csv", spec=SPEC, mode="val", max_bad_fraction=0.1)
    victim = ds.records[2].path
    with open(victim, "r+b") as f:
        f.truncate(200)
    clip, label = ds[2]
    assert label == ds.records[3].label  # fell through to the next video
    assert list(ds.bad_videos) == [victim]
    assert victim in caplog.text


def test_too_many_bad_videos_raise_with_paths(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    ds = KineticsDataset(root / "train.csv", spec=SPEC, mode="val", max_bad_fraction=0.1)
    for i in (0, 5):
        open(ds.records[i].path, "wb").close()
    ds[0]  # first bad one: 1/12 <= 10%
    with pytest.raises(DatasetError, match="max_bad_fraction") as err:
        ds[5]
    assert ds.records[0].path in str(err.value) and ds.records[5].path in str(err.value)


def test_missing_videos_dropped_then_limit(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    first = sorted((root / "videos" / "train").rglob("*.mp4"))[0]
    first.unlink()
    ds = KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.1)
    assert len(ds) == 11 and len(ds.missing_videos) == 1
    with pytest.raises(DatasetError, match="missing"):
        KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.0)


def test_malformed_csv_names_file_and_line(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    lines = (root / "train.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 3)[0] + ",oops,10,train"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:4: time_start/time_end must be numbers"):
        read_kinetics_csv(root / "train.csv", root / "videos")


def test_csv_without_columns_and_short_rows(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "a.csv").write_text("label,youtube_id\nx,y\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:1: header lacks columns \['time_start', 'time_end'\]"):
        read_kinetics_csv(tmp_path / "a.csv", tmp_path / "videos")
    (tmp_path / "b.csv").write_text("label,youtube_id,time_start,time_end\nx,y,0\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:2"):
        read_kinetics_csv(tmp_path / "b.csv", tmp_path / "videos")


def test_unknown_class_is_named(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    text = (root / "train.csv").read_text().splitlines()
    text[2] = "juggling" + text[2][text[2].index(","):]
    (root / "train.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:3: unknown class 'juggling'"):
        KineticsDataset(root / "train.csv", spec=SPEC)


def test_list_file_errors(tmp_path):
    (tmp_path / "l.txt").write_text("a.mp4 1\nb.mp4\n")
    with pytest.raises(AnnotationError, match=r"l\.txt:2: expected '<path> <integer label>'"):
        read_list_file(tmp_path / "l.txt")
    (tmp_path / "m.txt").write_text("a.mp4 1\nb c.mp4 7\n")
    (tmp_path / "b c.mp4").touch()
    listed = read_list_file(tmp_path / "m.txt")
    assert listed.records[0].path.endswith("b c.mp4") and listed.records[0].label == 7
    assert listed.missing == [str(tmp_path / "a.mp4")] and len(listed.classes) == 8
    with pytest.raises(AnnotationError, match=r"m\.txt:2: label 7 outside \[0, 5\)"):
        read_list_file(tmp_path / "m.txt", classes=list("abcde"))


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found: .*nope.csv"):
        KineticsDataset(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("label,youtube_id,time_start,time_end\n")
    with pytest.raises(DatasetError, match="video folder not found: .*novids"):
        KineticsDataset(tmp_path / "x.csv", video_root=tmp_path / "novids")


def _config(root, **kw) -> DataConfig:
    return DataConfig(dataset=f"kinetics:{root}", clip_len=4, stride=2, crop_size=32, train_short_side=36,
                      test_short_side=32, num_test_clips=2, **kw)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- class list from the training split -------------------------------------------------------

def test_val_labels_index_the_train_classes(kinetics_dir, tmp_path):
    """val.csv covers 3 of the 12 classes: its labels must still index train's class list."""
    root = _copy(kinetics_dir, tmp_path)
    (root / "classes.txt").unlink()  # classes from train.csv's labels, the Kinetics convention
    train = build_clip_dataset(_config(root), "train", "val")
    val = build_clip_dataset(_config(root), "val", "val")
    assert len({r["label"] for r in _rows(root / "val.csv")}) == 3
    assert val.classes == train.classes == sorted(ACTION_CLASSES)
    names = {r["youtube_id"]: r["label"] for r in _rows(root / "val.csv")}
    for rec in val.records:
        assert val.classes[rec.label] == names[rec.path.rsplit("/", 1)[1].split("_")[0]]
    static = [r.label for ds in (train, val) for r in ds.records if "/static/" in r.path]
    assert len(static) == 2 and static[0] == static[1]  # one class, one index, in both splits


@pytest.mark.parametrize("with_classes_txt", [False, True])
def test_val_class_absent_from_train_is_named(kinetics_dir, tmp_path, with_classes_txt):
    root = _copy(kinetics_dir, tmp_path)
    if not with_classes_txt:
        (root / "classes.txt").unlink()
    lines = (root / "val.csv").read_text().splitlines()
    lines[2] = "juggling" + lines[2][lines[2].index(","):]
    (root / "val.csv").write_text("\n".join(lines) + "\n")
    source = r"classes\.txt" if with_classes_txt else r"train\.csv"
    with pytest.raises(AnnotationError, match=rf"val\.csv:3: unknown class 'juggling' .*12 classes of .*{source}") as e:
        build_clip_dataset(_config(root), "val", "val")
    assert (e.value.path, e.value.line) == (str(root / "val.csv"), 3)


def test_list_file_labels_are_checked_against_the_train_list(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    for name in ("classes.txt", "train.csv", "val.csv"):
        (root / name).unlink()
    val = build_clip_dataset(_config(root), "val", "val")
    assert val.num_classes == 12  # 0 … the largest label of train_list.txt, not of val_list.txt
    text = (root / "val_list.txt").read_text().splitlines()
    text[1] = text[1].rsplit(" ", 1)[0] + " 12"
    (root / "val_list.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(AnnotationError, match=r"val_list\.txt:2: label 12 outside \[0, 12\) .*train_list\.txt"):
        build_clip_dataset(_config(root), "val", "val")


def test_no_training_annotation_and_no_class_list(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    for name in ("classes.txt", "train.csv", "train_list.txt"):
        (root / name).unlink()
    with pytest.raises(DatasetError, match="no annotation for the training split 'train' and no classes.txt"):
        build_clip_dataset(_config(root), "val", "val")


# ---- one threshold for missing + unreadable, probed at load -------------------------------------

def _break_two(root):
    """Delete one training video and overwrite another with junk; returns (missing key, junk path)."""
    videos = sorted((root / "videos" / "train").rglob("*.mp4"))
    videos[0].unlink()
    videos[5].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    return videos[0].stem, str(videos[5])


def test_missing_and_unreadable_share_one_threshold(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    missing, junk = _break_two(root)
    # 2 of 12 bad: each kind alone (1/12) is within 10%, together they are not.
    with pytest.raises(DatasetError, match=r"2 of 12 videos are missing or unreadable .*max_bad_fraction=0\.1") as e:
        KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.1)
    assert missing in str(e.value) and junk in str(e.value)
    ds = KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.2)
    assert len(ds) == 10 and junk not in [r.path for r in ds.records]  # dropped before any epoch
    assert ds.missing_videos == [missing] and list(ds.unreadable_videos) == [junk]
    assert set(ds.bad_videos) == {missing, junk}
    ds[0]  # a later bad file counts on top of the two found at load
    for rec in ds.records[:1]:
        open(rec.path, "wb").close()
    with pytest.raises(DatasetError, match=r"3 of 12 files unreadable"):
        ds[0]


def test_build_reports_bad_count_to_the_engine(kinetics_dir, tmp_path):
    from dynvid.engine.worker import _bad_videos

    root = _copy(kinetics_dir, tmp_path)
    _break_two(root)
    cfg = _config(root, max_bad_fraction=0.25)
    train, val = build_clip_dataset(cfg, "train", "train"), build_clip_dataset(cfg, "val", "val")
    assert _bad_videos(train, val) == {"data_bad_videos_train": 2, "data_bad_videos_val": 0}


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "lots"])
def test_max_bad_fraction_outside_0_1_is_rejected(kinetics_dir, bad):
    with pytest.raises(DatasetError, match=r"max_bad_fraction .*must be a fraction in \[0, 1\], got"):
        KineticsDataset(kinetics_dir / "train.csv", spec=SPEC, max_bad_fraction=bad)
    with pytest.raises(DatasetError, match=r"data\.max_bad_fraction"):
        build_clip_dataset(DataConfig(max_bad_fraction=bad), "train", "train")  # synthetic data too


# ---- probe cache: later constructions probe only new or changed videos ----------------------------

# probe_calls: tests/data/conftest.py

def _probed(ds):
    return ds.records, [ds.info(i) for i in range(len(ds))], ds.unreadable_videos


def test_second_construction_reuses_the_probe(kinetics_dir, tmp_path, probe_calls):
    root = _copy(kinetics_dir, tmp_path)
    _, junk = _break_two(root)
    first = KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.2)
    assert len(probe_calls) == 11
    assert len(list((tmp_path / "cache" / "probe").glob("*.json"))) == 1
    probe_calls.clear()
    second = KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.2, mode="test")
    assert probe_calls == []
    assert _probed(second) == _probed(first)  # the unreadable one too, with its reason
    assert list(second.unreadable_videos) == [junk]


def test_changed_video_is_probed_again(kinetics_dir, tmp_path, probe_calls):
    root = _copy(kinetics_dir, tmp_path)
    KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.2)
    videos = sorted((root / "videos" / "train").rglob("*.mp4"))
    st = videos[3].stat()
    os.utime(videos[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    videos[7].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)  # corrupted since
    probe_calls.clear()
    ds = KineticsDataset(root / "train.csv", spec=SPEC, max_bad_fraction=0.2)
    assert sorted(probe_calls) == sorted([str(videos[3]), str(videos[7])])
    assert list(ds.unreadable_videos) == [str(videos[7])] and len(ds) == 11


def test_corrupt_probe_cache_is_ignored(kinetics_dir, tmp_path, probe_calls, caplog):
    root = _copy(kinetics_dir, tmp_path)
    first = KineticsDataset(root / "train_list.txt", spec=SPEC)
    [cache_file] = (tmp_path / "cache" / "probe").glob("*.json")
    cache_file.write_text(cache_file.read_text()[:100])  # e.g. a full disk
    probe_calls.clear()
    with caplog.at_level(logging.WARNING):
        second = KineticsDataset(root / "train_list.txt", spec=SPEC)
    assert len(probe_calls) == 12 and _probed(second) == _probed(first)
    assert f"ignoring the probe cache {cache_file}" in caplog.text
    probe_calls.clear()
    KineticsDataset(root / "train_list.txt", spec=SPEC)  # rewritten whole
    assert probe_calls == []


# ---- byte-order marks ---------------------------------------------------------------------------

def test_byte_order_mark_is_accepted(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    for name in ("train.csv", "train_list.txt", "classes.txt"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    for name in ("train.csv", "train_list.txt"):
        ds = KineticsDataset(root / name, spec=SPEC)
        assert len(ds) == 12 and ds.missing_videos == [] and ds.bad_videos == {}
        assert ds.classes[0] == ACTION_CLASSES[0]  # no mark glued to the first class name
    assert read_list_file(root / "train_list.txt").records[0].path.endswith("synth000000_000000_000002.mp4")


# ---- duplicate rows -----------------------------------------------------------------------------

def test_duplicate_rows_are_dropped_and_reported_once(kinetics_dir, tmp_path, caplog):
    root = _copy(kinetics_dir, tmp_path)
    lines = (root / "train.csv").read_text().splitlines()  # header + 12 rows
    (root / "train.csv").write_text("\n".join(lines + [lines[1], lines[4]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="dynvid.data.kinetics"):
        ds = KineticsDataset(root / "train.csv", spec=SPEC)
    assert len(ds) == 12 and sorted(r.path for r in ds.records) == sorted(set(r.path for r in ds.records))
    assert [(d.line, d.first_line) for d in ds.duplicates] == [(14, 2), (15, 5)]
    assert ds.duplicates[0].video == "synth000000_000000_000002"
    warnings = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(warnings) == 1 and "2 duplicate rows" in warnings[0] and "line 14 repeats line 2" in warnings[0]


def test_duplicate_with_another_label_is_an_error(kinetics_dir, tmp_path):
    root = _copy(kinetics_dir, tmp_path)
    lines = (root / "train.csv").read_text().splitlines()
    clash = "move_up" + lines[1][lines[1].index(","):]
    (root / "train.csv").write_text("\n".join(lines + [clash]) + "\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:14: synth000000_000000_000002 is listed again with "
                                              r"label 'move_up'; line 2 gives 'static'"):
        KineticsDataset(root / "train.csv", spec=SPEC)
