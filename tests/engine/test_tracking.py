"""dynvid.engine.tracking: scrubbing (pure), URI checks, parent/child runs against a real
``mlflow server`` whose artifacts land on S3 (moto), and the server-less SQLite default."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import pytest

from dynvid.engine.tracking import (
    PARENT_TAG,
    Tracker,
    TrackingError,
    check_tracking_uri,
    finish_job_run,
    git_info,
    resolve_tracking_uri,
    scrub_params,
    start_job_run,
)

FAKE_SECRET = "fake-secret-Zq81xPw0"  # stands for a credential put into a config by mistake


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _all_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


# ---- scrubbing ----------------------------------------------------------------------------

def test_scrub_params_redacts_secret_keys_env_values_and_url_passwords(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value-9")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token-7")
    params = {
        "storage": {"aws_secret_access_key": "abc", "s3_access_key": "def", "Password": "p", "api_token": None},
        "note": "env-secret-value-9",
        "cmd": "upload --token env-session-token-7 now",
        "tracking": "http://alice:hunter2@mlflow:5000",
        "items": ["env-secret-value-9", 3],
        "lr": 0.1,
        "key_frame_threshold": 0.5,  # "key" alone is no secret
    }
    out = scrub_params(params)
    assert out["storage"] == {"aws_secret_access_key": "***", "s3_access_key": "***", "Password": "***",
                              "api_token": None}
    assert out["note"] == "***" and out["cmd"] == "upload --token *** now"
    assert out["tracking"] == "http://alice:***@mlflow:5000"
    assert out["items"] == ["***", 3]
    assert out["lr"] == 0.1 and out["key_frame_threshold"] == 0.5
    assert params["storage"]["aws_secret_access_key"] == "abc"  # input untouched
    flat = scrub_params({"storage.aws_access_key_id": "AKIA", "data.clip_len": 8})
    assert flat == {"storage.aws_access_key_id": "***", "data.clip_len": 8}


# ---- URI checks ---------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_unreachable_server_fails_fast_naming_uri():
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is not reachable"):
        check_tracking_uri(uri, timeout_s=5)
    assert time.monotonic() - t0 < 5


def test_check_silent_server_times_out():
    """A port that accepts connections but never answers: fails after ~timeout_s."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(TrackingError, match=uri):
            check_tracking_uri(uri, timeout_s=1.0)
        assert time.monotonic() - t0 < 4


def test_check_redacts_password_in_uri():
    with pytest.raises(TrackingError) as info:
        check_tracking_uri(f"http://bob:{FAKE_SECRET}@127.0.0.1:{_closed_port()}", timeout_s=2)
    assert FAKE_SECRET not in str(info.value) and "bob:***@127.0.0.1" in str(info.value)


def test_check_local_stores(tmp_path):
    check_tracking_uri(f"sqlite:///{tmp_path}/new/deeper/mlflow.db")
    assert (tmp_path / "new" / "deeper").is_dir()  # created, no database file yet
    check_tracking_uri((tmp_path / "filestore").as_uri())
    assert (tmp_path / "filestore").is_dir()
    bad = tmp_path / "bad.db"
    bad.write_text("not a database " * 100)
    with pytest.raises(TrackingError, match="bad.db is not a usable SQLite database"):
        check_tracking_uri(f"sqlite:///{bad}")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrackingError, match=f"sqlite:///{blocker}/mlflow.db: cannot create"):
        check_tracking_uri(f"sqlite:///{blocker}/mlflow.db")


def test_check_healthy_server(mlflow_server):
    check_tracking_uri(mlflow_server)
    check_tracking_uri(mlflow_server + "/")


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("http://h:5000") == "http://h:5000"
    assert resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()


# ---- runs on a real server, artifacts on S3 -----------------------------------------------

