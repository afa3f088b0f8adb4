"""What the driver checks and settles before Ray starts anything.

Bad input fails in seconds, as one line naming the file, line, key or URI (DESIGN.md: "bad
input gets a clear error and loses nothing"), instead of as a worker's traceback once the
cluster is up. :func:`prepare_run`, the first step of :func:`dynvid.engine.trainer.fit`:

1. :func:`resolve_local_paths`: local paths that workers read become absolute (the dataset
   folder, ``train.storage_path``, the start checkpoint, ``liteeval.feature_cache``,
   ``lfs.policy``): a Ray worker runs in another working directory, where ``kinetics:k400``
   names nothing.
2. :func:`dynvid.config.check_ranges`: value ranges (``data.max_bad_fraction`` in [0, 1],
   positive batch sizes and epochs, known choices).
3. The storage path is writable, the tracking URI answers, the start checkpoint exists.
4. :func:`check_datasets`: the datasets of the method's first stage are built once, exactly
   as a worker builds them (the Task's ``datasets`` hook, else the engine's clip datasets):
   a missing folder, a bad annotation line, an empty split, too many bad files fail here.
   For a Kinetics folder this reads the annotation files and indexes the videos. An
   ``s3://`` dataset is mirrored by the workers, not the driver: only its URI's form, the
   endpoint and the bucket are checked (with ``data.ingest=ray_data`` the driver mirrors it
   anyway, and the mirror is checked in full).
5. The run's identity and name (:mod:`dynvid.engine.identity`), checked against the
   identity an earlier start of the same name recorded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from dynvid.backbones.pretrained import check_pretrained, is_weights_name
from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, check_ranges
from dynvid.data.datasets import build_clip_dataset
from dynvid.data.errors import DatasetError
from dynvid.engine import tracking
from dynvid.engine.identity import RunIdentity, claim_run, dataset_spec_path, run_identity
from dynvid.engine.ingest import localize_dataset, remote_dataset_uri
from dynvid.engine.storage import check_storage, fetch_checkpoint, is_remote
from dynvid.engine.task import Stage, Task, get_task

__all__ = ["PreparedRun", "check_datasets", "check_inputs", "prepare_run", "resolve_local_paths", "stage_datasets"]


@dataclass
class PreparedRun:
    """A run that passed every driver-side check (see the module docstring)."""

    cfg: ExperimentConfig
    """The config with absolute local paths."""
    task: Task
    stages: list[Stage]
    """The stages to run, in the method's order."""
    init_from: str | None
    """The first stage's start checkpoint, absolute when local."""
    run_name: str
    identity: RunIdentity
    tracking_uri: str | None
    """The resolved MLflow tracking URI (None: no tracking)."""


def _absolute(path: str) -> str:
    """A local path made absolute (``~`` expanded, trailing slash dropped); an ``s3://`` URI
    without its trailing slash; another URI (``models:/…``, ``http://…``) unchanged."""
    if is_remote(path):
        return path.rstrip("/")
    if "://" in path or path.startswith("models:/"):
        return path
    return os.path.abspath(os.path.expanduser(path))


def _absolute_spec(spec: str) -> str:
    kind, location = dataset_spec_path(spec)
    if location is None:  # generated data (synthetic:…)
        return spec
    return _absolute(location) if location == spec else f"{kind}:{_absolute(location)}"


def resolve_local_paths(cfg: ExperimentConfig, init_from: str | None = None) -> tuple[ExperimentConfig, str | None]:
    """``cfg`` and ``init_from`` with every local path a worker reads made absolute, relative
    to this process's working directory: ``kinetics:k400`` -> ``kinetics:/cwd/k400``,
    ``train.storage_path``, ``liteeval.feature_cache``, ``lfs.policy``, the pretrained-weights
    files (a torchvision weights name stays as it is). S3 URIs lose a trailing
    slash. The MLflow tracking URI is resolved by ``tracking.resolve_tracking_uri``."""
    out = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, dataset=_absolute_spec(cfg.data.dataset)),
        train=dataclasses.replace(cfg.train, storage_path=_absolute(cfg.train.storage_path)),
        liteeval=dataclasses.replace(cfg.liteeval, feature_cache=cfg.liteeval.feature_cache
                                     and _absolute(cfg.liteeval.feature_cache)),
        lfs=dataclasses.replace(cfg.lfs, policy=cfg.lfs.policy and _absolute(cfg.lfs.policy)),
    )
    local = [f"{key}={_absolute(spec)}" for key, spec in pretrained_settings(out).items()
             if not is_weights_name(spec) and not is_remote(spec)]
    return (apply_overrides(out, local) if local else out), (init_from and _absolute(init_from))


def pretrained_settings(cfg: ExperimentConfig) -> dict[str, str]:
    """Every pretrained-weights setting that is set, in any section (by the naming rule: a
    field whose name ends in ``pretrained``): ``{"lfs.f0_pretrained": "..."}``."""
    return {f"{section.name}.{f.name}": value
            for section in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, section.name))
            if f.name.endswith("pretrained") and (value := getattr(getattr(cfg, section.name), f.name))}


