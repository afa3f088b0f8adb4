"""MLflow tracking: one parent run per job (driver), one child run per stage (rank-0 worker).

Ray's Train/MLflow interop pattern, with the runs addressed by id through ``MlflowClient``
rather than the fluent active-run stack, so a driver and the workers in one process never
share hidden state:

- the driver calls :func:`check_tracking_uri` before training (an unreachable server fails
  in seconds, naming the URI), then :func:`start_job_run` for the job's parent run (full
  config as params) and :func:`finish_job_run` at the end (final metrics, cost, result
  tables, artifacts);
- the rank-0 worker of each stage opens a :class:`Tracker`, a child run tagged
  ``mlflow.parentRunId`` that gets every epoch's metrics; other ranks get a no-op tracker.

Run names are deterministic (from the config), and a run is resumed by name: rerunning a
job continues its parent run and the child run of each stage instead of opening new ones.

No credential reaches MLflow: params, tags and text artifacts go through
:func:`scrub_params` / :func:`scrub_text` (secret-looking keys, values of credential
environment variables, passwords inside URLs).

Tracking URIs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``file:``
folders and ``http(s)://host:port`` servers. Relative sqlite paths are relative to the
process's working directory, which differs between the driver and Ray workers: resolve
them once on the driver with :func:`resolve_tracking_uri`.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from dynvid.engine.storage import secret_values

__all__ = [
    "TrackingError",
    "Tracker",
    "check_tracking_uri",
    "finish_job_run",
    "flatten",
    "git_commit",
    "git_info",
    "mlflow_client",
    "redact_uri",
    "resolve_tracking_uri",
    "scrub_params",
    "scrub_text",
    "sqlite_db_path",
    "open_trial_run",
    "start_job_run",
    "start_sweep_run",
    "use_tracking_uri",
]

REDACTED = "***"

#: a key containing one of these (case-insensitive) holds a secret
SECRET_KEY_PARTS = ("secret", "password", "passwd", "token", "key_id", "access_key", "api_key", "private_key",
                    "credential")

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "dynvid.run_kind"  # "job" (parent), "stage" (child), "sweep" (a sweep's parent), "trial"

_TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ".csv", ".tsv", ".log", ".toml", ".ini", ".cfg",
                  ".html", ".py", ".sh", ".env"}
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)(?P<password>[^@/\s]+)@")
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.-]*(?:" + "|".join(SECRET_KEY_PARTS) + r")[\w.-]*\"?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,}]+)", re.IGNORECASE)


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable folder); names the URI."""


# ---- scrubbing ----------------------------------------------------------------------------

def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def is_secret_key(key: str) -> bool:
    """True for a key that names a credential (``aws_secret_access_key``, ``s3.token``, ...)."""
    lowered = str(key).lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


#: values found under secret-looking keys by :func:`scrub_params` in this process; text
#: artifacts are scrubbed of them too (a config's password echoed in a log or table)
_SEEN_SECRETS: set[str] = set()


def secret_env_values(environ: dict[str, str] | None = None) -> set[str]:
    """Values of the credential variables in the environment (``AWS_SECRET_ACCESS_KEY``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SESSION_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, ...), as
    defined once in :func:`dynvid.engine.storage.secret_values`."""

    if environ is None:
        return set(secret_values())
    return set(secret_values(environ, include_environ=False))


def scrub_text(text: str, secrets: set[str] | None = None) -> str:
    """``text`` with credential env values, secrets met in params, URL passwords and
    ``secret_key: value`` assignments replaced by ``***``."""
    secrets = _known_secrets() if secrets is None else secrets
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _SECRET_ASSIGNMENT.sub(_redact_assignment, text)


def _redact_assignment(m: re.Match) -> str:
    quote = m["value"][0] if m["value"][0] in "\"'" else ""  # keep JSON / YAML quoting valid
    return f"{m['key']}{quote}{REDACTED}{quote}"


def _known_secrets() -> set[str]:
    return secret_env_values() | _SEEN_SECRETS


