"""Kinetics-style loader: synth mp4 -> CSV/list -> real loader round trip, views, bad input."""

import csv
import shutil

import pytest
import torch

from dynvid.data.clips import ClipSpec
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
    recs = read_list_file(tmp_path / "m.txt")
    assert recs[1].path.endswith("b c.mp4") and recs[1].label == 7
    with pytest.raises(AnnotationError, match=r"m\.txt:2: label 7 outside \[0, 5\)"):
        read_list_file(tmp_path / "m.txt", num_classes=5)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found: .*nope.csv"):
        KineticsDataset(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("label,youtube_id,time_start,time_end\n")
    with pytest.raises(DatasetError, match="video folder not found: .*novids"):
        KineticsDataset(tmp_path / "x.csv", video_root=tmp_path / "novids")
