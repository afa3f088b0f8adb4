"""Ray job: run a sweep of ``search_spaces/`` and report its accuracy–efficiency Pareto front.

    ray job submit --working-dir . -- python jobs/sweep.py search_spaces/vared.yaml \\
        [--set key=value ...] [--storage-path s3://bucket/runs] [--tracking-uri http://mlflow:5000] [--smoke-test]

Joins the cluster the job runs on (or starts a local Ray), runs the trials with Ray Tune
(training sweeps drive a Ray Train run per trial; inference sweeps evaluate one checkpoint
per knob setting), prints the front, and writes the report (PNG, interactive HTML, JSON,
CSV) to ``<storage>/sweeps/<name>/report`` and to the sweep's MLflow run. See
``dynvid.engine.sweep`` and the README's "Sweeps" section.
"""

from __future__ import annotations

import sys

from dynvid.cli import main as dynvid_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]) or not argv:
        print(__doc__)
        return 0 if argv else 2
    return dynvid_main(["sweep", "run", *argv])


if __name__ == "__main__":
    sys.exit(main())
