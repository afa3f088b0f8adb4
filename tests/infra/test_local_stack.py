"""infra/local/stack.py: ``up`` brings the S3 endpoint and the MLflow server up on 127.0.0.1
(artifacts reach the bucket through the server), ``down`` stops both by their recorded PIDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local" / "stack.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration  # starts the S3 endpoint and the MLflow server
def test_up_serves_s3_and_mlflow_and_down_stops_both(tmp_path):
    import boto3
    import mlflow

    work = tmp_path / "stack"
    up = subprocess.run([sys.executable, str(SCRIPT), "up", "--dir", str(work), "--bucket", "stack-test"],
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr[-3000:]
    state = json.loads((work / "stack.json").read_text())
    try:
        assert "stack.py down" in up.stdout and (work / "env.sh").read_text().count("export ") == len(state["env"])
        env = state["env"]
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.create_experiment("stack-test"))
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="stack-test").get("Contents", [])]
        assert any(k.startswith("mlartifacts/") and k.endswith("/note.txt") for k in keys), keys
        again = subprocess.run([sys.executable, str(SCRIPT), "up", "--dir", str(work)], capture_output=True, text=True)
        assert again.returncode != 0 and "already recorded" in again.stderr
    finally:
        down = subprocess.run([sys.executable, str(SCRIPT), "down", "--dir", str(work)], capture_output=True, text=True,
                              timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not _alive(state["s3"]["pid"]) and not _alive(state["mlflow"]["pid"])
    assert not (work / "stack.json").exists()
