"""``jobs/gpu_check.py``: on a machine without CUDA it says so and dry-runs the same checks on
the CPU (one job, the VA-RED² speed tables and the engine-vs-plain-loop comparison here, to
keep the suite short; every job's own smoke run is tested with its job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(args: list[str], tmp_path: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "gpu_check.py"), "--dry-run", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc, json.loads(out.read_text())


def test_dry_run_completes_a_job_a_speed_table_and_the_engine_comparison(tmp_path):
    proc, report = _run(["--only", "resq_segmentation", "bench_vared", "bench_engine"], tmp_path, 900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(report) == {"benchmark", "config", "results", "targets"} and report["config"]["dry_run"] is True
    rows = {r["name"]: r for r in report["results"]["checks"]}
    assert set(rows) == {"resq_segmentation", "bench_vared", "bench_engine"}
    assert all(r["status"] == "ok" for r in rows.values()), {k: r.get("stderr_tail") for k, r in rows.items()}
    job = rows["resq_segmentation"]
    assert "--set" in job["command"] and "train.use_gpu=false" in job["command"]  # the dry run's CPU switch
    assert "resq.qat_epochs=1" in job["command"] and job["train_clips_per_s"]
    assert all(v > 0 for v in job["train_clips_per_s"].values())
    assert {(t["dtype"], t["batch"]) for t in rows["bench_vared"]["speed"]} == {
        ("fp32", 1), ("fp32", 16), ("fp16", 1), ("fp16", 16)}
    engine = rows["bench_engine"]["engine"]
    assert engine["plain_loop_clips_per_s"] > 0 and engine["engine_clips_per_s"] > 0
    assert engine["engine_over_plain_loop"] == pytest.approx(
        engine["engine_clips_per_s"] / engine["plain_loop_clips_per_s"])
    completes = [t for t in report["targets"] if t["name"].endswith("_completes")]
    assert len(completes) == 3 and all(t["met"] for t in completes)
    assert any(t["name"].startswith("bench_engine/") for t in report["targets"])
    assert "DRY RUN" in proc.stdout and "3 checks completed" in proc.stdout
    assert (tmp_path / "gpu_check.json.logs" / "bench_engine.out").is_file()


def test_a_check_that_runs_out_of_time_is_reported_and_fails_the_command(tmp_path):
    """A speed table alone: no Ray is started for it (a job check would start one)."""
    proc, report = _run(["--only", "bench_vared", "--job-timeout", "1"], tmp_path, 300)
    assert proc.returncode == 1
    (row,) = report["results"]["checks"]
    assert row["name"] == "bench_vared" and row["status"] == "timeout"
    assert report["targets"] == [{"name": "bench_vared_completes", "value": 0.0, "target": 1.0, "direction": "max",
                                  "met": False}]
    assert "FAILED: bench_vared" in proc.stdout and "Ray for the checks" not in proc.stdout