def test_parent_and_child_runs_on_server(mlflow_server, s3_server, tmp_path):
    uri, experiment = mlflow_server, _unique("exp")
    env_secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]  # set in os.environ by the s3_server fixture
    config = {"data": {"clip_len": 4, "dataset": "synthetic:actions"}, "optim": {"lr": 0.1},
              "storage": {"aws_secret_access_key": FAKE_SECRET, "endpoint": "http://u:" + FAKE_SECRET + "@h"},
              "note": env_secret}
    job = _unique("job")
    parent = start_job_run(uri, experiment, job, {"method": "static", **config}, tags={"owner": "ci"})
    assert mlflow.active_run() is None

    tracker = Tracker(uri, experiment, f"{job}-base", {"method": "static", "stage": "base", **config},
                      parent_run_id=parent)
    for epoch in (1, 2):
        tracker.log_metrics({"train_loss": 1.0 / epoch, "val_clip_top1": 0.4 * epoch, "epoch": epoch, "tag": "x"},
                            step=epoch)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "model.pt").write_bytes(b"\x00weights")
    tracker.log_artifact(str(ckpt))
    tracker.log_text(f"| epoch | loss |\n| 1 | 1.0 |\nkey={env_secret}\n", "tables/epochs.md")
    tracker.finish()
    assert mlflow.active_run() is None

    plot = tmp_path / "pareto.csv"
    plot.write_text(f"gflops,acc\n0.1,0.5\n# {FAKE_SECRET}\n")
    finish_job_run(uri, parent, {"val_clip_top1": 0.8, "cost": {"gflops_avg": 0.12}},
                   results_markdown=f"| method | acc |\n| static | 0.8 |\n{FAKE_SECRET}", artifacts=[str(plot)])

    client = mlflow.MlflowClient(uri)
    p, c = client.get_run(parent), client.get_run(tracker.run_id)
    assert p.info.status == "FINISHED" and c.info.status == "FINISHED"
    assert c.data.tags[PARENT_TAG] == parent and PARENT_TAG not in p.data.tags
    assert p.data.tags["owner"] == "ci" and p.info.run_name == job and c.info.run_name == f"{job}-base"
    assert p.data.params["data.clip_len"] == "4" and c.data.params["stage"] == "base"
    assert p.data.params["storage.aws_secret_access_key"] == "***" and p.data.params["note"] == "***"
    assert p.data.metrics == {"val_clip_top1": 0.8, "cost.gflops_avg": 0.12}
    history = client.get_metric_history(tracker.run_id, "val_clip_top1")
    assert [(m.step, round(m.value, 3)) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.4), (2, 0.8)]
    assert "tag" not in c.data.metrics

    # no credential in any param, tag or artifact
    for run in (p, c):
        values = list(run.data.params.values()) + list(run.data.tags.values())
        assert not [v for v in values if FAKE_SECRET in v or env_secret in v]
    for run_id in (parent, tracker.run_id):
        dst = Path(client.download_artifacts(run_id, "", str(tmp_path / run_id)))
        text = _all_text(dst)
        assert text and FAKE_SECRET not in text and env_secret not in text
    child_files = {str(p.relative_to(tmp_path / tracker.run_id)) for p in (tmp_path / tracker.run_id).rglob("*")
                   if p.is_file()}
    assert child_files == {"checkpoint/config.json", "checkpoint/model.pt", "tables/epochs.md"}
    assert (tmp_path / tracker.run_id / "checkpoint" / "model.pt").read_bytes() == b"\x00weights"
    assert json.loads((tmp_path / tracker.run_id / "checkpoint" / "config.json").read_text())["data"]["clip_len"] == 4

    # the artifacts live on S3 (the server proxies them)
    keys = [o["Key"] for page in s3_server.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3_server.bucket, Prefix="mlartifacts/") for o in page.get("Contents", [])]
    for name in (f"{parent}/artifacts/results.md", f"{parent}/artifacts/pareto.csv",
                 f"{tracker.run_id}/artifacts/checkpoint/config.json", f"{tracker.run_id}/artifacts/tables/epochs.md"):
        assert any(k.endswith(name) for k in keys), (name, keys)


