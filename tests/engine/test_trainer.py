"""The Ray Train driver end to end on a real local Ray cluster: train, checkpoint, resume, track."""

import json
import sys
from pathlib import Path

import mlflow
import pytest

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.width_mult=0.125",
    "data.clip_len=4",
    "data.stride=2",
    "data.crop_size=32",
    "data.train_short_side=36",
    "data.test_short_side=32",
    "data.synthetic_height=36",
    "data.synthetic_width=48",
    "data.synthetic_frames=16",
    "data.synthetic_train_videos=16",
    "data.synthetic_val_videos=8",
    "data.batch_size=4",
    "data.num_test_clips=2",
    "train.test_videos=4",
    "train.cpus_per_worker=1",
    "train.log_every=2",
]


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    from dynvid.engine.trainer import fit

    root = tmp_path_factory.mktemp("train")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = apply_overrides(ExperimentConfig(), TINY + [f"train.storage_path={root}/runs", "optim.epochs=1",
                                                     f"train.mlflow_tracking_uri={uri}", "train.name=tiny"])
    return fit(cfg, method="static"), cfg, root, uri


def test_fit_reports_metrics_and_checkpoint(tiny_run):
    result, cfg, root, _ = tiny_run
    m = result.metrics
    assert m["epoch"] == 1
    for key in ("train_loss", "val_clip_top1", "val_clip_top5", "test_video_top1", "val_gflops_avg",
                "throughput_clips_per_s", "lr"):
        assert key in m, key
    assert 0.0 <= m["val_clip_top1"] <= 1.0 and m["val_num_samples"] == 8 and m["test_num_samples"] == 4
    assert m["val_gflops_avg"] > 0 and m["val_gflops_min"] == m["val_gflops_max"]  # static network
    ckpt = load_checkpoint(result.stages[0].checkpoint_path)
    assert ckpt["metadata"]["epoch"] == 0 and ckpt["metadata"]["stage"] == "base"
    assert ckpt["config"]["model"]["width_mult"] == 0.125
    assert "fc.weight" in ckpt["model"] and ckpt["train_state"]["global_step"] == 4


def test_rerun_with_same_name_resumes(tiny_run):
    from dynvid.engine.trainer import fit

    result, cfg, root, _ = tiny_run
    more = apply_overrides(cfg, ["optim.epochs=2"])
    second = fit(more, method="static")
    assert second.metrics["epoch"] == 2
    ckpt = load_checkpoint(second.stages[0].checkpoint_path)
    assert ckpt["metadata"]["epoch"] == 1
    assert ckpt["train_state"]["global_step"] == 8  # 4 steps resumed + 4 new, not 8 new


def test_finished_run_submitted_again_reports_its_metrics(tiny_run):
    from dynvid.engine.trainer import fit

    result, cfg, _, _ = tiny_run
    again = fit(apply_overrides(cfg, ["optim.epochs=2"]), method="static")  # after the resume test: done
    assert again.metrics["epoch"] == 2 and "val_clip_top1" in again.metrics
    assert load_checkpoint(again.stages[0].checkpoint_path)["train_state"]["global_step"] == 8  # no new steps


def test_mlflow_run_has_params_and_metrics(tiny_run):
    _, cfg, _, uri = tiny_run
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dynvid")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'tiny-base'")
    assert len(runs) == 1  # the resumed stage continued the same run
    run = runs[0]
    assert run.data.params["model.width_mult"] == "0.125" and run.data.params["method"] == "static"
    history = client.get_metric_history(run.info.run_id, "val_clip_top1")
    assert sorted(h.step for h in history)[0] == 1


def test_main_job_smoke(ray_cluster, tmp_path):
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import vared_kinetics
    finally:
        sys.path.pop(0)
    out = tmp_path / "result.json"
    args = ["--smoke-test", "--out", str(out), "--set", f"train.storage_path={tmp_path}/runs"]
    for item in TINY:
        args += ["--set", item]
    assert vared_kinetics.main(args) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["epoch"] == 1 and "val_clip_top1" in result["metrics"]
    assert Path(result["checkpoints"][0]).is_dir()
