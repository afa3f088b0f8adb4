"""A local Ray instance's workers reach its own State API, whatever else is on the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_workers_reach_this_instances_state_api_beside_a_stale_ray_start_file(ray_cluster, tmp_path):
    """Ray Train's placement-group cleaner calls the State API from a worker. Left to look the
    API up itself, a worker reads ``ray_current_cluster`` in Ray's temp folder — here it names
    a head that no longer runs, as a crashed ``ray start`` leaves it — and every call times out
    (CI hung that way: a sweep trial stopped by ASHA kept its CPUs). ``local_ray_options``
    tells the workers where this instance's dashboard is."""
    import ray

    @ray.remote(num_cpus=0)
    def state_api(stale_dir: str):
        from pathlib import Path

        import ray._common.utils as ray_utils
        from ray.dashboard.utils import get_address_for_submission_client
        from ray.util.state import list_nodes

        (Path(stale_dir) / "ray_current_cluster").write_text("192.0.2.254:6379")
        default_temp_dir = ray_utils.get_default_ray_temp_dir
        ray_utils.get_default_ray_temp_dir = lambda: stale_dir
        try:
            return get_address_for_submission_client(None), len(list_nodes(timeout=30))
        finally:
            ray_utils.get_default_ray_temp_dir = default_temp_dir

    url, nodes = ray.get(state_api.remote(str(tmp_path)), timeout=120)
    assert url == f"http://{ray_cluster.dashboard_url}"
    assert nodes == 1


def test_a_job_outside_a_cluster_starts_locally_when_the_recorded_head_is_gone(tmp_path):
    """``ray.init()`` joins the head the last ``ray start`` recorded, and waits forever when
    that head no longer runs (a machine rebooted or a ``make run`` aborted). ``init_ray``
    checks that it answers and otherwise starts a local instance, saying so."""
    import shutil
    import subprocess
    import sys
    import tempfile

    import stack  # infra/local/stack.py: a free port nobody listens on

    ray_tmp = Path(tempfile.mkdtemp(prefix="dvr", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{stack.free_port()}")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
        code = ("from dynvid.engine.trainer import init_ray; init_ray(); import ray; "
                "print('cpus', ray.cluster_resources()['CPU']); ray.shutdown()")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "does not answer: starting a local Ray instance" in proc.stdout
    assert "cpus" in proc.stdout