def _remember_secrets(value: Any, under_secret_key: bool = False) -> None:
    """Add the strings found under secret-looking keys of ``value`` to ``_SEEN_SECRETS``."""
    if isinstance(value, dict):
        for k, v in value.items():
            _remember_secrets(v, under_secret_key or is_secret_key(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _remember_secrets(v, under_secret_key)
    elif under_secret_key and isinstance(value, str) and len(value) >= 4 and value != REDACTED:
        _SEEN_SECRETS.add(value)


def _scrub_value(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else _scrub_value(v, secrets))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v, secrets) for v in value)
    if isinstance(value, str):
        if value in secrets:
            return REDACTED
        return scrub_text(value, secrets) if value else value
    return value


def scrub_params(params: dict) -> dict:
    """A copy of ``params`` (nested or flat) safe to log: the value of every key that looks
    like a secret (containing ``secret``, ``password``, ``token``, ``key_id``,
    ``access_key``, ...) becomes ``***``, as does every value equal to (or containing) the
    value of a credential environment variable (``AWS_SECRET_ACCESS_KEY``, ...), and the
    password part of a URL (``s3://user:PASSWORD@host``). Keys are kept, so a reader sees
    that the setting was there. Empty / None secret values stay as they are.

    The values found under secret keys are remembered for the process, so text artifacts
    logged afterwards (tables, logs, a checkpoint's ``config.json``) are scrubbed of them too."""
    _remember_secrets(params)
    return _scrub_value(dict(params), _known_secrets())


def _param_str(value: Any) -> str:
    if value is None:
        text = "None"
    else:
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5990] + "…"  # MLflow's limit on a param value


def _safe_params(params: dict) -> dict[str, str]:
    return {k[:250]: _param_str(v) for k, v in scrub_params(flatten(params)).items()}


@contextlib.contextmanager
def _scrubbed_copy(path: Path) -> Iterator[Path]:
    """``path`` itself when it holds no text file; else a mirror in a temporary folder in
    which text files are scrubbed copies and other files symlinks (no copy of weights)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if not any(p.suffix.lower() in _TEXT_SUFFIXES for p in files):
        yield path
        return
    secrets = _known_secrets()
    with tempfile.TemporaryDirectory(prefix="dynvid-scrub-") as tmp:
        mirror = Path(tmp) / path.name
        for src in files:
            dst = mirror / src.relative_to(path) if path.is_dir() else mirror
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.suffix.lower() in _TEXT_SUFFIXES:
                dst.write_text(_scrub_file_text(src, secrets))
            else:
                os.symlink(src.resolve(), dst)
        yield mirror


def _scrub_file_text(path: Path, secrets: set[str]) -> str:
    text = path.read_text(errors="replace")
    if path.suffix.lower() == ".json":
        try:
            return json.dumps(_scrub_value(json.loads(text), secrets), indent=2, sort_keys=True)
        except ValueError:
            pass
    return scrub_text(text, secrets)


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user part, if any, replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", uri)


# ---- URIs ---------------------------------------------------------------------------------

def resolve_tracking_uri(uri: str) -> str:
    """Make a relative local store absolute (``sqlite:///runs/mlflow.db`` ->
    ``sqlite:////abs/cwd/runs/mlflow.db``; a plain path -> ``file:`` URI). Servers are
    returned unchanged. Call it on the driver: Ray workers run in another folder."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{Path(path).resolve()}"
        return uri
    if "://" not in uri and not uri.startswith("file:") and ":" not in uri.split("/")[0]:
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def sqlite_db_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the cwd if relative); else None."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    return None


