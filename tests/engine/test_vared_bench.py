"""The VA-RED² benchmark's smoke run on the shared Ray cluster: VA-RED²'s stages, the static
base continued stage by stage (control a) and a static network from scratch (control b), all
measured on the same val clips; the paired bootstrap interval, the static learning curve, the
trained policy's speed table and every target in the benchmark JSON."""

from __future__ import annotations

import json

import pytest

from dynvid.config import set_arguments


@pytest.mark.slow
def test_bench_vared_smoke(vared_main_job, tmp_path, capsys):
    """On the main job's storage, at its size: the job's VA-RED² stages are found done, not
    retrained (the README's reuse of a finished job); the static controls train."""
    import bench_vared  # jobs/ is on pytest's pythonpath
    from test_trainer import TINY

    job, storage = vared_main_job
    capsys.readouterr()
    out = tmp_path / "bench.json"
    args = ["--smoke-test", "--out", str(out), "--eval-clips", "20", "--set", f"train.storage_path={storage}",
            *set_arguments(TINY)]
    assert bench_vared.main(args) == 0
    printed = capsys.readouterr().out
    for stage in ("base", "dynamic", "finetune"):
        assert f"/{job['run_name']}-{stage} already trained its 1 epochs" in printed, stage
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    config, results = report["config"], report["results"]
    assert config["epochs"] == {"vared_stages": {"base": 1, "dynamic": 1, "finetune": 1},
                                "continued": {"dynamic": 1, "finetune": 1}, "scratch": 3}
    rows = {r["model"]: r for r in results["rows"]}
    assert list(rows) == ["static base", "static, continued (a)", "static, from scratch (b)",
                          "VA-RED² after dynamic", "VA-RED²"]
    assert all(r["num_clips"] == 20 == results["eval_clips"] for r in rows.values())
    for r in rows.values():
        eps = 1e-9 * r["gflops_avg"]  # the mean of equal float64 costs may differ from them in the last bit
        assert r["gflops_min"] - eps <= r["gflops_avg"] <= r["gflops_max"] + eps and 0 <= r["clip_top1"] <= 1
    static = rows["static, continued (a)"]
    assert static["gflops_min"] == pytest.approx(static["gflops_max"])  # a static network: one cost
    assert results["gflops_reduction_vs_continued"] == pytest.approx(
        1 - rows["VA-RED²"]["gflops_avg"] / static["gflops_avg"])
    ci = results["clip1_diff_vs_continued"]
    assert ci["diff"] == pytest.approx(rows["VA-RED²"]["clip_top1"] - static["clip_top1"])
    assert ci["low"] <= ci["diff"] <= ci["high"] and ci["samples"] == 20 and ci["confidence"] == 0.95
    assert [c["epoch"] for c in results["learning_curve"]] == [1, 2, 3]  # the scratch run, every epoch
    assert all(0 <= c["val_clip_top1"] <= 1 for c in results["learning_curve"])
    assert len(results["policy"]["layers"]) == len(results["policy"]["temporal_fraction"]) > 0
    trained = results["speed"]["trained"]["tables"]
    assert [(t["dtype"], t["batch"]) for t in trained] == [("fp32", 1), ("fp32", 16)]
    assert all(set(t["rows"]) == {"trained"} for t in trained)
    names = [t["name"] for t in report["targets"]]
    assert names[:2] == ["gflops_reduction_vs_continued_static", "clip1_diff_ci95_low_vs_continued_static"]
    assert {"cpu_fp32_b1_trained_speedup_over_gflops_ratio", "cpu_fp32_b16_trained_speedup_over_gflops_ratio",
            "cpu_fp32_b16_all_time_over_static"} <= set(names)
    for t in report["targets"]:
        assert t["met"] == (t["value"] >= t["target"] if t["direction"] == "max" else t["value"] <= t["target"])
    assert "paired bootstrap interval" in printed and "val clip-1 after each epoch" in printed
