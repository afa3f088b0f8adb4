"""Looking Fast and Slow end to end on the shared Ray cluster: the detector job (Ray Train,
report with the τ curve and sync/async latency, registry), the DQN policy job (RLlib env
runners on the frozen detector, export, evaluation without RLlib, MLflow), and both sweep
kinds over the detector: an inference sweep of τ and a policy sweep of γ (Ray Tune)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dynvid.config import set_arguments
from dynvid.engine.identity import file_sha256
from dynvid.engine.sweep_spec import spec_from_dict
from dynvid.methods.lfs.policy import QNetwork, load_policy

TINY = ["lfs.f0_size=64", "lfs.f1_size=32", "lfs.memory_input=32", "lfs.state_channels=16", "lfs.num_levels=2",
        "data.synthetic_height=64", "data.synthetic_width=64", "lfs.unroll=3"]


def _job(name: str):
    return __import__(name)


def _args(*extra: str) -> list[str]:
    return [*extra, *set_arguments(TINY)]


@pytest.fixture(scope="module")
def detector_job(ray_cluster, mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lfs")
    out = tmp / "detector.json"
    args = _args("--smoke-test", "--out", str(out), "--tracking-uri", mlflow_server,
                 "--set", f"train.storage_path={tmp}/runs", "--set", "train.name=smoke-lfs")
    assert _job("lfs_interleaved").main(args) == 0
    return json.loads(out.read_text()), tmp


def test_detector_job_report_and_registry(detector_job):
    result, _ = detector_job
    metrics = result["metrics"]
    assert {"val_AP50", "val_AP", "val_f0_fraction", "val_gflops_avg"} <= set(metrics)
    assert 0.0 <= metrics["val_AP50"] <= 1.0
    report = result["report"]
    assert sorted(Path(p).name for p in report["artifacts"]) == ["lfs_report.json", "lfs_tau_curve.png"]
    saved = json.loads(Path(next(p for p in report["artifacts"] if p.endswith(".json"))).read_text())
    curve = saved["curve"]
    assert list(curve) == ["f0 only", "fixed τ=1", "fixed τ=4", "f1 only"]
    fractions = [r["f0_fraction"] for r in curve.values()]
    gmacs = [r["gmacs_per_frame"] for r in curve.values()]
    assert fractions[0] == 1.0 and fractions == sorted(fractions, reverse=True)
    assert gmacs == sorted(gmacs, reverse=True)  # fewer f0 runs, fewer MACs: cost follows the path that ran
    assert curve["fixed τ=1"]["f0_fraction"] == pytest.approx(0.5)  # 12 frames: f0 on every other one
    for mode in ("sync", "async"):
        assert saved["latency_ms"][mode]["worst_ms"] >= saved["latency_ms"][mode]["amortized_ms"] > 0
    assert saved["latency_ms"]["async"]["f0_runs"] >= 1
    assert result["registered"]["name"] == "lfs-mobilenet_v2-synthetic-detection"


def test_policy_job_trains_exports_and_runs_without_rllib(detector_job, mlflow_server, capsys):
    result, tmp = detector_job
    ckpt = result["checkpoints"]["interleaved"]
    out = tmp / "policy.json"
    args = _args("--smoke-test", "--detector", ckpt, "--gamma", "0.5", "--out", str(out),
                 "--tracking-uri", mlflow_server, "--set", f"train.storage_path={tmp}/runs")
    assert _job("lfs_policy_dqn").main(args) == 0
    saved = json.loads(out.read_text())
    (row,) = saved["learned"]
    assert "lfs policy: DQN with γ=0.5" in capsys.readouterr().out
    record = json.loads(Path(row["policy"]).with_name("policy_record.json").read_text())
    assert record["identity"]["config"]["lfs"]["gamma"] == 0.5 and record["dqn"]["env_steps_sampled"] >= 100
    assert record["identity"]["init_from"] == f"sha256:{file_sha256(Path(ckpt) / 'model.pt')}"  # the weights
    # the same command again: the finished policy is evaluated, not trained again
    written = Path(row["policy"]).stat().st_mtime_ns
    assert _job("lfs_policy_dqn").main(args) == 0
    shown = capsys.readouterr().out
    assert "it is reused, nothing is trained" in shown and "lfs policy: DQN with" not in shown
    (again,) = json.loads(out.read_text())["learned"]
    assert Path(again["policy"]).stat().st_mtime_ns == written
    assert again["dqn_env_steps"] == row["dqn_env_steps"]
    assert again["val_AP50"] == pytest.approx(row["val_AP50"]) and again["val_f0_fraction"] == row["val_f0_fraction"]
    assert row["gamma"] == 0.5 and row["dqn_env_steps"] >= 100
    assert 0.0 <= row["val_f0_fraction"] <= 1.0 and 0.0 <= row["val_AP50"] <= 1.0
    assert row["AP50_gain_vs_fixed"] == pytest.approx(row["val_AP50"] - row["fixed_AP50_at_f0"])
    qnet = load_policy(row["policy"])
    assert isinstance(qnet, QNetwork) and qnet.kwargs["state_channels"] == 16 and qnet.kwargs["grid"] == 2
    assert qnet(torch.zeros(2, 4 * 16 * 2 * 2 + 20)).shape == (2, 2)
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(mlflow_server).search_runs(
        [e.experiment_id for e in MlflowClient(mlflow_server).search_experiments()],
        filter_string="tags.mlflow.runName LIKE '%policy-gamma0.5'")
    assert runs and runs[0].data.metrics["val_f0_fraction"] == pytest.approx(row["val_f0_fraction"])


def test_tau_inference_sweep_and_gamma_policy_sweep(detector_job, mlflow_server):
    from dynvid.engine.sweep import run_sweep

    result, tmp = detector_job
    ckpt = result["checkpoints"]["interleaved"]
    common = {"method": "lfs", "preset": "smoke", "init_from": ckpt,
              "overrides": {k: int(v) for k, v in (t.split("=") for t in TINY)}}
    tau = run_sweep(spec_from_dict({
        **common, "name": "tiny_lfs_tau", "kind": "inference",
        "knobs": {"lfs.tau": {"grid": [0, 3]}},
        "objectives": {"val_AP50": "max", "val_gflops_avg": "min"}}, "test-lfs-tau"),
        storage_path=str(tmp / "runs"), tracking_uri=mlflow_server)
    by_tau = {t.knobs["lfs.tau"]: t.metrics for t in tau.trials}
    assert all(t.error is None for t in tau.trials), [t.error for t in tau.trials]
    assert by_tau[0]["val_f0_fraction"] == 1.0 and by_tau[3]["val_f0_fraction"] == pytest.approx(3 / 12)
    assert by_tau[3]["val_gflops_avg"] < by_tau[0]["val_gflops_avg"]
    policy = run_sweep(spec_from_dict({
        **common, "name": "tiny_lfs_gamma", "kind": "policy",
        "overrides": {**common["overrides"], "lfs.dqn_iterations": 1, "lfs.dqn_steps_per_iteration": 30,
                      "lfs.dqn_learning_starts": 10, "lfs.episode_len": 6, "lfs.policy_videos": 2,
                      "lfs.dqn_env_runners": 1},
        "knobs": {"lfs.gamma": {"grid": [1.5]}},
        "objectives": {"val_AP50": "max", "val_f0_fraction": "min"}}, "test-lfs-gamma"),
        storage_path=str(tmp / "runs"), tracking_uri=mlflow_server)
    (trial,) = policy.trials
    assert trial.error is None, trial.error
    assert 0.0 <= trial.metrics["val_f0_fraction"] <= 1.0 and trial.metrics["gamma"] == 1.5
    assert Path(policy.path, "policies").is_dir()


def test_policy_sweep_spec_rules():
    from dynvid.config import ConfigError as SpecError

    base = {"name": "x", "method": "lfs", "kind": "policy", "knobs": {"lfs.gamma": {"grid": [0.1]}},
            "objectives": {"val_AP50": "max", "val_f0_fraction": "min"}}
    with pytest.raises(SpecError, match="init_from"):
        spec_from_dict(base, "t")
    with pytest.raises(SpecError, match="not a policy knob"):
        spec_from_dict({**base, "init_from": "x", "knobs": {"lfs.memory_input": {"grid": [64]}}}, "t")
    with pytest.raises(SpecError, match="has no learned policy"):
        spec_from_dict({**base, "method": "vared", "init_from": "x", "knobs": {"vared.gate_threshold": {"grid": [0.1]}},
                        "objectives": {"val_clip_top1": "max"}}, "t")
    with pytest.raises(SpecError, match="inference-time knobs of lfs"):
        spec_from_dict({**base, "kind": "inference", "init_from": "x"}, "t")
