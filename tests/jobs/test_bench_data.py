"""Smoke run of the data benchmark: it measures and writes the shared benchmark JSON shape."""

import json


def test_bench_data_smoke(tmp_path, capsys):
    import bench_data
    out = tmp_path / "bench.json"
    assert bench_data.main(["--smoke-test", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "targets"}
    assert report["results"]["clips"] == 6 and report["results"]["bad_videos"] == 0
    assert report["results"]["clips_per_s_per_core"] > 0
    assert report["results"]["probe_ms_per_video"] > 0 and report["results"]["load_cached_s"] >= 0
    (target,) = report["targets"]
    assert target["name"] == "clips_per_s_per_core" and target["direction"] == "max" and target["target"] == 15.0
    assert target["met"] == (target["value"] >= 15.0)
    assert "clips_per_s_per_core" in capsys.readouterr().out
