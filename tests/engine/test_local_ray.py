"""A local Ray instance's workers reach its own State API, whatever else is on the machine."""

from __future__ import annotations

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
