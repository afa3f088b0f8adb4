"""Shared fixtures. Real components only: one local Ray cluster per test session."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray instance (2 CPUs), started once and shut down by its own handle."""
    import ray

    from dynvid.engine.trainer import WORKER_ENV

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, runtime_env={"env_vars": WORKER_ENV},
                   _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ctx
    ray.shutdown()