def _file_store_path(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return Path(uri).expanduser()
    return None


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, when ``uri`` cannot be tracked to.

    - ``sqlite:///path``: the folder is created if needed and must be writable; an existing
      file must be an SQLite database.
    - ``file:`` / a path: the folder is created if needed and must be writable.
    - ``http(s)://host:port``: ``GET {uri}/health`` must answer 200 within ``timeout_s``
      (one attempt: MLflow's own client would retry for minutes).
    - other schemes (``postgresql://``, ``databricks``) are not checked.

    Raises:
        TrackingError: naming the URI (its password, if any, redacted) and the cause.
    """
    if not uri:
        raise TrackingError("empty MLflow tracking URI")
    shown = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri, shown, timeout_s)
        return
    if uri.startswith("sqlite:"):
        db = sqlite_db_path(uri)
        if db is None:
            if uri.split("?", 1)[0] not in ("sqlite://", "sqlite:///:memory:"):
                raise TrackingError(f"MLflow tracking URI {shown} names no database file "
                                    "(use sqlite:///path/mlflow.db)")
            return
        _check_folder(db.parent, shown)
        if db.exists():
            try:
                read_only = f"{db.resolve().as_uri()}?mode=ro"
                with contextlib.closing(sqlite3.connect(read_only, uri=True, timeout=timeout_s)) as conn:
                    conn.execute("PRAGMA schema_version").fetchone()
            except sqlite3.Error as exc:
                raise TrackingError(f"MLflow tracking store {shown}: {db} is not a usable SQLite database: "
                                    f"{exc}") from None
            if not os.access(db, os.W_OK):
                raise TrackingError(f"MLflow tracking store {shown}: {db} is not writable")
        return
    folder = _file_store_path(uri)
    if folder is not None:
        _check_folder(folder, shown)


def _check_folder(folder: Path, shown: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"MLflow tracking store {shown}: cannot create {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {shown}: folder {folder} is not writable")


def _check_server(uri: str, shown: str, timeout_s: float) -> None:
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = host + (f":{parts.port}" if parts.port else "") if host else parts.netloc
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(health, method="GET"), timeout=timeout_s) as resp:
                outcome["status"] = resp.status
        except urllib.error.HTTPError as exc:
            outcome["status"] = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome["error"] = getattr(exc, "reason", exc)

    # urlopen's timeout does not cover name resolution: a thread bounds the whole check.
    thread = threading.Thread(target=probe, name="dynvid-mlflow-health", daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    if thread.is_alive():
        outcome["error"] = f"no answer within {timeout_s:g} s"
    if "error" in outcome:
        raise TrackingError(f"MLflow tracking server {shown} is not reachable: {outcome['error']}")
    if outcome["status"] != 200:
        raise TrackingError(f"MLflow tracking server {shown} is not healthy: GET /health answered HTTP "
                            f"{outcome['status']} (is this an MLflow server?)")


@contextlib.contextmanager
def use_tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide (fluent) tracking and registry URI, and optionally its
    active experiment, at ``uri`` / ``experiment_id`` for the block, then restore what was
    there, environment variables included. Needed only around the MLflow calls that take no
    URI (``mlflow.pytorch.log_model``, which files the model under the active experiment,
    ``load_model``, and the registry's resolution of ``models:/`` sources).

    Not thread-safe: MLflow keeps these in module globals.
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    saved_experiment = fluent._active_experiment_id
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if experiment_id is not None:
        fluent._active_experiment_id = experiment_id
    try:
        yield
    finally:
        fluent._active_experiment_id = saved_experiment
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Set by the submitting side (``infra/local/run_main_job.sh`` passes them in the job's runtime
#: env): a job running from Ray's copy of the working directory has no ``.git`` to ask.
GIT_COMMIT_ENV = "DYNVID_GIT_COMMIT"
GIT_DIRTY_ENV = "DYNVID_GIT_DIRTY"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: str | os.PathLike) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_info(cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"git_commit": sha, "git_dirty": "true" | "false"}`` of the code this process runs.

    From, in order: ``DYNVID_GIT_COMMIT`` / ``DYNVID_GIT_DIRTY`` (set by whoever submitted the
    job from a checkout); the git checkout holding the dynvid package (or ``cwd`` when given);
    the git checkout of the working directory; else ``"unknown"`` for both. The package's
    checkout comes before the working directory's: it holds the code that trains, while the
    working directory may be another project's. Dirty = tracked files changed since the commit
    (untracked files do not count, as in ``git describe --dirty``)."""
    commit = os.environ.get(GIT_COMMIT_ENV, "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{7,64}", commit):
        dirty = os.environ.get(GIT_DIRTY_ENV, "").strip().lower()
        return {"git_commit": commit, "git_dirty": dirty if dirty in ("true", "false") else "unknown"}
    for folder in ([cwd] if cwd is not None else [_PACKAGE_DIR, Path.cwd()]):
        head = (_git(["rev-parse", "HEAD"], folder) or "").strip()
        if re.fullmatch(r"[0-9a-f]{40,64}", head):
            status = _git(["status", "--porcelain", "--untracked-files=no"], folder)
            dirty = "unknown" if status is None else ("true" if status.strip() else "false")
            return {"git_commit": head, "git_dirty": dirty}
    return {"git_commit": "unknown", "git_dirty": "unknown"}


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The commit of :func:`git_info`: ``DYNVID_GIT_COMMIT``, else ``git rev-parse HEAD`` of the
    package's checkout (or ``cwd``), else of the working directory; ``"unknown"`` if none."""
    return git_info(cwd)["git_commit"]


# ---- runs ---------------------------------------------------------------------------------

def mlflow_client(uri: str):
    """An ``MlflowClient`` for ``uri`` as tracking and registry store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client, uri: str, name: str) -> str:
    """Get or create the experiment; a new experiment of a local SQLite store keeps its
    artifacts next to the database (``<db folder>/mlartifacts``), not in the cwd."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} at {redact_uri(uri)} is deleted; restore it or pick "
                                "another train.mlflow_experiment")
        return exp.experiment_id
    db = sqlite_db_path(uri)
    location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _find_run(client, experiment_id: str, run_name: str, parent_run_id: str | None, kind: str):
    if "'" in run_name and '"' in run_name:
        raise TrackingError(f"MLflow run name {run_name!r} holds both quote characters")
    quote = '"' if "'" in run_name else "'"
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = {quote}{run_name}{quote}",
                              order_by=["attributes.start_time DESC"], max_results=50)
    for run in runs:
        tags = run.data.tags
        if kind in ("job", "sweep"):
            if tags.get(KIND_TAG, "job") == kind and tags.get(PARENT_TAG) == parent_run_id:
                return run
        elif tags.get(KIND_TAG) != "job":
            if parent_run_id is None or tags.get(PARENT_TAG) in (None, parent_run_id):
                return run  # a stage run of this parent, or of none yet (then adopted)
    return None


def _open_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict | None,
              parent_run_id: str | None, kind: str) -> str:
    """Resume the run named ``run_name`` or create it; returns its id."""
    from mlflow.entities import Param, RunStatus

    client = mlflow_client(uri)
    exp_id = _experiment_id(client, uri, experiment)
    safe = _safe_params(params)
    run_tags = {KIND_TAG: kind, **{k: _param_str(v) for k, v in scrub_params(dict(tags or {})).items()}}
    if parent_run_id:
        run_tags[PARENT_TAG] = parent_run_id
    run = _find_run(client, exp_id, run_name, parent_run_id, kind)
    if run is None:
        run = client.create_run(exp_id, run_name=run_name, tags=run_tags)
        new = safe
    else:  # resumed: params are immutable in MLflow, add only the ones it lacks
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            client.update_run(run.info.run_id, status="RUNNING")
        for key, value in run_tags.items():
            if run.data.tags.get(key) != value:
                client.set_tag(run.info.run_id, key, value)
        new = {k: v for k, v in safe.items() if k not in run.data.params}
    if new:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in new.items()])
    return run.info.run_id