def stage_datasets(task: Task, cfg: ExperimentConfig, stage: Stage) -> tuple:
    """``(train, val, own)`` of ``stage``, built as every worker builds them (the worker loop
    calls this too, so the driver's check cannot drift from it): the Task's own datasets (its
    ``datasets`` hook; ``own`` True), else the engine's clip datasets of ``data.train_split`` /
    ``data.val_split``."""
    own = task.datasets(cfg, stage)
    if own is not None:
        return (*own, True)

    d = cfg.data
    return (build_clip_dataset(d, d.train_split, "train", seed=cfg.train.seed),
            build_clip_dataset(d, d.val_split, "val", seed=cfg.train.seed), False)


def check_datasets(task: Task, cfg: ExperimentConfig) -> None:
    """Build the datasets of the method's first stage on the driver (see the module docstring);
    raises DatasetError (a file, line or path), ConfigError (not one batch per epoch) or
    StorageError (an S3 dataset's bucket or endpoint)."""

    uri = remote_dataset_uri(cfg.data)
    if uri is not None and cfg.data.ingest != "ray_data":
        check_storage(uri)  # the form of the URI, the endpoint, the bucket; the workers mirror it
        return
    stage = task.stages[0]
    stage_cfg = stage.config(dataclasses.replace(cfg, data=localize_dataset(cfg.data)))
    try:
        train, _, _ = stage_datasets(task, stage_cfg, stage)
    except OSError as exc:  # an unreadable annotation file or folder: name it, as DatasetErrors do
        raise DatasetError(f"{exc.filename or cfg.data.dataset}: {exc.strerror or exc}") from None
    d = stage_cfg.data
    if len(train) < d.batch_size * cfg.train.num_workers:
        raise ConfigError(f"data.batch_size={d.batch_size} × train.num_workers={cfg.train.num_workers} is more than "
                          f"the {len(train)} training items of {cfg.data.dataset} (split {d.train_split!r}): "
                          "not one full batch per epoch")


def check_pretrained_weights(task, cfg: ExperimentConfig) -> None:
    """Every pretrained weights setting of the Task (``Task.pretrained_specs``) can be loaded:
    cached, downloadable or an existing file (``dynvid.backbones.pretrained.check_pretrained``)."""
    used = task.pretrained_specs(cfg)
    unused = sorted(set(pretrained_settings(cfg)) - set(used))
    if unused:  # a setting the method never reads would train from scratch without a word
        raise ConfigError(f"{', '.join(unused)}: method {task.name!r} does not load these pretrained weights; "
                          f"its settings: {', '.join(sorted(task.pretrained_keys)) or 'none'}")
    for key, spec in used.items():
        if is_remote(spec):
            fetch_checkpoint(spec)  # a missing or incomplete checkpoint fails here, not in a worker
        else:
            check_pretrained(spec, key)


def check_inputs(cfg: ExperimentConfig, method: str, init_from: str | None = None
                 ) -> tuple[ExperimentConfig, str | None]:
    """The checks of :func:`prepare_run` that concern the input (paths made absolute, value
    ranges, the start checkpoint, the datasets), for drivers that start Ray without ``fit``:
    a sweep before its trials, the policy job before RLlib. Returns ``cfg`` and ``init_from``
    with absolute local paths."""
    cfg, init_from = resolve_local_paths(cfg, init_from)
    check_ranges(cfg)
    if init_from:
        fetch_checkpoint(init_from)
    task = get_task(method, cfg)
    check_pretrained_weights(task, cfg)
    check_datasets(task, cfg)
    return cfg, init_from


def prepare_run(cfg: ExperimentConfig, method: str, init_from: str | None = None,
                stages: list[str] | None = None) -> PreparedRun:
    """Every driver-side check and the run's name, before Ray starts (see the module
    docstring). Raises ConfigError, DatasetError, StorageError or TrackingError, each one
    line naming what to fix; writes nothing but the run's identity record."""
    cfg, init_from = resolve_local_paths(cfg, init_from)
    check_ranges(cfg)
    task = get_task(method, cfg)
    run_stages = list(task.stages)
    if stages is not None:
        valid = [s.name for s in task.stages]
        unknown = [s for s in stages if s not in valid]
        if unknown or not stages:
            raise ConfigError(f"stages {stages!r}: {method} has stages {', '.join(valid)}")
        run_stages = [s for s in task.stages if s.name in stages]
    check_storage(cfg.train.storage_path)
    uri = cfg.train.mlflow_tracking_uri
    if uri:
        uri = tracking.resolve_tracking_uri(uri)
        tracking.check_tracking_uri(uri)
    if init_from:
        fetch_checkpoint(init_from)  # a missing or incomplete checkpoint fails here, not in a worker
    check_pretrained_weights(task, cfg)
    check_datasets(task, cfg)
    identity = run_identity(cfg, method, init_from)
    run_name = cfg.run_name(method, identity.digest, label=task.run_label(cfg))
    claim_run(cfg.train.storage_path, run_name, identity, tracking.git_info())
    return PreparedRun(cfg, task, run_stages, init_from, run_name, identity, uri)
