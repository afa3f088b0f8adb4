"""Smoke run of the data benchmark: it measures and writes the shared benchmark JSON shape."""

import json

import pytest


def test_bench_data_smoke(tmp_path, capsys):
    import bench_data
    out = tmp_path / "bench.json"
    assert bench_data.main(["--smoke-test", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    assert report["results"]["clips"] == 6 and report["results"]["bad_videos"] == 0
    assert report["results"]["clips_per_s_per_core"] > 0
    assert report["results"]["probe_ms_per_video"] > 0 and report["results"]["load_cached_s"] >= 0
    kinetics, synthetic = report["targets"]
    assert kinetics["name"] == "clips_per_s_per_core" and kinetics["direction"] == "max" and kinetics["target"] == 15.0
    assert kinetics["met"] == (kinetics["value"] >= 15.0)
    assert synthetic["name"] == "synthetic_paper_clips_per_s_per_core" and synthetic["target"] == 30.0
    assert synthetic["direction"] == "max" and synthetic["met"] == (synthetic["value"] >= 30.0)
    paper, laptop = report["results"]["synthetic"]["paper"], report["results"]["synthetic"]["laptop"]
    assert synthetic["value"] == paper["clips_per_s_per_core"] > 0 and laptop["clips_per_s_per_core"] > 0
    assert paper["clip_shape"] == [3, 16, 112, 112] and laptop["clip_shape"] == [3, 8, 48, 48]  # the two sizes
    assert paper["render_ms_per_clip"] > 0 and paper["transform_ms_per_clip"] > 0
    printed = capsys.readouterr().out
    assert "clips_per_s_per_core" in printed and "synthetic_paper_clips_per_s_per_core" in printed


@pytest.mark.parametrize("section", ["kinetics", "synthetic"])
def test_bench_data_one_section(tmp_path, section):
    import bench_data
    out = tmp_path / "bench.json"
    assert bench_data.main(["--smoke-test", "--section", section, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (target,) = report["targets"]
    assert target["name"].startswith("synthetic") == (section == "synthetic")
    assert ("synthetic" in report["results"]) == (section == "synthetic")
