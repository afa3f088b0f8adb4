"""ResQ end to end on the shared Ray cluster: the segmentation job (float stage on Ray Train,
PTQ evaluation, frame / ResQ / Dynamic-ResQ report with its bit-width map, registry), an
inference sweep of the bit configuration and keyframe period over its checkpoint (Ray Tune),
and the benchmark on the job's checkpoint (not retrained; JSON shape and targets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dynvid.engine.sweep_spec import spec_from_dict

REPO = Path(__file__).resolve().parents[2]


def _job(name: str):
    return __import__(name)


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
    args = ["--smoke-test", "--out", str(out), "--taus", "0.01", "--periods", "1", "2",
            "--checkpoint", result["checkpoints"]["float"]]
    assert _job("bench_resq").main(args) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    rows = report["results"]["rows"]
    assert {"float", "frame W8A8->W4A4", "ResQ W8A8->W4A4", "frame W4A4->W3A3", "ResQ W4A4->W3A3",
            "frame W8A8->W8A8", "ResQ W8A8->W8A8", "frame W8A8->W8A4", "ResQ W8A8->W8A4", "ResQ W8A8->W8A4 T=1",
            "ResQ W8A8->W8A4 T=2", "Dynamic-ResQ W8A8->W8A{0,4,8}", "Dynamic-ResQ W8A8->W8A{0,4,8} T=2",
            "Dynamic-ResQ W8A8->W8A{0,4,8} τ=0.01"} == set(rows)
    assert report["config"]["noise_std"] == 2.0 and report["config"]["shot_noise"] == 0.03  # noisy by default
    # Fig. 5's static curve over T: T = 1 is every frame a W8A8 keyframe; T = 2 half of them at W8A4
    macs = rows["float"]["gmacs_avg"]
    assert rows["ResQ W8A8->W8A4 T=1"]["gbops_avg"] == pytest.approx(macs * 64)
    assert rows["ResQ W8A8->W8A4 T=2"]["gbops_avg"] == pytest.approx(macs * (64 + 32) / 2)
    assert rows["ResQ W8A8->W8A4"]["gbops_avg"] == pytest.approx(macs * (2 * 64 + 4 * 32) / 6)  # T = 3, 6 frames
    assert rows["Dynamic-ResQ W8A8->W8A{0,4,8} T=2"]["period"] == 2
    shares = rows["Dynamic-ResQ W8A8->W8A{0,4,8}"]["bit_shares"]
    assert set(shares) == {"0", "4", "8"} and sum(shares.values()) == pytest.approx(1.0)
    loose = rows["Dynamic-ResQ W8A8->W8A{0,4,8} τ=0.01"]
    assert loose["tau"] == 0.01 and loose["bit_shares"]["8"] <= shares["8"]  # a larger τ stops earlier
    assert report["results"]["checkpoint"] == result["checkpoints"]["float"]  # the job's network, not retrained
    assert Path(report["results"]["bit_width_maps"]).is_file()
    names = [t["name"] for t in report["targets"]]
    assert names == ["ResQ_minus_frame_mIoU_W8A8->W4A4", "ResQ_minus_frame_mIoU_W4A4->W3A3",
                     "Dynamic_ResQ_BOPs_saving_vs_ResQ_W8A8->W8A8", "Dynamic_ResQ_mIoU_drop_vs_ResQ_W8A8->W8A8",
                     "Dynamic_ResQ_minus_ResQ_W8A8->W8A4_mIoU_at_equal_BOPs"]
    for t in report["targets"]:
        if t["direction"] == "min":
            assert t["met"] == (t["value"] <= t["target"])
    curve = report["results"]["summary"]["static_resq_W8A8->W8A4_curve"]
    assert sorted(p["T"] for p in curve) == [1, 2, 3]


def _row(bits, scheme, period, gbops, miou, **extra):
    return {"bits": bits, "scheme": scheme, "period": period, "gbops_avg": gbops, "mIoU": miou, **extra}


def test_curve_value_reads_a_piecewise_linear_curve():
    from dynvid.methods.resq.report import curve_value

    points = [(10.0, 0.5), (20.0, 0.7), (30.0, 0.75)]
    assert curve_value(points, 15.0) == pytest.approx(0.6)
    assert curve_value(list(reversed(points)), 25.0) == pytest.approx(0.725)  # any order
    assert curve_value(points, 10.0) == 0.5 and curve_value(points, 30.0) == 0.75
    assert curve_value(points, 9.9) is None and curve_value(points, 30.1) is None  # no extrapolation
    assert curve_value([(10.0, 0.5)], 10.0) == 0.5 and curve_value([], 1.0) is None


def _bench_rows(dynamic_bops: float, dynamic_miou: float) -> dict:
    """Rows of a benchmark run with static ResQ W8A8->W8A4 at T = 1 (30 GBOPs), 2 (22.5), 3 (20)."""
    rows = {"float": _row("W32A32", "float", 3, 480.0, 0.76)}
    for bits in ("W8A8->W4A4", "W4A4->W3A3", "W8A8->W8A8"):
        rows[f"frame {bits}"] = _row(bits, "frame", 3, 15.0, 0.40)
        rows[f"ResQ {bits}"] = _row(bits, "resq", 3, 15.0, 0.70)
    rows["ResQ W8A8->W8A8"].update(gbops_avg=30.0, mIoU=0.76)
    rows["frame W8A8->W8A4"] = _row("W8A8->W8A4", "frame", 3, 20.0, 0.60)
    rows["ResQ W8A8->W8A4"] = _row("W8A8->W8A4", "resq", 3, 20.0, 0.70)
    rows["ResQ W8A8->W8A4 T=1"] = _row("W8A8->W8A4", "resq", 1, 30.0, 0.76)
    rows["ResQ W8A8->W8A4 T=2"] = _row("W8A8->W8A4", "resq", 2, 22.5, 0.72)
    rows["Dynamic-ResQ W8A8->W8A{0,4,8}"] = _row("W8A8->W8A{0,4,8}", "resq", 3, dynamic_bops, dynamic_miou)
    rows["Dynamic-ResQ W8A8->W8A{0,4,8} τ=0.01"] = _row("W8A8->W8A{0,4,8}", "resq", 3, 1.0, 0.99, tau=0.01)
    return rows


@pytest.mark.parametrize("bops,miou,gap,how,met", [
    (21.0, 0.72, 0.72 - (0.70 + 0.02 * 1 / 2.5), "interpolated", True),  # above the static curve
    (21.0, 0.70, 0.70 - 0.708, "interpolated", False),  # above static at its own T = 3, below the curve
    (26.25, 0.70, 0.70 - 0.74, "interpolated", False),  # between T = 2 and T = 1
    (18.0, 0.71, 0.01, "cheapest point", True),  # cheaper than every static point and better
    (31.0, 0.80, 0.04, "outside", False),  # dearer than static at T = 1: no claim
])
def test_the_equal_bops_target_reads_the_static_curve_over_t(bops, miou, gap, how, met):
    targets, summary = _job("bench_resq").targets_from_rows(_bench_rows(bops, miou))
    t = targets[-1]
    assert t["name"] == "Dynamic_ResQ_minus_ResQ_W8A8->W8A4_mIoU_at_equal_BOPs"
    assert t["value"] == pytest.approx(gap) and t["reference"] == how and t["met"] is met
    assert summary["dynamic_over_resq_W8A8->W8A4_gbops_same_T"] == pytest.approx(bops / 20.0)
    assert [p["T"] for p in summary["static_resq_W8A8->W8A4_curve"]] == [3, 2, 1]  # by BOPs; τ rows left out