def _numeric_metrics(metrics: dict, step: int):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = []
    for key, value in flatten(metrics).items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(float(value)):
            out.append(Metric(str(key)[:250], float(value), now, step))
    return out


def _log_artifact(client, run_id: str, local_path: str | os.PathLike, artifact_path: str | None) -> None:
    path = Path(local_path)
    if not path.exists():
        raise FileNotFoundError(f"artifact not found: {path}")
    with _scrubbed_copy(path) as safe:
        if safe.is_dir():
            client.log_artifacts(run_id, str(safe), artifact_path=f"{artifact_path}/{path.name}" if artifact_path
                                 else path.name)
        else:
            client.log_artifact(run_id, str(safe), artifact_path=artifact_path)


def start_job_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict | None = None,
                  parent_run_id: str | None = None) -> str:
    """Open (or resume, by ``run_name``) the parent run of a job; returns its run id.

    With ``parent_run_id`` (a sweep's run) the job's run is that run's child, so the MLflow
    UI lists and compares a sweep's trials under it.

    The flattened, scrubbed config is logged as params (once: a resumed run only gets the
    params it lacks, as MLflow params cannot change). The run is tagged with the git commit
    and dirty flag (:func:`git_info`).
    Leaves no active run in this process.
    """
    return _open_run(uri, experiment, run_name, params, {**_git_tags(), **dict(tags or {})}, parent_run_id, "job")


