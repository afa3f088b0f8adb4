"""MLflow model registry: the final model of a job, its model card, aliases.

A job's final model is logged with ``mlflow.pytorch.log_model`` under the job's parent run
and registered as a new version of ``{method}-{backbone}-{dataset}`` (e.g.
``static-r2plus1d_18-synthetic-actions``), with the alias ``candidate``, tags (method,
backbone, dataset, gflops, accuracy, git commit and dirty flag) and a model card
(``README.md`` next to the model files, ``model_card.md`` in the run, and the version's
description).

Aliases, not the deprecated stages, mark what is deployed: ``dynvid models promote NAME
VERSION --alias production`` moves the alias. Load a version back with
``mlflow.pytorch.load_model("models:/NAME@candidate")`` (or :func:`load_registered`).

The model is saved in MLflow's ``pickle`` format, not the default ``pt2``
(``torch.export``): dynamic networks branch on their input (gates, skipped frames, chosen
widths), which a single exported graph would freeze, and ``pickle`` loads the original
``nn.Module`` with its gates and cost hooks. Loading it needs ``dynvid`` importable.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

import dynvid
from dynvid.engine.tracking import (
    TrackingError,
    check_tracking_uri,
    flatten,
    git_info,
    mlflow_client,
    redact_uri,
    scrub_params,
    scrub_text,
    sqlite_db_path,
    use_tracking_uri,
)

__all__ = [
    "RegistryError",
    "list_models",
    "load_registered",
    "load_registered_with_config",
    "log_and_register",
    "model_card",
    "promote",
    "registered_name",
]

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DESCRIPTION_LIMIT = 5000
BUILD_INFO = "dynvid_model.json"


class RegistryError(ValueError):
    """A registered model, version or alias is absent or invalid; names it."""


def registered_name(method: str, backbone: str, dataset: str) -> str:
    """``static``, ``r2plus1d_18``, ``synthetic:actions`` -> ``static-r2plus1d_18-synthetic-actions``.

    A dataset spec keeps its kind and last path part (``kinetics:/data/k400`` ->
    ``kinetics-k400``, ``s3://bucket/k400`` -> ``s3-k400``); anything outside
    ``[a-z0-9._]`` becomes ``-``.
    """
    parts = []
    for text in (method, backbone, _dataset_slug(dataset)):
        slug = re.sub(r"[^a-z0-9._]+", "-", str(text).lower()).strip("-._")
        if slug:
            parts.append(slug)
    if len(parts) < 3:
        raise RegistryError(f"cannot derive a registered model name from method={method!r}, backbone={backbone!r}, "
                            f"dataset={dataset!r}")
    return re.sub(r"-{2,}", "-", "-".join(parts))[:255]


def _dataset_slug(dataset: str) -> str:
    kind, sep, rest = str(dataset).partition(":")
    if not sep:
        return kind
    tail = [p for p in rest.split("/") if p]
    return f"{kind}-{tail[-1]}" if tail else kind


def _check_name(name: str) -> None:
    if not _NAME_OK.match(name or ""):
        raise RegistryError(f"invalid registered model name {name!r}: use letters, digits, '.', '_' and '-'")


def _check_alias(alias: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", alias or "") or alias.lower() == "latest" \
            or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(f"invalid alias {alias!r}: letters, digits, '_' and '-'; not 'latest' nor 'v<number>'")


# ---- model card ---------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: dict) -> str:
    if not rows:
        return "_none recorded_\n"
    lines = ["| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(flatten(rows).items())]
    return "\n".join(lines) + "\n"


def model_card(name: str, method: str, backbone: str, dataset: str, metrics: dict, cost: dict, config: dict) -> str:
    """A README-style markdown card: what the model is, its data, metrics, cost, the full
    (scrubbed) config and how to load it."""
    config = scrub_params(config)
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    data_lines = [f"- dataset: `{dataset}`"]
    for key in ("train_split", "val_split", "clip_len", "stride", "crop_size", "num_test_clips", "num_test_crops"):
        if key in data:
            data_lines.append(f"- {key}: `{data[key]}`")
    return scrub_text(f"""# {name}

## What
An input-adaptive video recognition model trained with dynvid: method **{method}** on a
**{backbone}** backbone. It returns logits (no softmax). Dynamic methods execute only the
path they choose per input, so the cost below is measured from what ran.

## Data
{chr(10).join(data_lines)}

## Metrics
{_table(metrics)}
## Cost
{_table(cost)}
## Config
```json
{json.dumps(config, indent=2, sort_keys=True, default=str)}
```

## How to load
Needs `dynvid` importable (the model is a pickled `nn.Module`) and the tracking URI of
the registry (`MLFLOW_TRACKING_URI`, or `sqlite:///runs/mlflow.db`).

```python
import mlflow.pytorch
model = mlflow.pytorch.load_model("models:/{name}@candidate")  # or @production, or /<version>
model.eval()
logits = model(clips)  # clips: float tensor (batch, 3, T, H, W)
```

or `dynvid.engine.registry.load_registered(uri, "{name}", alias="candidate")`;
`dynvid models list {name}` shows the versions, `dynvid models promote {name} VERSION --alias production`
moves an alias.
""")


# ---- log, register, promote, list, load ---------------------------------------------------

def _pip_requirements() -> list[str]:
    import mlflow


    # Given explicitly: MLflow's inference of requirements imports the model in a subprocess.
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"dynvid=={dynvid.__version__}"]


def log_and_register(uri: str, run_id: str, model: torch.nn.Module, input_example: torch.Tensor, name: str,
                     tags: dict, model_card: str, alias: str = "candidate", build_info: dict | None = None) -> dict:
    """Log ``model`` under run ``run_id`` and register it as a new version of ``name``.

    Args:
        uri: tracking (and registry) URI.
        run_id: the job's parent run.
        model: the final model (a DDP wrapper is unwrapped); saved in eval mode.
        input_example: a batch of inputs (stored with the model, gives its signature).
        name: registered model name, e.g. from :func:`registered_name`.
        tags: version tags (method, backbone, dataset, gflops, accuracy; ``git_commit`` and
            ``git_dirty`` of :func:`~dynvid.engine.tracking.git_info` are added when absent),
            scrubbed of secrets.
        model_card: markdown from :func:`model_card`.
        alias: set on the new version (moved from the version that had it).
        build_info: ``{"config", "method", "stage"}`` the model was built from, stored next to
            the model files as ``dynvid_model.json`` so the model can be rebuilt with other
            inference settings (an inference sweep over ``models:/…``).

    Returns:
        ``{"name", "version", "model_uri": "models:/NAME/VERSION", "logged_model_uri"}``.
    """
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    _check_name(name)
    _check_alias(alias)
    client = mlflow_client(uri)
    tags = {k: str(v) for k, v in scrub_params({**git_info(), **dict(tags)}).items()}
    card = scrub_text(model_card)
    model = getattr(model, "module", model)
    was_training = model.training
    # log_model takes no URI and files the model under the active experiment, and the
    # registry resolves the new version's models:/m-<id> source through the process-wide
    # URI: point them at ``uri`` and the run's experiment meanwhile.
    experiment_id = client.get_run(run_id).info.experiment_id
    with use_tracking_uri(uri, experiment_id):
        model.eval()
        example = input_example.detach().cpu()
        if example.dtype in (torch.bfloat16, torch.float16):  # no numpy bfloat16; the model casts
            example = example.float()
        quiet = logging.getLogger("mlflow.pytorch")  # its warning against pickle: see the module docstring
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            info = mlflow.pytorch.log_model(model, name="model", input_example=example.numpy(), run_id=run_id,
                                            serialization_format="pickle", pip_requirements=_pip_requirements())
        finally:
            quiet.setLevel(level)
            model.train(was_training)
        with tempfile.TemporaryDirectory(prefix="dynvid-card-") as tmp:
            readme = Path(tmp) / "README.md"
            readme.write_text(card)
            client.log_model_artifact(info.model_id, str(readme))  # travels with the model files
            if build_info is not None:
                info_file = Path(tmp) / BUILD_INFO
                info_file.write_text(scrub_text(json.dumps(build_info, default=str)))
                client.log_model_artifact(info.model_id, str(info_file))
            client.log_artifact(run_id, str(readme.rename(readme.with_name("model_card.md"))))
        try:
            client.create_registered_model(name, tags={k: tags[k] for k in ("method", "backbone", "dataset")
                                                       if k in tags})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        description = card if len(card) <= _DESCRIPTION_LIMIT else (
            card[: card.find("## Config")] + "\n(full card: README.md in the model's files)\n")
        version = client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=tags,
                                              description=description, model_id=info.model_id)
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "model_uri": f"models:/{name}/{version.version}",
            "logged_model_uri": info.model_uri}


def _open_registry(uri: str):
    """A client for ``uri``, failing fast (and creating nothing) when the store is absent."""
    db = sqlite_db_path(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"no MLflow database at {db} (tracking URI {uri}); train a job first or pass "
                            "--tracking-uri")
    check_tracking_uri(uri)
    return mlflow_client(uri)


def _registered_model(client, uri: str, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    known = sorted(m.name for m in client.search_registered_models(max_results=1000))
    raise RegistryError(f"no registered model {name!r} at {redact_uri(uri)} "
                        f"(registered: {', '.join(known) if known else 'none'})") from None


def _versions(client, name: str) -> list:
    quote = '"' if "'" in name else "'"
    found = client.search_model_versions(f"name = {quote}{name}{quote}")
    return sorted(found, key=lambda v: int(v.version))


def promote(uri: str, name: str, version: int | str, alias: str) -> None:
    """Point ``alias`` (e.g. ``production``) at ``version`` of ``name``; the alias leaves
    whichever version had it. Raises :class:`RegistryError` naming a missing model/version."""
    _check_alias(alias)
    client = _open_registry(uri)
    _registered_model(client, uri, name)
    versions = [str(v.version) for v in _versions(client, name)]
    if str(version) not in versions:
        raise RegistryError(f"registered model {name!r} has no version {version} "
                            f"(versions: {', '.join(versions) if versions else 'none'})")
    client.set_registered_model_alias(name, alias, str(version))


def list_models(uri: str, name: str | None = None) -> list[dict]:
    """Every version of ``name`` (or of every registered model), oldest first per model:
    ``{"name", "version", "aliases", "tags", "metrics", "run_id", "created", "status"}``;
    ``metrics`` holds the numeric tags (accuracy, gflops, ...)."""
    client = _open_registry(uri)
    if name is not None:
        names = [_registered_model(client, uri, name).name]
    else:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    rows = []
    for model_name in names:
        aliases: dict[str, list[str]] = {}
        for alias, ver in (client.get_registered_model(model_name).aliases or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
        for v in _versions(client, model_name):
            metrics = {}
            for key, value in v.tags.items():
                if key in ("git_commit", "git_dirty"):
                    continue
                try:
                    metrics[key] = float(value)
                except ValueError:
                    pass
            created = datetime.datetime.fromtimestamp(v.creation_timestamp / 1000, tz=datetime.timezone.utc)
            rows.append({"name": model_name, "version": int(v.version),
                         "aliases": sorted(aliases.get(str(v.version), [])), "tags": dict(v.tags),
                         "metrics": metrics, "run_id": v.run_id, "created": created.isoformat(timespec="seconds"),
                         "status": v.status})
    return rows


def _check_reference(client, uri: str, name: str, alias: str | None = None, version: str | None = None,
                     where: str = "") -> None:
    """Raise :class:`RegistryError` naming what is missing: the model, its alias or version
    (prefixed with ``where``, e.g. the ``models:/`` URI asked for)."""
    from mlflow.exceptions import MlflowException

    _registered_model(client, uri, name)
    try:
        if alias is not None:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        what = f"alias {alias!r}" if alias is not None else f"version {version!r}"
        raise RegistryError(f"{where}registered model {name!r} has no {what}") from None


def load_registered(uri: str, name: str, alias: str = "candidate") -> torch.nn.Module:
    """``mlflow.pytorch.load_model("models:/NAME@ALIAS")`` against ``uri`` (the original
    ``nn.Module``, in eval mode)."""
    import mlflow.pytorch

    client = _open_registry(uri)
    _check_reference(client, uri, name, alias=alias)
    with use_tracking_uri(uri):
        model = mlflow.pytorch.load_model(f"models:/{name}@{alias}", map_location="cpu")
    return model.eval()


def load_registered_with_config(uri: str, model_uri: str) -> tuple[torch.nn.Module, dict]:
    """``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) and the ``dynvid_model.json`` it was
    logged with: ``(module, {"config", "method", "stage"})``."""
    import mlflow.artifacts
    import mlflow.pytorch

    if uri is None:
        raise RegistryError(f"{model_uri}: a models:/ URI needs a tracking URI")
    client = _open_registry(uri)
    ref = model_uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = None
    else:
        name, _, version = ref.partition("/")
        alias = None
    _check_reference(client, uri, name, alias=alias, version=version, where=f"{model_uri}: ")
    with use_tracking_uri(uri), tempfile.TemporaryDirectory(prefix="dynvid-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        info_file = Path(local) / BUILD_INFO
        if not info_file.is_file():
            raise RegistryError(f"{model_uri} was registered without {BUILD_INFO} (before dynvid logged it); "
                                "evaluate its checkpoint instead (the version's 'checkpoint' tag)")
        info = json.loads(info_file.read_text())
        model = mlflow.pytorch.load_model(local, map_location="cpu")
    return model.eval(), info


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///runs/mlflow.db`` (relative to the cwd)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///runs/mlflow.db"