def test_rerun_resumes_runs_by_name(mlflow_server):
    uri, experiment, job = mlflow_server, _unique("exp"), _unique("job")
    first = start_job_run(uri, experiment, job, {"optim": {"epochs": 1}})
    child = Tracker(uri, experiment, f"{job}-base", {"optim": {"epochs": 1}}, parent_run_id=first)
    child.log_metrics({"loss": 1.0}, step=1)
    child.finish()
    finish_job_run(uri, first, {"acc": 0.1})

    again = start_job_run(uri, experiment, job, {"optim": {"epochs": 2}, "extra": "new"})
    assert again == first
    child2 = Tracker(uri, experiment, f"{job}-base", {"optim": {"epochs": 2}}, parent_run_id=again)
    assert child2.run_id == child.run_id
    child2.log_metrics({"loss": 0.5}, step=2)
    child2.finish()

    client = mlflow.MlflowClient(uri)
    run = client.get_run(first)
    assert run.info.status == "RUNNING"  # resumed, not finished yet
    assert run.data.params["optim.epochs"] == "1" and run.data.params["extra"] == "new"  # params are immutable
    assert [m.step for m in client.get_metric_history(child.run_id, "loss")] == [1, 2]
    exp = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_disabled_tracker_is_a_noop():
    for tracker in (Tracker(None, "e", "r", {}), Tracker("http://127.0.0.1:9", "e", "r", {}, enabled=False)):
        assert tracker.run_id is None
        tracker.log_metrics({"a": 1.0}, step=1)
        tracker.log_text("x", "x.md")
        tracker.finish()


# ---- the server-less default --------------------------------------------------------------

def test_sqlite_default_without_server(tmp_path, monkeypatch):
    work = tmp_path / "job"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = resolve_tracking_uri("sqlite:///runs/mlflow.db")
    check_tracking_uri(uri)
    parent = start_job_run(uri, "dynvid", "tiny", {"model": {"backbone": "r2plus1d_18"}})
    tracker = Tracker(uri, "dynvid", "tiny-base", {"stage": "base"}, parent_run_id=parent)
    tracker.log_metrics({"val_clip_top1": 0.5}, step=1)
    tracker.log_text("hello", "notes.md")
    tracker.finish()
    finish_job_run(uri, parent, {"val_clip_top1": 0.5}, results_markdown="| a |")
    assert (work / "runs" / "mlflow.db").is_file()
    assert (work / "runs" / "mlartifacts" / tracker.run_id / "artifacts" / "notes.md").read_text() == "hello"
    assert (work / "runs" / "mlartifacts" / parent / "artifacts" / "results.md").is_file()
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()
    client = mlflow.MlflowClient(uri)
    assert client.get_run(tracker.run_id).data.tags[PARENT_TAG] == parent
    assert client.get_run(parent).data.params["model.backbone"] == "r2plus1d_18"


# ---- which code trained it ----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_info_prefers_what_the_submitting_side_recorded(monkeypatch):
    """A job running from Ray's copy of the working directory (no .git) gets the commit from
    the env vars that ``infra/local/run_main_job.sh`` puts in its runtime env."""
    monkeypatch.setenv("DYNVID_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("DYNVID_GIT_DIRTY", "true")
    assert git_info() == {"git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": "true"}
    monkeypatch.setenv("DYNVID_GIT_COMMIT", "not a commit")  # ignored: the checkout is asked instead
    assert git_info()["git_commit"] != "not a commit"


def test_git_info_of_a_checkout(tmp_path, monkeypatch):
    """``python jobs/x.py`` run directly: the checkout holding the code, with its dirty flag."""
    monkeypatch.delenv("DYNVID_GIT_COMMIT", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        _git(*args, cwd=repo)
    (repo / "code.py").write_text("x = 1\n")
    _git("add", "code.py", cwd=repo)
    _git("commit", "-q", "-m", "c", cwd=repo)
    head = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "notes.txt").write_text("untracked files do not make it dirty")
    assert git_info(repo) == {"git_commit": head, "git_dirty": "false"}
    (repo / "code.py").write_text("x = 2\n")
    assert git_info(repo) == {"git_commit": head, "git_dirty": "true"}
    # no cwd given: the checkout holding the package first, then the working directory's
    from dynvid.engine import tracking

    monkeypatch.setattr(tracking, "_PACKAGE_DIR", repo)
    monkeypatch.chdir(tmp_path)
    assert git_info()["git_commit"] == head
    monkeypatch.setattr(tracking, "_PACKAGE_DIR", tmp_path)
    monkeypatch.chdir(repo)
    assert git_info()["git_commit"] == head
    monkeypatch.chdir(tmp_path)
    assert git_info() == {"git_commit": "unknown", "git_dirty": "unknown"}


def test_job_runs_are_tagged_with_commit_and_dirty_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNVID_GIT_COMMIT", "89abcdef0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("DYNVID_GIT_DIRTY", "false")
    uri = resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = start_job_run(uri, "dynvid", "tagged", {})
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == "89abcdef0123456789abcdef0123456789abcdef"
    assert tags["dynvid.git_dirty"] == "false"
