"""Shared test configuration. Real components only; the Ray, S3 and MLflow fixtures live in
``tests/engine/conftest.py`` (the only tests that need them)."""

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
def _ray_train_poll_interval():
    """Ray Train's controller polls its workers every 2 s by default, so every run it starts
    lasts up to 2 s past its last report (the suite starts about a hundred). The tests poll
    every 0.5 s; Ray instances they start (fixtures, job subprocesses) inherit it. A value
    already in the environment is kept."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"))
    yield
    patch.undo()
