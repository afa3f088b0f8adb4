"""ANT end to end on the shared Ray cluster: the detection job (three Ray Train stages, Table 1
report, registry), an inference sweep of the key-frame threshold over its checkpoint (Ray
Tune), and the benchmark on the job's stages (found done, not retrained; the non-temporal
gates trained from the same supernet; NAS subnets; JSON shape)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dynvid.config import set_arguments
from dynvid.engine.sweep_spec import spec_from_dict

REPO = Path(__file__).resolve().parents[2]
TINY = ["ant.image_size=64", "data.synthetic_height=64", "data.synthetic_width=64", "ant.fpn_channels=16",
        "ant.fpn_layers=1", "ant.head_repeats=1", "data.synthetic_frames=6", "ant.eval_frames=4",
        "ant.cost_metric=macs"]


def _job(name: str):
    return __import__(name)


def _args(*extra: str) -> list[str]:
    return [*extra, *set_arguments(TINY)]


@pytest.fixture(scope="module")
def ant_job(ray_cluster, mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ant")
    out = tmp / "job.json"
    args = _args("--smoke-test", "--out", str(out), "--tracking-uri", mlflow_server,
                 "--set", f"train.storage_path={tmp}/runs", "--set", "train.name=smoke-ant")
    assert _job("ant_detection").main(args) == 0
    return json.loads(out.read_text()), tmp


def test_job_trains_three_stages_reports_table1_and_registers(ant_job):
    result, _ = ant_job
    assert list(result["checkpoints"]) == ["static", "supernet", "gates"]
    metrics = result["metrics"]
    assert {"val_AP", "val_AP50", "val_key_fraction", "val_mean_ratio", "val_gflops_avg"} <= set(metrics)
    # the engine's end-of-epoch hook ran in stage 2: two steps leave most per-ratio statistics stale
    assert 1 <= metrics["width_stats_refreshed"] <= 6 * 6
    saved = json.loads(Path(result["report"]["artifacts"][0]).read_text())
    rows = saved["rows"]
    assert list(rows) == ["D0 (static)", "D0 (ANT weights)", "ANT τ=0.45"]  # the embedded preset's threshold
    standalone, d0, ant = rows["D0 (static)"], rows["D0 (ANT weights)"], rows["ANT τ=0.45"]
    for static in (standalone, d0):
        assert static["key_fraction"] == 1.0 and static["mean_ratio"] == 6.0
        assert static["gmacs_min"] == static["gmacs_max"]  # a static network costs the same on every frame
    assert d0["gmacs_avg"] == pytest.approx(standalone["gmacs_avg"])  # the same network, other weights
    assert ant["params_m"] > d0["params_m"]  # fusion modules and gates on top of the supernet
    assert d0["latency_ms"] > 0 and ant["latency_ms"] > 0
    # speed-up and AP drop are against the like-for-like D0: ANT's own weights at full width
    assert result["report"]["metrics"]["latency_speedup"] == pytest.approx(d0["latency_ms"] / ant["latency_ms"])
    assert result["report"]["metrics"]["AP_drop"] == pytest.approx(d0["AP"] - ant["AP"])
    assert result["registered"]["name"] == "ant-efficientdet_d0-synthetic-detection"


def test_key_threshold_inference_sweep(ant_job, mlflow_server):
    from dynvid.engine.sweep import run_sweep

    result, tmp = ant_job
    shipped = yaml.safe_load((REPO / "search_spaces" / "ant.yaml").read_text())
    spec = spec_from_dict({**shipped, "name": "tiny_ant_threshold", "preset": "smoke",
                           "init_from": result["checkpoints"]["gates"],
                           "overrides": {k: (int(v) if v.isdigit() else v) for k, v in (t.split("=") for t in TINY)},
                           "knobs": {"ant.key_threshold": {"grid": [0.0, 100.0]}}}, "test-ant-threshold")
    sweep = run_sweep(spec, storage_path=str(tmp / "runs"), tracking_uri=mlflow_server)
    assert all(t.error is None for t in sweep.trials), [t.error for t in sweep.trials]
    by = {t.knobs["ant.key_threshold"]: t.metrics for t in sweep.trials}
    assert by[0.0]["val_key_fraction"] > 0.5  # every frame that changed at all is a key frame
    assert by[100.0]["val_key_fraction"] == pytest.approx(1 / 4)  # only each video's first frame (4 frames)


def test_bench_reuses_the_stages_and_writes_targets(ant_job, tmp_path):
    _, tmp = ant_job
    out = tmp_path / "bench.json"
    args = _args("--smoke-test", "--out", str(out), "--thresholds", "0.3", "100",
                 "--set", f"train.storage_path={tmp}/runs", "--set", "train.name=smoke-ant")
    assert _job("bench_ant").main(args) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    assert report["config"]["overrides"] == [f"train.storage_path={tmp}/runs", "train.name=smoke-ant", *TINY]
    rows = report["results"]["rows"]
    assert {"D0 (static)", "D0 (ANT weights)", "ANT τ=0.3", "ANT τ=0.45", "ANT τ=100", "non-temporal"} <= set(rows)
    nas = [name for name in rows if name.startswith("NAS")]
    assert len(nas) == 1 and rows[nas[0]]["gmacs_avg"] < rows["D0 (ANT weights)"]["gmacs_avg"]
    assert rows["non-temporal"]["key_fraction"] == 0.0
    assert rows["ANT τ=100"]["key_fraction"] <= rows["ANT τ=0.3"]["key_fraction"]
    fusion = report["results"]["fusion_effect"]  # ANT forced to its gates' most common subnet vs that subnet
    assert fusion["ratios"] == rows["ANT τ=0.45"]["configs"]["top"] and fusion["threshold"] == 0.45
    assert fusion["AP_added"] == pytest.approx(fusion["ant_forced_AP"] - fusion["static_AP"])
    assert 0.0 <= fusion["static_AP"] <= 1.0 and fusion["static_gmacs"] < rows["D0 (ANT weights)"]["gmacs_avg"] + 1e-9
    tag = "".join(map(str, fusion["ratios"]))  # both timed as rows, the static one on the front
    forced, static = rows[f"ANT forced {tag}"], rows[f"static {tag} (gates' subnet)"]
    assert fusion["ms_added"] == pytest.approx(forced["latency_ms"] - static["latency_ms"])
    assert fusion["static_AP"] == static["AP"] and static["ratios"] == fusion["ratios"]
    assert "latency_ms_512" in forced and "latency_ms_512" in static  # replayed with the others
    assert forced["key_fraction"] == rows["ANT τ=0.45"]["key_fraction"]  # ANT's key frames, forced widths
    assert forced["configs"] == {"distinct": 1, "top_share": 1.0, "top": fusion["ratios"]}
    names = [t["name"] for t in report["targets"]]
    assert names == ["latency_speedup_vs_D0", "AP_drop_vs_D0", "AP_above_static_NAS_front_at_GMACs",
                     "AP_above_static_NAS_front_at_latency"]
    d0, ant = rows["D0 (ANT weights)"], rows["ANT τ=0.45"]
    assert report["targets"][0]["value"] == pytest.approx(d0["latency_ms"] / ant["latency_ms"])
    replay = report["results"]["summary"]["replay"]  # the default --replay-size, 512
    assert list(replay) == ["512"]
    assert replay["512"]["latency_speedup"] == pytest.approx(d0["latency_ms_512"] / ant["latency_ms_512"])
    for t in report["targets"]:
        assert t["met"] == (t["value"] >= t["target"] if t["direction"] == "max" else t["value"] <= t["target"])
