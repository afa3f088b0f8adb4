"""Engine fixtures: a real S3 endpoint over HTTP on 127.0.0.1 (moto's standalone server) and a
real ``mlflow server``, both started by the local stack of ``infra/local/stack.py`` (the same
code a developer runs with ``python infra/local/stack.py up``), and a local Ray instance."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynvid.config import set_arguments

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
import stack  # noqa: E402  (infra/local/stack.py)

sys.path.pop(0)

# Fake, recognisable credentials: moto accepts any; tests check they never leak into messages.
FAKE_S3_ENV = dict(stack.FAKE_CREDENTIALS)
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
    """The stack's S3 endpoint on 127.0.0.1 (a free port), with ``AWS_ENDPOINT_URL``, fake
    credentials and ``MLFLOW_S3_ENDPOINT_URL`` set in ``os.environ`` until the session ends
    (then restored), and one bucket. Stopped by its own handle."""
    service = stack.start_s3(tmp_path_factory.mktemp("s3"))
    env = {
        **service.env,
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "config"),  # absent: no profiles
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "credentials"),
    }
    saved = {name: os.environ.get(name) for name in (*env, *_CLEARED)}
    for name in _CLEARED:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        s3 = S3Server(endpoint=service.url, bucket="dynvid-test", env=env)
        stack.create_bucket(service, s3.bucket)
        yield s3
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        service.stop()


# ---- MLflow tracking server ----------------------------------------------------------------

@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """The stack's ``mlflow server`` on 127.0.0.1 (a free port): SQLite backend store in a temp
    folder, artifacts proxied to ``s3://<s3_server.bucket>/mlartifacts`` on the S3 endpoint.
    Clients need no S3 credentials. Yields the server URI; stopped by its own handle."""
    service = stack.start_mlflow(tmp_path_factory.mktemp("mlflow-server"), s3_server.env, s3_server.bucket)
    try:
        yield service.url
    finally:
        service.stop()


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
    from dynvid.engine.trainer import local_ray_options

    # the dashboard on a free port, its address in every worker's env (local_ray_options says
    # why: a stale /tmp/ray/ray_current_cluster of a dead `ray start` head once hung CI)
    ctx = ray.init(num_cpus=2, log_to_driver=True, _temp_dir=str(tmp_path_factory.mktemp("ray")),
                   **local_ray_options(credential_env()))
    yield ctx
    ray.shutdown()


# ---- the main job, once per session --------------------------------------------------------

@pytest.fixture(scope="session")
def vared_main_job(ray_cluster, mlflow_server, tmp_path_factory):
    """The main job (``jobs/vared_kinetics.py --smoke-test``) at the engine tests' tiny size
    (``test_trainer.TINY``), tracked on the ``mlflow_server`` and registered: VA-RED²'s three
    Ray Train stages, the report, the registry. The job's own test checks it
    (``test_trainer.py``); the benchmark's test points ``bench_vared`` at its storage, where the
    same experiment's VA-RED² stages are found done (``test_vared_bench.py``). No
    ``train.name``: the run name is derived from the run's identity, as the benchmark's is.
    Returns the job's ``--out`` JSON and its ``train.storage_path``."""
    import json

    import vared_kinetics  # jobs/ is on pytest's pythonpath
    from test_trainer import TINY

    root = tmp_path_factory.mktemp("vared-main-job")
    out = root / "result.json"
    args = ["--smoke-test", "--out", str(out), "--set", f"train.storage_path={root}/runs", *set_arguments(TINY),
            "--tracking-uri", mlflow_server]
    assert vared_kinetics.main(args) == 0
    return json.loads(out.read_text()), f"{root}/runs"


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