def start_sweep_run(uri: str, experiment: str, sweep_name: str, params: dict) -> str:
    """Open (or resume, by name) a sweep's parent run (the spec and base config as params)."""
    return _open_run(uri, experiment, sweep_name, params, _git_tags(), None, "sweep")


def _git_tags() -> dict[str, str]:
    """MLflow's commit tag and dynvid's dirty flag (:func:`git_info`)."""
    info = git_info()
    return {"mlflow.source.git.commit": info["git_commit"], "dynvid.git_dirty": info["git_dirty"]}


def open_trial_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict, parent_run_id: str) -> str:
    """Open (or resume, by name) an inference trial's run under its sweep's run."""
    return _open_run(uri, experiment, run_name, params, tags, parent_run_id, "trial")


def finish_job_run(uri: str, run_id: str, metrics: dict, results_markdown: str | None = None,
                   status: str = "FINISHED", artifacts: list[str | os.PathLike] | tuple = ()) -> None:
    """Close the parent run: final metrics (nested dicts such as a cost summary are
    flattened, ``cost.gflops_avg``), the result tables as ``results.md``, and any files or
    folders in ``artifacts`` (final checkpoint, plots) under their own names."""
    client = mlflow_client(uri)
    batch = _numeric_metrics(metrics, step=0)
    if batch:
        client.log_batch(run_id, metrics=batch)
    if results_markdown is not None:
        client.log_text(run_id, scrub_text(results_markdown), "results.md")
    for path in artifacts:
        _log_artifact(client, run_id, path, None)
    client.set_terminated(run_id, status=status)


CURVES = (("train_loss", "train loss"), ("val_clip_top1", "val clip-1"), ("val_gflops_avg", "GFLOPs / clip"))


def plot_training_curves(uri: str, parent_run_id: str, out_path: str | os.PathLike) -> Path | None:
    """PNG of the per-epoch curves (loss, clip-1, GFLOPs) of every stage run under the job's
    parent run, read back from MLflow so resumed stages show their whole history. Returns
    None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = mlflow_client(uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    if not children:
        return None
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    plotted = False
    for child in sorted(children, key=lambda r: r.info.start_time):
        for ax, (key, title) in zip(axes, CURVES):
            points = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, key))
            if points:
                ax.plot(*zip(*points), marker="o", label=child.info.run_name)
                ax.set_title(title)
                ax.set_xlabel("epoch")
                plotted = True
    if not plotted:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class Tracker:
    """MLflow child run of one stage, on the rank-0 worker; a no-op when ``uri`` is None or
    ``enabled`` is False (the other ranks).

    Args:
        uri: tracking URI (absolute for local stores, see :func:`resolve_tracking_uri`).
        experiment: experiment name (the parent's).
        run_name: deterministic stage run name; a run of that name (under the same parent)
            is resumed instead of duplicated.
        params: the config (nested) plus method / stage; flattened and scrubbed.
        enabled: False on ranks other than 0.
        parent_run_id: the job's run from :func:`start_job_run`; tags ``mlflow.parentRunId``.
        tags: extra run tags (scrubbed).
    """

    def __init__(self, uri: str | None, experiment: str, run_name: str, params: dict, enabled: bool = True,
                 parent_run_id: str | None = None, tags: dict | None = None):
        self.active = bool(uri) and enabled
        self.run_id: str | None = None
        self.uri = uri
        if not self.active:
            return
        self._client = mlflow_client(uri)
        self.run_id = _open_run(uri, experiment, run_name, params, tags,
                                parent_run_id, "stage")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Numeric, finite values of ``metrics`` at ``step`` (the epoch), in one request."""
        if self.active:
            batch = _numeric_metrics(metrics, step)
            if batch:
                self._client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file, or a folder (kept under its own name), with text files scrubbed."""
        if self.active:
            _log_artifact(self._client, self.run_id, local_path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.active:
            self._client.log_text(self.run_id, scrub_text(text), artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        if self.active:
            self._client.set_terminated(self.run_id, status=status)
            self.active = False
