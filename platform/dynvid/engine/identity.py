"""Run identity: what makes a rerun the same experiment, so that resuming it is safe.

A run's stages resume by name (``{storage}/{run}-{stage}``, Ray Train's rule: the same
``RunConfig(name, storage_path)`` continues from the last checkpoint). So that a name means one
experiment, the engine computes the run's identity on the driver before Ray starts:

- ``method``;
- ``config``: the whole config except the settings of ``dynvid.config.NOT_IN_RUN_IDENTITY``
  (where results go, printing, retention, CPUs, ``optim.epochs``);
- ``dataset``: the spec with its local path made absolute (``kinetics:/abs/k400``; an
  ``s3://`` URI without its trailing slash) and, for a local folder, the SHA-256 of each
  annotation file of the train and val splits and of ``classes.txt`` (:func:`dataset_identity`).
  An S3 dataset is identified by its URI alone: the driver does not download it;
- ``init_from``: the checkpoint the first stage starts from.

A derived run name ends with ``_h`` and the first 8 hex digits of the identity's hash
(:meth:`RunIdentity.digest`), so another experiment gets another name: ``/a/k400`` and
``/b/k400``, ``s3://bucket/k400`` and ``/data/k400``, another ``optim.lr``, an edited
``train.csv``. The identity is recorded in ``{storage}/{run}/run_identity.json`` when the run
starts (:func:`claim_run`); a rerun under a name whose recorded identity differs (a
``train.name`` reused for another experiment) is refused before anything starts, naming the
settings that differ.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dynvid.config import ConfigError, ExperimentConfig, identity_config, short_digest
from dynvid.engine.storage import StorageError, download_dir, is_remote, upload_dir

__all__ = ["IDENTITY_FILE", "RunIdentity", "claim_run", "dataset_identity", "differences", "file_sha256",
           "run_identity"]

IDENTITY_FILE = "run_identity.json"
_ANNOTATION_SUFFIXES = (".csv", ".txt", ".json", ".tsv", ".lst")


@dataclass(frozen=True)
class RunIdentity:
    """What a resumed run must share with the run it continues (see the module docstring)."""

    method: str
    config: dict
    dataset: dict
    init_from: str | None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def digest(self) -> str:
        """8 hex digits of the identity's SHA-256: the ``_h…`` suffix of a derived run name."""
        return short_digest(self.as_dict())


def dataset_spec_path(spec: str) -> tuple[str, str | None]:
    """``(kind, location)`` of a dataset spec: ``kinetics:/data/k400`` -> ``("kinetics",
    "/data/k400")``, a bare path or ``s3://`` URI -> ``("kinetics", it)``, ``synthetic:actions``
    -> ``("synthetic", None)`` (generated, no location)."""
    if is_remote(spec):
        return "kinetics", spec
    kind, sep, arg = spec.partition(":")
    if not sep or "/" in kind or "\\" in kind:  # a bare path (possibly holding a ':' later on)
        return "kinetics", spec
    return kind, (None if kind == "synthetic" else arg)


def dataset_identity(cfg: ExperimentConfig, every_split: bool = False) -> dict:
    """``{"spec": ..., "annotations": {relative path: "sha256:…"}}`` of the dataset of ``cfg``
    (its spec already resolved: :func:`dynvid.engine.preflight.resolve_local_paths`).

    The annotations are the files, in the dataset folder and its ``annotations/`` folder,
    named after the train or val split (``train.csv``, ``val_list.txt``, ``train_videos.txt``,
    ``annotations/val.json``) or ``classes.txt``, hashed by content; with ``every_split`` every
    annotation file there, whatever its split (a policy's environment may read a third one,
    e.g. LFS's ``lfs.policy_split``). Synthetic data is identified by its spec (its settings
    are in the config), an S3 dataset by its URI."""
    spec = cfg.data.dataset
    _, location = dataset_spec_path(spec)
    if location is None or is_remote(location):
        return {"spec": spec}
    root = Path(location)
    splits = (cfg.data.train_split, cfg.data.val_split)
    files = {}
    for folder in (root, root / "annotations"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and (_is_annotation(path.name, splits) or
                                   (every_split and path.suffix in _ANNOTATION_SUFFIXES)):
                files[path.relative_to(root).as_posix()] = f"sha256:{file_sha256(path)}"
    return {"spec": spec, "annotations": files}


def _is_annotation(name: str, splits: tuple[str, ...]) -> bool:
    if name == "classes.txt":
        return True
    stem, suffix = os.path.splitext(name)
    return suffix in _ANNOTATION_SUFFIXES and any(stem == s or stem.startswith(f"{s}_") for s in splits)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, in hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_identity(cfg: ExperimentConfig, method: str, init_from: str | None = None) -> RunIdentity:
    """The identity of running ``method`` on ``cfg`` from ``init_from`` (paths already absolute)."""
    return RunIdentity(method=method, config=identity_config(cfg), dataset=dataset_identity(cfg),
                       init_from=init_from)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(recorded: dict, current: dict) -> list[str]:
    """``key: recorded -> current`` for each leaf that differs between two identities
    (``config.optim.lr: 0.1 -> 0.2``; a key one side lacks shows as ``(absent)``)."""
    a, b = _flatten(json.loads(json.dumps(recorded, default=str))), _flatten(json.loads(json.dumps(current, default=str)))
    out = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, "(absent)"), b.get(key, "(absent)")
        if before != after:
            out.append(f"{key}: {before} -> {after}")
    return out


def _read_record(folder: str) -> dict | None:
    """The JSON in ``folder/run_identity.json`` (local or ``s3://``), or None when absent."""
    if not is_remote(folder):
        path = Path(folder) / IDENTITY_FILE
        return json.loads(path.read_text()) if path.is_file() else None
    with tempfile.TemporaryDirectory(prefix="dynvid-identity-") as tmp:
        try:
            download_dir(folder, tmp)
        except StorageError as exc:
            if str(exc).startswith("nothing to download"):
                return None
            raise
        path = Path(tmp) / IDENTITY_FILE
        return json.loads(path.read_text()) if path.is_file() else None


def _write_record(folder: str, record: dict) -> None:
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    with tempfile.TemporaryDirectory(prefix="dynvid-identity-") as tmp:
        (Path(tmp) / IDENTITY_FILE).write_text(text)
        upload_dir(tmp, folder)  # whole-object writes, local or S3


def claim_run(storage_path: str, run_name: str, identity: RunIdentity, git: dict | None = None) -> str:
    """Record ``identity`` for ``run_name`` under ``storage_path``, or check it against the
    one recorded by an earlier start; returns the record's location.

    Raises ConfigError when the recorded identity differs: resuming would continue another
    experiment's checkpoints. The message names the differing settings and the two ways on:
    another ``train.name``, or deleting the record to resume anyway (e.g. after an upgrade of
    dynvid that added a config field)."""
    folder = f"{storage_path.rstrip('/')}/{run_name}"
    location = f"{folder}/{IDENTITY_FILE}"
    record = _read_record(folder)
    current = identity.as_dict()
    if record is None:
        _write_record(folder, {"run_name": run_name, "digest": identity.digest, "identity": current,
                               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               **(git or {})})
        return location
    changed = differences(record.get("identity", {}), current)
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(f"run {run_name!r} in {storage_path} was started as another experiment ({shown}): "
                          f"resuming it would mix the two; give this one another train.name, or delete "
                          f"{location} to resume it anyway")
    return location
