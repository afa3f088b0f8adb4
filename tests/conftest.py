"""Shared test configuration. Real components only; the Ray, S3 and MLflow fixtures live in
``tests/engine/conftest.py`` (the only tests that need them)."""
