"""The Ray Train driver end to end on a real local Ray cluster: train, checkpoint, resume, track."""

from pathlib import Path

import mlflow
import pytest

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.checkpoint import load_checkpoint

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
    "train.mlflow_tracking_uri=null",
]


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, mlflow_server, tmp_path_factory):
    """One tiny training job tracked on a real ``mlflow server`` whose artifacts live on S3."""
    from dynvid.engine.trainer import fit

    root = tmp_path_factory.mktemp("train")
    cfg = apply_overrides(ExperimentConfig(), TINY + [f"train.storage_path={root}/runs", "optim.epochs=1",
                                                     f"train.mlflow_tracking_uri={mlflow_server}", "train.name=tiny"])
    return fit(cfg, method="static"), cfg, root, mlflow_server


def test_fit_reports_metrics_and_checkpoint(tiny_run):
    result, cfg, root, _ = tiny_run
    m = result.metrics
    assert m["epoch"] == 1
    for key in ("train_loss", "val_clip_top1", "val_clip_top5", "test_video_top1", "val_gflops_avg",
                "throughput_clips_per_s", "lr", "data_wait_s", "data_wait_fraction"):
        assert key in m, key
    assert type(m["train_loss"]) is float and 0.0 <= m["data_wait_fraction"] <= 1.0  # logs read to the host
    assert 0.0 <= m["val_clip_top1"] <= 1.0 and m["val_num_samples"] == 8 and m["test_num_samples"] == 4
    assert m["val_gflops_avg"] > 0 and m["val_gflops_min"] == m["val_gflops_max"]  # static network
    ckpt = load_checkpoint(result.stages[0].checkpoint_path)
    assert ckpt["metadata"]["epoch"] == 0 and ckpt["metadata"]["stage"] == "base"
    assert ckpt["config"]["model"]["width_mult"] == 0.125
    assert "fc.weight" in ckpt["model"] and ckpt["train_state"]["global_step"] == 4


def test_registered_model_reproduces_its_accuracy(tiny_run):
    from torch.utils.data import DataLoader

    from dynvid.data.datasets import build_clip_dataset
    from dynvid.engine import registry
    from dynvid.methods.static import StaticClassification

    result, cfg, _, uri = tiny_run
    assert result.registered["name"] == "static-r2plus1d_18-synthetic-actions"
    model = registry.load_registered(uri, result.registered["name"], alias="candidate")
    val = build_clip_dataset(cfg.data, cfg.data.val_split, "val")
    task = StaticClassification()
    metrics = task.evaluate(model, DataLoader(val, batch_size=4), task.stages[0])
    assert metrics["clip_top1"] == pytest.approx(result.metrics["val_clip_top1"])
    assert metrics["gflops_avg"] == pytest.approx(result.metrics["val_gflops_avg"])
    (version,) = [v for v in registry.list_models(uri, result.registered["name"])
                  if str(v["version"]) == str(result.registered["version"])]
    assert "candidate" in version["aliases"] and version["tags"]["method"] == "static"


def test_rerun_with_same_name_resumes(tiny_run):
    from dynvid.engine.trainer import fit

    result, cfg, root, _ = tiny_run
    more = apply_overrides(cfg, ["optim.epochs=2"])
    second = fit(more, method="static")
    assert second.metrics["epoch"] == 2
    ckpt = load_checkpoint(second.stages[0].checkpoint_path)
    assert ckpt["metadata"]["epoch"] == 1
    assert ckpt["train_state"]["global_step"] == 8  # 4 steps resumed + 4 new, not 8 new


def test_finished_run_submitted_again_reports_its_metrics(tiny_run, capsys):
    from dynvid.engine import registry
    from dynvid.engine.trainer import finished_stage, fit

    result, cfg, root, uri = tiny_run
    again = fit(apply_overrides(cfg, ["optim.epochs=2"]), method="static")  # after the resume test: done
    assert again.metrics["epoch"] == 2 and "val_clip_top1" in again.metrics
    versions = registry.list_models(uri, result.registered["name"])
    assert len(versions) == 2  # the first run and the resumed one; the resubmission registered nothing new
    saved = load_checkpoint(again.stages[0].checkpoint_path)
    assert saved["train_state"]["global_step"] == 8  # no new steps
    # found done from the run's Ray Train state, no worker group started: the metrics saved with
    # the last checkpoint, and no stage time (nothing trained)
    assert "already trained its 2 epochs" in capsys.readouterr().out
    assert again.metrics == pytest.approx(saved["metadata"]["metrics"]) and "stage_time_s" not in again.metrics
    # a run to resume (more epochs asked than it has) or one never started is not found done
    name = again.stages[0].run_name
    newest = max(p for p in (root / "runs" / name).glob("checkpoint_*") if p.is_dir())  # by its name's timestamp
    assert again.stages[0].checkpoint_path == str(newest)
    assert finished_stage(f"{root}/runs", None, name, "base", 3) is None
    assert finished_stage(f"{root}/runs", None, f"{name}-never-started", "base", 1) is None
    (root / "runs" / f"{name}-no-state").mkdir()  # a folder without Ray Train's state
    assert finished_stage(f"{root}/runs", None, f"{name}-no-state", "base", 1) is None


