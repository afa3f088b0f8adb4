"""Shared test configuration. Real components only; the Ray, S3 and MLflow fixtures live in
``tests/engine/conftest.py`` (the only tests that need them); here, what every test process
and the processes it starts inherit (a cache folder, two Ray Train settings)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _dynvid_cache_dir(tmp_path_factory):
    """dynvid's own caches (video probe results) go to a folder of this session, never to the
    user's ~/.cache; processes the tests start (Ray workers, jobs) inherit it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("DYNVID_CACHE_DIR", str(tmp_path_factory.mktemp("dynvid-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def _ray_train_test_settings():
    """Two Ray Train settings that only cost the tests time (Ray instances the tests start,
    fixtures and job subprocesses, inherit them; a value already in the environment is kept):

    - the controller polls its workers every 0.5 s, not every 2 s: each run ended up to 2 s
      after its last report (tests/engine/test_trainer.py: 145 -> 130 s);
    - no preemption watcher: an extra actor process per run that watches for nodes being
      drained by a cloud provider, which a local test cluster never is (test_trainer.py
      120 -> 114 s)."""
    patch = pytest.MonkeyPatch()
    for name, value in (("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"), ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")):
        patch.setenv(name, os.environ.get(name, value))
    yield
    patch.undo()


#: fixtures that start real servers or a Ray instance (tests/engine/conftest.py): a test that uses
#: one, directly or through another fixture, is an integration test
SERVER_FIXTURES = frozenset({"ray_cluster", "s3_server", "mlflow_server"})


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a server fixture ``integration``, so that the fast tier
    (``-m "not slow and not integration"``) leaves out what starts Ray, S3 or MLflow without
    each module having to say so."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
