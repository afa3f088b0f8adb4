"""The local stack a developer or CI needs: an S3-compatible endpoint (moto's standalone server,
which also answers IAM and STS) and ``mlflow server`` (SQLite backend store, artifacts proxied
to a bucket on that endpoint), both on 127.0.0.1 at free ports.

    python infra/local/stack.py up   [--dir .localstack] [--bucket dynvid]   # prints the env to export
    python infra/local/stack.py down [--dir .localstack]                     # stops both by their PIDs

``up`` writes ``DIR/stack.json`` (URLs, PIDs, the env) and ``DIR/env.sh``; ``down`` stops the
processes it recorded, by PID (each in its own process group), never by name. The credentials
are fake, recognisable values: moto accepts any, and the tests check they never leak.

The integration tests (``tests/engine/conftest.py``, ``tests/infra``) start the same services
through :func:`start_s3` and :func:`start_mlflow`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id-123",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-456",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""moto accepts any credentials; these are recognisable so that a leak is easy to find."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """A server process started in its own session, stopped by :meth:`stop` (its own handle)."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the service's process group, wait for the process itself (reaping it: a
        zombie would look alive to a group probe), then SIGKILL whatever is left of the group."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group this service created
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)


def stop_pid(pid: int, timeout: float = 20) -> None:
    """For a process this one did not start (``down``): SIGTERM the process group ``pid`` leads
    (``mlflow server`` forwards it to uvicorn), wait for the group to go, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_http(service: Service, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n"
                               + service.log.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(service.url + path, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"{service.name} did not answer {service.url}{path} in {timeout:.0f} s:\n"
                               + service.log.read_text(errors="replace")[-3000:])
        time.sleep(0.3)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def start_s3(workdir: str | os.PathLike, port: int = 0, timeout: float = 60) -> Service:
    """moto's standalone server (S3, IAM, STS, … on one port). ``service.env`` holds what a client
    needs: ``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``, fake credentials, no instance metadata."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / "s3.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url,
           "AWS_EC2_METADATA_DISABLED": "true"}
    service = Service("s3 (moto)", url, proc, log, env)
    _wait_http(service, "/moto-api/", timeout)
    return service


def create_bucket(s3: Service, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1",
                 aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)


def start_mlflow(workdir: str | os.PathLike, s3_env: dict[str, str], bucket: str, port: int = 0,
                 timeout: float = 90) -> Service:
    """``mlflow server`` with a SQLite backend store in ``workdir`` and artifacts proxied to
    ``s3://bucket/mlartifacts`` on the endpoint of ``s3_env`` (a :func:`start_s3` service's
    ``env``); clients need no S3 credentials."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {**os.environ, **s3_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = workdir / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{workdir.resolve()}/mlflow.db",
             "--artifacts-destination", f"s3://{bucket}/mlartifacts", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    service = Service("mlflow server", f"http://127.0.0.1:{port}", proc, log, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    _wait_http(service, "/health", timeout)  # ~20-30 s on 2 busy cores (imports, DB migrations)
    return service


def up(directory: str | os.PathLike, bucket: str = "dynvid") -> dict:
    directory = Path(directory)
    state_path = directory / "stack.json"
    if state_path.exists():
        raise SystemExit(f"a stack is already recorded in {state_path}: run `down` first")
    s3 = start_s3(directory)
    try:
        create_bucket(s3, bucket)
        mlflow = start_mlflow(directory, s3.env, bucket)
    except BaseException:
        s3.stop()
        raise
    env = {**s3.env, **mlflow.env}
    state = {"s3": {"url": s3.url, "pid": s3.pid}, "mlflow": {"url": mlflow.url, "pid": mlflow.pid},
             "bucket": bucket, "env": env}
    state_path.write_text(json.dumps(state, indent=2))
    (directory / "env.sh").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    return state


def down(directory: str | os.PathLike) -> list[str]:
    state_path = Path(directory) / "stack.json"
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    for name in ("mlflow", "s3"):
        stop_pid(state[name]["pid"])
        stopped.append(f"{name} (pid {state[name]['pid']})")
    state_path.unlink()
    (Path(directory) / "env.sh").unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the local S3 endpoint + MLflow server stack")
    p.add_argument("command", choices=["up", "down"])
    p.add_argument("--dir", default=".localstack", help="where logs, the SQLite store and stack.json go")
    p.add_argument("--bucket", default="dynvid", help="bucket created for artifacts, datasets and checkpoints")
    args = p.parse_args(argv)
    if args.command == "up":
        state = up(args.dir, args.bucket)
        print(f"[stack] S3 endpoint {state['s3']['url']} (bucket {state['bucket']}), "
              f"MLflow {state['mlflow']['url']}; stop with: python infra/local/stack.py down --dir {args.dir}")
        print(f"[stack] export the env: source {Path(args.dir) / 'env.sh'}")
    else:
        stopped = down(args.dir)
        print(f"[stack] stopped {', '.join(stopped)}" if stopped else f"[stack] nothing recorded in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
