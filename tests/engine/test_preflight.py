"""Driver-side checks before Ray starts (issue 18, items 1 and 3): local paths made absolute for
the workers, and the first stage's datasets built once on the driver for every method."""

import os

import pytest

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides
from dynvid.data.errors import DatasetError
from dynvid.engine.preflight import check_datasets, prepare_run, resolve_local_paths
from dynvid.engine.storage import StorageError
from dynvid.engine.task import get_task, presets


def test_relative_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(ExperimentConfig(), ["data.dataset=kinetics:k400/", "train.storage_path=runs",
                                               "liteeval.feature_cache=cache", "lfs.policy=~/policy.pt"])
    out, init_from = resolve_local_paths(cfg, "ckpt/checkpoint_000001")
    assert out.data.dataset == f"kinetics:{tmp_path}/k400"
    assert out.train.storage_path == f"{tmp_path}/runs"
    assert out.liteeval.feature_cache == f"{tmp_path}/cache"
    assert out.lfs.policy == os.path.expanduser("~/policy.pt")
    assert init_from == f"{tmp_path}/ckpt/checkpoint_000001"
    assert cfg.data.dataset == "kinetics:k400/"  # the given config is not modified


@pytest.mark.parametrize("spec,expected", [
    ("synthetic:actions", "synthetic:actions"),
    ("k400", "{cwd}/k400"),
    ("coco-vid:vid", "coco-vid:{cwd}/vid"),
    ("video-seg:../seg", "video-seg:{parent}/seg"),
    ("kinetics:s3://bucket/k400/", "kinetics:s3://bucket/k400"),
    ("s3://bucket/k400/", "s3://bucket/k400"),
    ("kinetics:/data/k400", "kinetics:/data/k400"),
])
def test_dataset_specs(spec, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(ExperimentConfig(), [f"data.dataset={spec}"])
    got = resolve_local_paths(cfg)[0].data.dataset
    assert got == expected.format(cwd=tmp_path, parent=tmp_path.parent)


def test_a_relative_folder_reaches_the_workers_absolute(tmp_path, monkeypatch):
    """``--data kinetics:k400`` from the folder that holds it: the config handed to Ray names
    the folder absolutely (workers run in another working directory)."""
    from dynvid.data.synth_writer import write_synthetic
    from dynvid.data.synthetic import SceneConfig

    write_synthetic("actions", tmp_path / "k400", 6, cfg=SceneConfig(height=36, width=48, num_frames=16))
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(ExperimentConfig(), ["data.dataset=kinetics:k400", "train.storage_path=runs",
                                               "train.mlflow_tracking_uri=null", "data.batch_size=2"])
    run = prepare_run(cfg, "static")
    assert run.cfg.data.dataset == f"kinetics:{tmp_path}/k400" and run.cfg.train.storage_path == f"{tmp_path}/runs"
    assert (tmp_path / "runs" / run.run_name / "run_identity.json").is_file()


@pytest.mark.parametrize("method", ["vared", "liteeval", "lfs", "ant", "resq"])
def test_every_method_builds_its_first_stage_data_on_the_driver(method):
    """The Task's own datasets hook (detection, segmentation) or the engine's clip datasets,
    for the embedded data of each method; a broken synthetic setting fails the same way."""
    cfg = apply_overrides(ExperimentConfig(), presets(method)["smoke"])
    check_datasets(get_task(method, cfg), cfg)
    broken = apply_overrides(cfg, ["data.synthetic_object_scale=-1"])
    with pytest.raises(DatasetError, match="synthetic_object_scale"):
        check_datasets(get_task(method, broken), broken)


def test_a_missing_detection_annotation_is_named(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), presets("lfs")["smoke"] + [f"data.dataset=coco-vid:{tmp_path}"])
    with pytest.raises(DatasetError, match=f"{tmp_path}/annotations/train.json"):
        check_datasets(get_task("lfs", cfg), cfg)


def test_unknown_stage_is_a_config_error(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"train.storage_path={tmp_path}", "train.mlflow_tracking_uri=null"])
    with pytest.raises(ConfigError, match="base"):
        prepare_run(cfg, "static", stages=["nope"])


def test_missing_start_checkpoint_fails_before_ray(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"train.storage_path={tmp_path}", "train.mlflow_tracking_uri=null"])
    with pytest.raises(StorageError, match=f"{tmp_path}/nowhere"):
        prepare_run(cfg, "static", init_from=str(tmp_path / "nowhere"))
