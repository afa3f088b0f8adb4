"""ResQ end to end on the shared Ray cluster: the segmentation job (float stage on Ray Train,
PTQ evaluation, frame / ResQ / Dynamic-ResQ report with its bit-width map, registry), an
inference sweep of the bit configuration and keyframe period over its checkpoint (Ray Tune),
and the benchmark on the job's checkpoint (not retrained; JSON shape and targets)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from dynvid.engine.sweep_spec import spec_from_dict

REPO = Path(__file__).resolve().parents[2]


def _job(name: str):
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def resq_job(ray_cluster, mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resq")
    out = tmp / "job.json"
    args = ["--smoke-test", "--tracking-uri", mlflow_server, "--out", str(out),
            "--set", f"train.storage_path={tmp}/runs", "--set", "train.name=smoke-resq"]
    assert _job("resq_segmentation").main(args) == 0
    return json.loads(out.read_text()), tmp


def test_job_trains_reports_schemes_and_registers(resq_job):
    result, _ = resq_job
    val = result["stages"]["float"]
    assert 0 <= val["val_mIoU"] <= 1 and val["val_gbops_avg"] < val["val_gbops_float"]
    metrics = result["report"]["metrics"]
    assert metrics["frame_W8A8_W4A4_gbops_avg"] == pytest.approx(metrics["ResQ_W8A8_W4A4_gbops_avg"])
    assert metrics["Dynamic_ResQ_W8A8_W8A_0_4_8_gbops_avg"] < metrics["ResQ_W8A8_W8A8_gbops_avg"] * 1.05
    maps = [a for a in result["report"]["artifacts"] if a.endswith(".png")]
    assert len(maps) == 1 and Path(maps[0]).stat().st_size > 0
    assert result["registered"]["name"] == "resq-ddrnet23_slim-synthetic-segmentation"


def test_bits_and_period_inference_sweep(resq_job, mlflow_server):
    from dynvid.engine.sweep import run_sweep

    result, tmp = resq_job
    shipped = yaml.safe_load((REPO / "search_spaces" / "resq.yaml").read_text())
    spec = spec_from_dict({**shipped, "name": "tiny_resq_bits", "preset": "smoke",
                           "init_from": result["checkpoints"]["float"],
                           "knobs": {"resq.bits": {"grid": ["W8A8->W4A4", "W32A32->W32A32"]},
                                     "resq.period": {"grid": [1, 3]}}}, "test-resq-bits")
    sweep = run_sweep(spec, storage_path=str(tmp / "runs"), tracking_uri=mlflow_server)
    assert all(t.error is None for t in sweep.trials), [t.error for t in sweep.trials]
    by = {(t.knobs["resq.bits"], t.knobs["resq.period"]): t.metrics for t in sweep.trials}
    assert len(by) == 4
    lossless = by[("W32A32->W32A32", 3)]
    assert lossless["val_mIoU"] == pytest.approx(lossless["val_mIoU_float"])
    # period 1: every frame a W8A8 keyframe; period 3: two of every three frames at W4A4
    assert by[("W8A8->W4A4", 1)]["val_gbops_avg"] > by[("W8A8->W4A4", 3)]["val_gbops_avg"]


def test_bench_reuses_the_stage_and_writes_targets(resq_job, tmp_path):
    result, _ = resq_job
    out = tmp_path / "bench.json"
    args = ["--smoke-test", "--out", str(out), "--taus", "0.01", "--checkpoint", result["checkpoints"]["float"]]
    assert _job("bench_resq").main(args) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    rows = report["results"]["rows"]
    assert {"float", "frame W8A8->W4A4", "ResQ W8A8->W4A4", "frame W4A4->W3A3", "ResQ W4A4->W3A3",
            "frame W8A8->W8A8", "ResQ W8A8->W8A8", "Dynamic-ResQ W8A8->W8A{0,4,8}",
            "Dynamic-ResQ W8A8->W8A{0,4,8} τ=0.01"} == set(rows)
    shares = rows["Dynamic-ResQ W8A8->W8A{0,4,8}"]["bit_shares"]
    assert set(shares) == {"0", "4", "8"} and sum(shares.values()) == pytest.approx(1.0)
    loose = rows["Dynamic-ResQ W8A8->W8A{0,4,8} τ=0.01"]
    assert loose["tau"] == 0.01 and loose["bit_shares"]["8"] <= shares["8"]  # a larger τ stops earlier
    assert report["results"]["checkpoint"] == result["checkpoints"]["float"]  # the job's network, not retrained
    assert Path(report["results"]["bit_width_maps"]).is_file()
    names = [t["name"] for t in report["targets"]]
    assert names == ["ResQ_minus_frame_mIoU_W8A8->W4A4", "ResQ_minus_frame_mIoU_W4A4->W3A3",
                     "Dynamic_ResQ_BOPs_saving_vs_ResQ_W8A8->W8A8", "Dynamic_ResQ_mIoU_drop_vs_ResQ_W8A8->W8A8"]
    for t in report["targets"]:
        if t["direction"] == "min":
            assert t["met"] == (t["value"] <= t["target"])
