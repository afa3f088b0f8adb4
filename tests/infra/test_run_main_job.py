"""``infra/local/run_main_job.sh`` (``make run``) hands the job the commit it was submitted from:
the job runs from Ray's copy of the working directory, which has no ``.git`` (issue 18, item 9).
A stand-in ``ray`` on ``PATH`` records what the script would submit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FAKE_RAY = """#!/usr/bin/env bash
# stand-in for the ray CLI: 'ray status' finds a head, 'ray job submit' records its arguments
if [ "$1" = status ]; then exit 0; fi
python -c 'import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], "w"))' "$RECORD" "$@"
"""


def test_the_submitted_job_carries_the_commit_and_dirty_flag(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "ray").chmod(0o755)
    record = tmp_path / "submitted.json"
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RECORD": str(record), "DYNVID_RUNS": str(tmp_path / "runs"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    done = subprocess.run(["bash", str(REPO / "infra" / "local" / "run_main_job.sh"), "--smoke-test"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    args = json.loads(record.read_text())
    assert args[:2] == ["job", "submit"]
    runtime_env = json.loads(args[args.index("--runtime-env-json") + 1])
    shipped = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    assert runtime_env["env_vars"]["DYNVID_GIT_COMMIT"] == head.stdout.strip()
    assert runtime_env["env_vars"]["DYNVID_GIT_DIRTY"] in ("true", "false")
    assert runtime_env["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"  # the shipped runtime env, kept
    assert {k: v for k, v in runtime_env.items() if k != "env_vars"} == {k: v for k, v in shipped.items()
                                                                       if k != "env_vars"}
    entry = args[args.index("--") + 1:]
    assert entry[:2] == ["python", "jobs/vared_kinetics.py"] and entry[-1] == "--smoke-test"
    assert f"train.storage_path={tmp_path}/runs" in entry
