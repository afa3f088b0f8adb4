"""Engine fixtures: a real S3 endpoint over HTTP on 127.0.0.1 (moto's standalone server)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

# Fake, recognisable credentials: moto accepts any; tests check they never leak into messages.
FAKE_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id-123",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-456",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would let the developer's own AWS setup leak into the tests.
_CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE")


@dataclass
class S3Server:
    endpoint: str
    """``http://127.0.0.1:PORT``"""
    bucket: str
    """An existing bucket; tests write under their own prefixes."""
    env: dict[str, str] = field(default_factory=dict)
    """The variables set in ``os.environ`` for the session (endpoint, fake credentials);
    pass them to subprocesses (an ``mlflow server``) or Ray workers."""

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a free port), with ``AWS_ENDPOINT_URL``, fake
    credentials and ``MLFLOW_S3_ENDPOINT_URL`` set in ``os.environ`` until the session ends
    (then restored), and one bucket. Stopped by its own handle."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free one
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        **FAKE_S3_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "config"),  # absent: no profiles
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "credentials"),
    }
    saved = {name: os.environ.get(name) for name in (*env, *_CLEARED)}
    for name in _CLEARED:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        s3 = S3Server(endpoint=endpoint, bucket="dynvid-test", env=env)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


# ---- MLflow tracking server ----------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_process_group(proc) -> None:
    """Stop a server started with ``start_new_session=True`` by its own handle: SIGTERM
    (``mlflow server`` forwards it to its uvicorn child), then SIGKILL to the group."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture created; leftovers only
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (a free port): SQLite backend store in a temp
    folder, artifacts proxied to ``s3://<s3_server.bucket>/mlartifacts`` on the moto server.
    Clients need no S3 credentials. Yields the server URI; stopped by its own handle."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, **s3_server.env,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner process: faster start, one child
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", f"s3://{s3_server.bucket}/mlartifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90  # ~20-30 s on 2 busy cores (imports, DB migrations)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n"
                                   + (root / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health in 90 s:\n"
                                   + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        _stop_process_group(proc)
        log.close()


# ---- Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """A local Ray instance (2 CPUs), started once per session and shut down by its own handle.
    Its workers get the S3 endpoint and (fake) credentials through the runtime env, as the
    engine's ``init_ray`` does for a real run.

    The dashboard runs, as on a real head node: Ray Train's placement-group cleaner asks the
    State API (served by the dashboard) whether a controller died, and a sweep trial that
    ASHA stops kills its controller; without it that trial's CPUs would stay reserved."""
    import ray

    from dynvid.engine.storage import credential_env
    from dynvid.engine.trainer import WORKER_ENV

    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=_free_port(),
                   log_to_driver=True,
                   runtime_env={"env_vars": {**WORKER_ENV, **credential_env()}},
                   _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ctx
    ray.shutdown()


# ---- headless Chromium ------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@dataclass
class Chromium:
    binary: str
    profile: str

    def run(self, *args: str, timeout: float = 120) -> str:
        import subprocess

        out = subprocess.run([self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", *args],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"chromium {' '.join(args)} exited {out.returncode}:\n{out.stderr[-2000:]}")
        return out.stdout


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Debian's headless Chromium; installed with apt-get when missing (CI machines start
    without it). Skips, saying why, only when it cannot be installed."""
    import shutil
    import subprocess

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("chromium is not installed and apt-get is not usable here (not root or not Debian)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:  # stale package lists: refresh once
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        binary = shutil.which("chromium")
        if binary is None:
            pytest.skip(f"chromium could not be installed with apt-get: {done.stderr.strip()[-500:]}")
    return Chromium(binary, str(tmp_path_factory.mktemp("chromium-profile")))
