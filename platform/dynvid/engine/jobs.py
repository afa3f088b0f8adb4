"""What the training jobs (``jobs/*.py``) share: their common arguments, the run → print →
JSON flow around :func:`dynvid.engine.trainer.fit`, and the rule for bad input
(:func:`exit_on_bad_input`), so each job keeps only its own options and configuration
(STYLE.md: thin entry points)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides
from dynvid.data.errors import DatasetError
from dynvid.engine.storage import StorageError
from dynvid.engine.tracking import TrackingError
from dynvid.task import task_class

__all__ = ["BAD_INPUT", "bench_config", "bench_parser", "exit_on_bad_input", "print_targets", "build_job_config",
           "final_metrics_line", "job_parser", "run_training_job"]

#: What a job reports as one line and exit status 2 rather than a traceback: a config key or
#: value, a dataset file or folder, a storage location, a tracking store. ``fit`` finds these
#: on the driver before Ray starts (:mod:`dynvid.engine.preflight`). ValueError covers the rest
#: of the argument checks (an unknown method, backbone or stage).
BAD_INPUT: tuple[type[Exception], ...] = (ConfigError, DatasetError, StorageError, TrackingError, ValueError)


def exit_on_bad_input(prog: str, body: Callable[[], int]) -> int:
    """``body()``, its exit status; a ``BAD_INPUT`` error becomes ``prog: error: message`` on one
    line of stderr and exit status 2."""
    try:
        return body()
    except BAD_INPUT as exc:
        message = re.sub(r"\s*\n\s*", " ", str(exc).strip())  # one line, even for a multi-line message
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def job_parser(description: str, section: str, example: str, data_help: str) -> argparse.ArgumentParser:
    """The arguments every training job takes: ``--config``, ``--set``, ``--data``,
    ``--num-workers``, ``--init-from``, ``--tracking-uri``, ``--smoke-test``, ``--out``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help=f"YAML config file (sections: data, model, optim, train, {section})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field, e.g. --set {example} (repeatable)")
    p.add_argument("--data", metavar="SPEC", help=data_help)
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--init-from", metavar="URI",
                   help="start the first stage from this checkpoint (a directory or s3://…)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: sqlite:///runs/mlflow.db; http://host:5000 for a server)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the job end to end")
    p.add_argument("--out", help="write the final metrics and report as JSON to this file")
    return p


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every training benchmark takes: ``--smoke-test``, ``--out``, ``--set``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the benchmark end to end")
    p.add_argument("--out", help="write the JSON result ({benchmark, config, results, targets}) here")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable); e.g. the job's train.storage_path to reuse the "
                        "stages it trained with the same settings (same run identity)")
    return p


def bench_run_config(args: argparse.Namespace) -> dict:
    """What a benchmark's JSON ``config`` records of its :func:`bench_parser` arguments:
    ``smoke_test`` and ``overrides`` (the ``--set`` list as given), so that a result says which
    budget and settings produced it (issue 23: a fades run's JSON did not say ``fades=2``)."""
    return {"smoke_test": args.smoke_test, "overrides": list(args.overrides)}


def bench_config(presets: list[str], smoke: list[str], args: argparse.Namespace, storage_path: str) -> ExperimentConfig:
    """A benchmark's config: ``presets``, ``smoke`` under ``--smoke-test``, storage under
    ``storage_path`` (a temporary folder), then the ``--set`` overrides (which may point the
    storage at a finished job's, whose stages are then found done when the job ran the same
    experiment: its run name hashes the run's identity, see :mod:`dynvid.engine.identity`)."""

    base = list(presets) + (list(smoke) if args.smoke_test else []) + [f"train.storage_path={storage_path}"]
    return apply_overrides(ExperimentConfig(), base + args.overrides)


def print_targets(targets: list[dict]) -> None:
    """One line per benchmark target of the JSON's ``targets``: value, bound and met / MISSED,
    then the target's ``note`` where it has one (e.g. what the value does not say)."""
    for t in targets:
        print(f"  {t['name']}: {t['value']:.4f} (target {'>=' if t['direction'] == 'max' else '<='} {t['target']}) "
              f"-> {'met' if t['met'] else 'MISSED'}")
        if t.get("note"):
            print(f"    {t['note']}")


def final_metrics_line(method: str, metrics: dict) -> str:
    """The last stage's quality metrics as the method's Task names them in its results table
    (``Task.summary_columns``), GFLOPs per sample and, for a classifier, chance level."""
    parts = [f"{label} {fmt.format(metrics[key])}" for label, key, fmt in task_class(method).summary_columns
             if isinstance(metrics.get(key), (int, float))]
    if isinstance(metrics.get("val_gflops_avg"), (int, float)):
        parts.append(f"GFLOPs {metrics['val_gflops_avg']:.3f}")
    if metrics.get("num_classes") and "val_clip_top1" in metrics:
        parts.append(f"chance {1.0 / metrics['num_classes']:.4f}")
    return ", ".join(parts) or "none reported"


def build_job_config(job_config: Callable[..., ExperimentConfig], args: argparse.Namespace,
                     extra: list[str] = ()) -> ExperimentConfig:
    """The config from a method's ``presets.job_config``, the common arguments and the job's
    ``extra`` overrides (below the YAML file and ``--set``)."""
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    return job_config(args.data, args.smoke_test, args.config, overrides,
                      [f"train.num_workers={args.num_workers}", *extra])


def run_training_job(prog: str, method: str, job_config: Callable[..., ExperimentConfig],
                     args: argparse.Namespace, extra: list[str] = ()) -> int:
    """Build the config (:func:`build_job_config`, with the job's own ``extra`` overrides),
    train every stage of ``method`` (the first from ``--init-from`` when given), print where
    everything went and write ``--out``. Bad input (config, dataset, storage, tracking) is one
    line on stderr, exit 2 (:func:`exit_on_bad_input`), found before Ray starts.

    ``--out`` holds ``run_name``, ``metrics`` (the last stage's), ``registered``, ``report``
    (the method's, without its printed table), ``stages`` (metrics by stage) and
    ``checkpoints`` (path by stage): the same keys for every job."""
    return exit_on_bad_input(prog, lambda: _train_and_report(method, job_config, args, extra))


def _train_and_report(method: str, job_config: Callable[..., ExperimentConfig], args: argparse.Namespace,
                      extra: list[str]) -> int:
    from dynvid.engine.trainer import fit  # imports Ray

    result = fit(build_job_config(job_config, args, extra), method=method, init_from=args.init_from)
    report = result.report or {}
    print(f"\n[dynvid] run {result.run_name} finished; results under {result.storage_path}")
    print(f"[dynvid] final metrics: {final_metrics_line(method, result.metrics)}")
    for stage in result.stages:
        print(f"[dynvid] stage {stage.stage}: checkpoint {stage.checkpoint_path}")
    if result.registered:
        print(f"[dynvid] registered model: models:/{result.registered['name']}@candidate "
              f"(version {result.registered['version']})")
    if report.get("dir"):
        files = ", ".join(os.path.basename(str(a)) for a in report.get("artifacts") or [])
        print(f"[dynvid] report files{f' ({files})' if files else ''} in {report['dir']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run_name": result.run_name, "metrics": result.metrics, "registered": result.registered,
                       "report": {k: v for k, v in report.items() if k != "table"},
                       "stages": {s.stage: s.metrics for s in result.stages},
                       "checkpoints": {s.stage: s.checkpoint_path for s in result.stages}}, f, indent=2, default=str)
    return 0