def test_mlflow_parent_and_child_runs(tiny_run):
    _, cfg, _, uri = tiny_run
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dynvid")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'tiny'")
    children = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'tiny-base'")
    assert len(children) == 1  # the resumed stage continued the same child run; the re-submitted one was found done
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["model.width_mult"] == "0.125" and child.data.params["method"] == "static"
    assert parent.data.params["optim.epochs"] == "1"
    history = client.get_metric_history(child.info.run_id, "val_clip_top1")
    assert sorted(h.step for h in history)[0] == 1
    assert "val_gflops_avg" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.md", "model_card.md", "training_curves.png"} <= artifacts


def test_no_credential_value_is_logged(tiny_run, s3_server, tmp_path):
    _, _, _, uri = tiny_run
    secrets = [s3_server.env["AWS_SECRET_ACCESS_KEY"], s3_server.env["AWS_ACCESS_KEY_ID"]]
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dynvid")
    runs = client.search_runs([exp.experiment_id])
    assert runs
    seen = []
    for run in runs:
        seen += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=uri,
                                                    dst_path=str(tmp_path / run.info.run_id))
        seen += [p.read_bytes().decode("latin-1") for p in Path(local).rglob("*") if p.is_file()]
    assert len(seen) > 10
    assert not [s for s in secrets for text in seen if s in text]


def test_a_fresh_stage_starts_from_the_pretrained_weights(ray_cluster, tmp_path):
    """``model.pretrained`` reaches the worker: with a learning rate of ~0, the trained
    checkpoint's convolutions are the file's (a fresh initialisation would be far from them)."""
    import torch

    from dynvid.backbones import build_backbone
    from dynvid.engine.trainer import fit

    torch.manual_seed(11)
    weights = build_backbone("r2plus1d_18", num_classes=3, width_mult=0.125).state_dict()  # another class count
    torch.save(weights, tmp_path / "weights.pt")
    cfg = apply_overrides(ExperimentConfig(), TINY + [
        f"train.storage_path={tmp_path}/runs", "optim.epochs=1", "optim.lr=1e-12", "optim.momentum=0",
        "optim.weight_decay=0", "optim.warmup_epochs=0", f"model.pretrained={tmp_path / 'weights.pt'}"])
    state = load_checkpoint(fit(cfg, method="static", register=False).stages[0].checkpoint_path)["model"]
    convs = [k for k in weights if k.endswith("weight") and weights[k].dim() == 5]
    assert len(convs) > 10 and all(torch.allclose(state[k], weights[k], atol=1e-6) for k in convs)
    assert state["fc.weight"].shape != weights["fc.weight"].shape  # the classifier: the dataset's classes


def test_unreachable_tracking_uri_fails_before_training(ray_cluster, tmp_path):
    from dynvid.engine.tracking import TrackingError
    from dynvid.engine.trainer import fit

    cfg = apply_overrides(ExperimentConfig(), TINY + [f"train.storage_path={tmp_path}",
                                                     "train.mlflow_tracking_uri=http://127.0.0.1:9"])
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9"):
        fit(cfg, method="static")
    assert not list(tmp_path.iterdir())  # nothing started


def test_main_job_smoke(vared_main_job, mlflow_server):
    """The main job runs VA-RED²'s three stages, reports, and logs the report to MLflow (the
    run: ``conftest.vared_main_job``, whose stages the benchmark's test reuses)."""
    result, _ = vared_main_job
    # the three VA-RED² stages ran, each from the previous one's checkpoint
    assert list(result["stages"]) == ["base", "dynamic", "finetune"]
    assert all(m["epoch"] == 1 for m in result["stages"].values())
    assert result["metrics"]["epoch"] == 1 and "val_clip_top1" in result["metrics"]
    assert "train_eff_loss" in result["stages"]["finetune"] and "train_eff_loss" not in result["stages"]["dynamic"]
    # checkpoints by stage, as every job writes them (the shared runner, dynvid.engine.jobs)
    assert list(result["checkpoints"]) == ["base", "dynamic", "finetune"]
    assert all(Path(c).is_dir() for c in result["checkpoints"].values())
    final = load_checkpoint(result["checkpoints"]["finetune"])
    assert any(".gate." in k for k in final["model"]) and final["metadata"]["stage"] == "finetune"
    # the report: measured speed of both models, and the figures
    report = result["report"]
    assert report["metrics"]["static_clips_per_s"] > 0 and report["metrics"]["dynamic_clips_per_s"] > 0
    # and batched, at the job's batch size (capped by the clips the report times)
    assert report["metrics"]["dynamic_clips_per_s_batched"] > 0 and report["metrics"]["throughput_batch"] > 1
    assert report["metrics"]["dynamic_gflops_min"] <= report["metrics"]["dynamic_gflops_avg"]
    names = sorted(Path(p).name for p in report["artifacts"])
    assert names == ["cost_histogram.png", "policy_heatmap.png", "vared_report.json"]
    assert all(Path(p).read_bytes() for p in report["artifacts"])
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("dynvid")
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{result['run_name']}'")
    assert {"policy_heatmap.png", "cost_histogram.png", "vared_report.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["speedup"] > 0
    assert result["registered"]["name"] == "vared-r2plus1d_18-synthetic-actions"
