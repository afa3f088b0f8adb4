"""Run identity (issue 18, item 4): a rerun resumes only the same experiment. Driver-side only:
``prepare_run`` settles the name and records the identity before Ray would start."""

import json
import shutil

import pytest

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig
from dynvid.engine.identity import IDENTITY_FILE, dataset_identity, differences, run_identity
from dynvid.engine.preflight import prepare_run

SMALL = ["data.synthetic_train_videos=8", "data.synthetic_val_videos=4", "data.batch_size=2",
         "train.mlflow_tracking_uri=null"]


@pytest.fixture(scope="module")
def kinetics_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("k") / "k400"
    write_synthetic("actions", root, 10, cfg=SceneConfig(height=36, width=48, num_frames=16))
    return root


def config(tmp_path, *overrides: str) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), SMALL + [f"train.storage_path={tmp_path}/runs", *overrides])


def test_same_config_same_name_and_the_rerun_is_accepted(tmp_path):
    first = prepare_run(config(tmp_path), "static")
    again = prepare_run(config(tmp_path), "static")
    assert first.run_name == again.run_name
    assert first.run_name.startswith("static_r2plus1d_18_8x4x112_synthetic-actions_e10_s0_h")
    record = json.loads((tmp_path / "runs" / first.run_name / IDENTITY_FILE).read_text())
    assert record["digest"] == first.identity.digest == first.run_name.rsplit("_h", 1)[1]
    assert record["identity"]["config"]["optim"]["lr"] == 0.1 and record["identity"]["method"] == "static"


def test_settings_that_do_not_change_the_experiment_keep_the_name(tmp_path):
    base = prepare_run(config(tmp_path), "static").run_name
    other = config(tmp_path / "elsewhere", "train.log_every=3", "data.loader_workers=2", "train.checkpoints_to_keep=5",
                   "train.max_failures=2")
    assert prepare_run(other, "static").run_name == base


@pytest.mark.parametrize("change", ["optim.lr=0.2", "train.seed=1", "data.synthetic_val_videos=6", "vared.gate_threshold=0.1"])
def test_a_changed_setting_is_another_run(tmp_path, change):
    assert prepare_run(config(tmp_path, change), "static").run_name != prepare_run(config(tmp_path), "static").run_name


def test_other_data_is_another_run(kinetics_folder, tmp_path):
    copy = shutil.copytree(kinetics_folder, tmp_path / "b" / "k400")
    a = prepare_run(config(tmp_path, f"data.dataset=kinetics:{kinetics_folder}"), "static")
    b = prepare_run(config(tmp_path, f"data.dataset=kinetics:{copy}"), "static")
    assert a.run_name != b.run_name  # same folder name, same files, another place
    assert "_k400_" in a.run_name and "_k400_" in b.run_name
    lines = (copy / "train.csv").read_text().splitlines()
    label = lines[1].split(",")[0]
    lines[2] = ",".join([label] + lines[2].split(",")[1:])  # one video relabelled
    (copy / "train.csv").write_text("\n".join(lines) + "\n")
    edited = prepare_run(config(tmp_path, f"data.dataset=kinetics:{copy}"), "static")
    assert edited.run_name != b.run_name
    assert edited.identity.dataset["annotations"]["train.csv"] != b.identity.dataset["annotations"]["train.csv"]
    assert edited.identity.dataset["annotations"]["val.csv"] == b.identity.dataset["annotations"]["val.csv"]
    assert prepare_run(config(tmp_path, f"data.dataset=kinetics:{copy}"), "static").run_name == edited.run_name


def test_every_split_covers_the_annotations_of_splits_beyond_train_and_val(kinetics_folder, tmp_path):
    copy = shutil.copytree(kinetics_folder, tmp_path / "k400")
    cfg = config(tmp_path, f"data.dataset=kinetics:{copy}")
    (copy / "test.csv").write_text((copy / "val.csv").read_text())  # a third split, as LFS's policy reads
    before = dataset_identity(cfg, every_split=True)
    assert "test.csv" in before["annotations"] and "test.csv" not in dataset_identity(cfg)["annotations"]
    (copy / "test.csv").write_text((copy / "val.csv").read_text().splitlines()[0] + "\n")
    after = dataset_identity(cfg, every_split=True)
    assert after["annotations"]["test.csv"] != before["annotations"]["test.csv"]
    assert {k: v for k, v in after["annotations"].items() if k != "test.csv"} == \
        {k: v for k, v in before["annotations"].items() if k != "test.csv"}


def test_a_trailing_slash_names_the_same_run(kinetics_folder, tmp_path):
    plain = prepare_run(config(tmp_path, f"data.dataset=kinetics:{kinetics_folder}"), "static")
    slash = prepare_run(config(tmp_path, f"data.dataset=kinetics:{kinetics_folder}/"), "static")
    assert slash.run_name == plain.run_name and "_k400_" in slash.run_name and "_data_" not in slash.run_name


def test_s3_and_local_folders_of_the_same_name_differ(tmp_path):
    s3 = apply_overrides(ExperimentConfig(), ["data.dataset=s3://bucket/k400"])
    local = apply_overrides(ExperimentConfig(), ["data.dataset=kinetics:/data/k400"])
    a, b = run_identity(s3, "vared"), run_identity(local, "vared")
    assert a.digest != b.digest
    assert s3.run_name("vared", a.digest) != local.run_name("vared", b.digest)
    assert s3.run_name("vared", a.digest).split("_h")[0] == local.run_name("vared", b.digest).split("_h")[0]


def test_a_reused_train_name_is_refused_naming_the_change(tmp_path):
    prepare_run(config(tmp_path, "train.name=mine"), "static")
    with pytest.raises(ConfigError) as err:
        prepare_run(config(tmp_path, "train.name=mine", "optim.lr=0.2"), "static")
    message = str(err.value)
    assert "'mine'" in message and "config.optim.lr: 0.1 -> 0.2" in message
    assert f"{tmp_path}/runs/mine/{IDENTITY_FILE}" in message and "\n" not in message
    with pytest.raises(ConfigError, match="method: static -> vared"):
        prepare_run(config(tmp_path, "train.name=mine"), "vared")


def test_a_named_run_may_be_extended_with_more_epochs(tmp_path):
    first = prepare_run(config(tmp_path, "train.name=mine", "optim.epochs=1"), "static")
    longer = prepare_run(config(tmp_path, "train.name=mine", "optim.epochs=2"), "static")
    assert first.run_name == longer.run_name == "mine"
    # a derived name carries the epochs: there, more epochs is a new run
    assert prepare_run(config(tmp_path, "optim.epochs=1"), "static").run_name != \
        prepare_run(config(tmp_path, "optim.epochs=2"), "static").run_name


def test_init_from_is_part_of_the_identity(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metadata.json").write_text("{}")
    plain = prepare_run(config(tmp_path), "static")
    started = prepare_run(config(tmp_path), "static", init_from=str(ckpt))
    assert started.run_name != plain.run_name and started.identity.init_from == str(ckpt)


def test_differences_lists_changed_added_and_removed_leaves():
    assert differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == ["a.c: 2 -> 3", "a.d: (absent) -> 4"]
    assert differences({"x": [1, 2]}, {"x": (1, 2)}) == []
