"""``jobs/bench_vared.py`` without training: the speed tables alone (``--speed-only``), the
``--device cuda`` dry run on a machine without CUDA, and the targets' met flags. The smoke run
that trains (accuracy–cost rows, bootstrap interval, learning curve, trained policy) is in
tests/engine/test_vared_bench.py, on the shared Ray cluster."""

import json

import pytest
import torch

import bench_vared  # jobs/ is on pytest's pythonpath (pyproject.toml)

CHOICES = {"all", "half", "quarter"}


def consistent(t: dict) -> bool:
    return t["met"] == (t["value"] >= t["target"] if t["direction"] == "max" else t["value"] <= t["target"])


def run(tmp_path, capsys, *args) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    assert bench_vared.main(["--smoke-test", "--speed-only", "--out", str(out), *args]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_cpu_speed_tables_and_targets(tmp_path, capsys):
    report, printed = run(tmp_path, capsys, "--set", "train.seed=3")
    assert set(report) == {"benchmark", "config", "results", "targets"} and report["benchmark"] == "vared"
    assert report["config"]["overrides"] == ["train.seed=3"] and report["config"]["seed"] == 3  # --set recorded
    speed = report["results"]["speed"]
    assert speed["device"] == "cpu" and not speed["dry_run"] and not report["config"]["dry_run"]
    assert "trained" not in speed  # --speed-only: no trained model
    tables = speed["forced"]["tables"]
    assert [(t["dtype"], t["batch"]) for t in tables] == [("fp32", 1), ("fp32", 16)]
    for table in tables:
        assert set(table["rows"]) == CHOICES
        rows = table["rows"]
        assert rows["all"]["gflops_ratio"] == pytest.approx(1.0)  # forced "all" is the static network's cost
        assert rows["quarter"]["gflops"] < rows["half"]["gflops"] < rows["all"]["gflops"]
        for row in rows.values():
            assert row["speedup"] == pytest.approx(row["dynamic_clips_per_s"] / row["static_clips_per_s"])
            assert row["speed_fraction"] == pytest.approx(row["speedup"] / row["gflops_ratio"])
            assert row["time_ratio"] == pytest.approx(1 / row["speedup"])
    names = [t["name"] for t in report["targets"]]
    assert names == [f"cpu_fp32_b{b}_{k}" for b in (1, 16) for k in
                     ("all_time_over_static", "half_speedup_over_gflops_ratio", "quarter_speedup_over_gflops_ratio")]
    assert all(consistent(t) for t in report["targets"])
    assert "DRY RUN" not in printed and "r=1/4, R=4" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="a dry run happens only without CUDA")
def test_cuda_smoke_test_without_cuda_is_a_marked_dry_run(tmp_path, capsys):
    report, printed = run(tmp_path, capsys, "--device", "cuda")
    speed = report["results"]["speed"]
    assert report["config"]["dry_run"] is True and speed["dry_run"] is True and speed["device"] == "cpu"
    assert speed["requested_device"] == "cuda" and speed["dtypes"] == ["fp32", "fp16"]
    assert [(t["dtype"], t["batch"]) for t in speed["forced"]["tables"]] == [
        ("fp32", 1), ("fp32", 16), ("fp16", 1), ("fp16", 16)]
    assert printed.count("DRY RUN") >= 2  # the table and the targets
    names = [t["name"] for t in report["targets"]]
    assert names == ["cuda_fp32_b1_all_time_over_static", "cuda_fp16_b1_all_time_over_static",
                     "cuda_fp16_b16_all_time_over_static", "cuda_fp16_b16_half_speedup_over_gflops_ratio",
                     "cuda_fp16_b16_quarter_speedup_over_gflops_ratio"]
    bounds = {t["name"]: t["target"] for t in report["targets"]}
    assert bounds["cuda_fp32_b1_all_time_over_static"] == 1.10
    assert bounds["cuda_fp16_b16_all_time_over_static"] == 1.05
    assert all(consistent(t) for t in report["targets"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_and_without_smoke_test_is_one_line(capsys):
    assert bench_vared.main(["--device", "cuda", "--speed-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_vared: error: --device cuda") and "--smoke-test" in err[0]


def _row(speedup: float, ratio: float) -> dict:
    return {"speedup": speedup, "gflops_ratio": ratio, "speed_fraction": speedup / ratio, "time_ratio": 1 / speedup}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_target_flags_follow_value_bound_and_direction(device):
    tables = [{"dtype": d, "batch": b, "rows": {"all": _row(1 / 1.07, 1.0), "half": _row(1.7, 2.0),
                                                 "quarter": _row(2.0, 3.0)}}
              for d in (("fp32", "fp16") if device == "cuda" else ("fp32",)) for b in (1, 16)]
    speed = {"forced": {"tables": tables},
             "trained": {"tables": [{**t, "rows": {"trained": _row(1.3, 1.5)}} for t in tables]}}
    targets = bench_vared.speed_targets(speed, device)
    by = {t["name"]: t for t in targets}
    assert all(consistent(t) for t in targets)
    main = "cpu_fp32_b16" if device == "cpu" else "cuda_fp16_b16"
    assert by[f"{main}_half_speedup_over_gflops_ratio"]["met"]  # 1.7 / 2.0 = 0.85 >= 0.8
    assert not by[f"{main}_quarter_speedup_over_gflops_ratio"]["met"]  # 2.0 / 3.0 < 0.8
    assert by[f"{main}_trained_speedup_over_gflops_ratio"]["met"]  # 1.3 / 1.5 >= 0.8
    assert not by[f"{main}_all_time_over_static"]["met"]  # 7% slower than static > 5%
    if device == "cuda":
        assert by["cuda_fp32_b1_all_time_over_static"]["met"]  # within 10% at batch 1
        assert "cuda_fp32_b16_half_speedup_over_gflops_ratio" not in by  # CUDA: batch-16 fp16 only
    acc = {"gflops_reduction_vs_continued": 0.3, "clip1_diff_vs_continued": {"low": -0.012}}
    gflops, ci = bench_vared.accuracy_targets(acc)
    assert gflops["met"] and gflops["direction"] == "max" and not ci["met"] and ci["target"] == -0.01
