"""Ray Tune sweeps end to end on the local Ray cluster, tracked on a real ``mlflow server``:
an inference sweep over a registered VA-RED² model, a training sweep of the shipped
``search_spaces/vared.yaml`` in smoke mode, the report in headless Chromium, ``sweep show``."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.sweep_spec import load_spec, spec_from_dict
from dynvid.metrics.pareto import dominates
from test_trainer import TINY

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = [0.0, 0.4, 0.8, 0.95]  # two rounds of two trials


@pytest.fixture(scope="module")
def registered_vared(ray_cluster, mlflow_server, tmp_path_factory):
    """A tiny VA-RED² model, registered in the MLflow registry: the base and the dynamic stage,
    1 epoch each (the dynamic stage's gates are what the sweep's threshold acts on; the
    efficiency finetune is not needed for it)."""
    from dynvid.engine.trainer import fit

    root = tmp_path_factory.mktemp("sweep")
    cfg = apply_overrides(ExperimentConfig(), TINY + [
        f"train.storage_path={root}/runs", "optim.epochs=1", "vared.dynamic_epochs=1",
        f"train.mlflow_tracking_uri={mlflow_server}", "train.name=tiny-vared-for-sweeps"])
    result = fit(cfg, method="vared", report=False, stages=["base", "dynamic"])
    assert result.registered is not None
    return result, root


@pytest.fixture(scope="module")
def inference_sweep(registered_vared, mlflow_server):
    from dynvid.engine.sweep import run_sweep

    fitted, root = registered_vared
    spec = spec_from_dict({
        "name": "tiny_threshold", "method": "vared", "kind": "inference",
        "init_from": fitted.registered["model_uri"],  # models:/NAME/VERSION
        "overrides": {"data.synthetic_val_videos": 12},
        "knobs": {"vared.gate_threshold": {"grid": THRESHOLDS}},
        "objectives": {"val_clip_top1": "max", "val_gflops_avg": "min"},
        "baselines": [{"name": "static", "val_clip_top1": 0.1, "val_gflops_avg": 0.01}],
    }, "test-inference-sweep")
    return run_sweep(spec, storage_path=f"{root}/runs", tracking_uri=mlflow_server), root


def test_inference_sweep_builds_a_front(inference_sweep):
    result, _ = inference_sweep
    assert len(result.trials) == len(THRESHOLDS)
    assert all(t.error is None and t.status == "TERMINATED" for t in result.trials), [t.error for t in result.trials]
    by_knob = {t.knobs["vared.gate_threshold"]: t for t in result.trials}
    assert sorted(by_knob) == THRESHOLDS
    for t in result.trials:
        assert 0.0 <= t.metrics["val_clip_top1"] <= 1.0 and t.metrics["val_num_samples"] == 12
    # the gates start at V ≈ 0.76 for "compute all": a threshold above it runs cheaper convolutions
    assert by_knob[0.95].metrics["val_gflops_avg"] < by_knob[0.0].metrics["val_gflops_avg"]
    assert result.front
    front = [result.trials[i] for i in result.front]
    objectives = list(result.spec.objectives)
    directions = list(result.spec.objectives.values())
    for f in front:  # nothing dominates a front point; every other point is dominated by one
        assert not any(dominates([t.metrics[k] for k in objectives], [f.metrics[k] for k in objectives], directions)
                       for t in result.trials)
    for t in result.trials:
        if t not in front:
            assert any(dominates([f.metrics[k] for k in objectives], [t.metrics[k] for k in objectives], directions)
                       for f in front)
    assert result.hypervolume > 0


def test_report_files(inference_sweep):
    result, _ = inference_sweep
    for key in ("png", "html", "json", "csv", "markdown"):
        assert Path(result.report[key]).is_file(), key
    assert Image.open(result.report["png"]).size[0] > 400
    data = json.loads(Path(result.report["json"]).read_text())
    assert len(data["trials"]) == len(THRESHOLDS) and len(data["front"]) == len(result.front)
    page = Path(result.report["html"]).read_text()
    assert "<script src" not in page and "http" not in page.split("<script")[0].split("</style>")[1]  # self-contained
    assert len(Path(result.report["csv"]).read_text().splitlines()) == len(THRESHOLDS) + 1


def test_every_trial_is_an_mlflow_child_run_with_its_knobs(inference_sweep, mlflow_server):
    from mlflow import MlflowClient

    result, _ = inference_sweep
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["num_trials"] == len(THRESHOLDS)
    assert parent.data.metrics["hypervolume"] == pytest.approx(result.hypervolume)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(float(r.data.params["vared.gate_threshold"]) for r in children) == THRESHOLDS
    assert all("val_clip_top1" in r.data.metrics and "val_gflops_avg" in r.data.metrics for r in children)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.html", "report/front.png", "report/sweep.json"} <= artifacts


def test_html_report_renders_every_point_in_chromium(inference_sweep, chromium, tmp_path):
    result, _ = inference_sweep
    url = Path(result.report["html"]).resolve().as_uri()
    dom = chromium.run("--dump-dom", url)  # the DOM after the page's script drew the plot
    points = re.findall(r'<circle class="trial( front)?"', dom)
    assert len(points) == len(THRESHOLDS)
    assert len([p for p in points if p]) == len(result.front)
    assert f'data-points="{len(THRESHOLDS)}"' in dom
    shot = tmp_path / "report.png"
    chromium.run(f"--screenshot={shot}", "--window-size=1000,800", "--hide-scrollbars", url)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    orange = int(((px[..., 0] > 190) & (px[..., 1] > 50) & (px[..., 1] < 110) & (px[..., 2] < 60)).sum())
    assert orange > 50  # the front's points and line (#d9480f) were painted


def test_sweep_show_prints_the_front(inference_sweep, capsys):
    from dynvid.cli import main

    result, root = inference_sweep
    assert main(["sweep", "show", "tiny_threshold", "--storage-path", f"{root}/runs"]) == 0
    out = capsys.readouterr().out
    assert "tiny_threshold" in out and "hypervolume" in out
    assert out.count("TERMINATED") == len(result.front)
    assert main(["sweep", "show", "tiny_threshold", "--storage-path", f"{root}/runs", "--all"]) == 0
    assert capsys.readouterr().out.count("TERMINATED") == len(THRESHOLDS)
    assert main(["sweep", "show", "nope", "--storage-path", f"{root}/runs"]) == 2
    assert "tiny_threshold" in capsys.readouterr().err  # the error lists the known sweeps


def test_training_sweep_of_the_shipped_spec_in_smoke_mode(ray_cluster, mlflow_server, tmp_path):
    """``dynvid sweep run search_spaces/vared.yaml --smoke-test`` cut to 2 trials: the static
    base trained once and shared, each trial a Ray Train run of the dynamic and finetune
    stages reporting every epoch to Tune (ASHA on), each an MLflow child run of the sweep."""
    from mlflow import MlflowClient

    from dynvid.engine.sweep import run_sweep

    spec = load_spec(REPO / "search_spaces" / "vared.yaml", [
        "knobs={vared.efficiency_weight: {grid: [0.0, 1.6]}}", "budget.asha={grace_period: 1, reduction_factor: 2}"])
    result = run_sweep(spec, storage_path=str(tmp_path / "runs"), tracking_uri=mlflow_server, smoke_test=True)
    assert len(result.trials) == 2
    assert all(t.error is None for t in result.trials), [t.error for t in result.trials]
    assert sorted(t.knobs["vared.efficiency_weight"] for t in result.trials) == [0.0, 1.6]
    for t in result.trials:
        assert t.iterations >= 1 and t.metrics["val_gflops_avg"] > 0
    assert spec.init_from is None and result.spec.init_from.endswith(tuple("0123456789"))  # the shared base
    assert "vared_efficiency_synthetic-shared-base" in result.spec.init_from
    client = MlflowClient(mlflow_server)
    exp = client.get_run(result.parent_run_id).info.experiment_id
    trials = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(float(r.data.params["vared.efficiency_weight"]) for r in trials) == [0.0, 1.6]
    for run in trials:  # a trial's stages are its own children
        stages = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert {s.data.params["stage"] for s in stages} <= {"dynamic", "finetune"} and stages
    assert Path(result.report["html"]).is_file()
    # Tune's own files stay in the trial folders
    assert list(Path(result.path).glob("*/progress.csv"))
    # a trial stopped by ASHA leaves no CPU reserved (its Ray Train placement group is removed)
    import ray

    deadline = time.monotonic() + 90
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]
