"""Shared test configuration. Real components only; the Ray, S3 and MLflow fixtures live in
``tests/engine/conftest.py`` (the only tests that need them)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _dynvid_cache_dir(tmp_path_factory):
    """dynvid's own caches (video probe results) go to a folder of this session, never to the
    user's ~/.cache; processes the tests start (Ray workers, jobs) inherit it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("DYNVID_CACHE_DIR", str(tmp_path_factory.mktemp("dynvid-cache")))
    yield
    patch.undo()
