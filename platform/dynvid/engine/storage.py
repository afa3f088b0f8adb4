"""Storage for datasets, Ray Train ``storage_path`` and checkpoints: local paths and S3.

Supported locations:

* a local path (``~`` expanded, made absolute): Ray's ``storage_path``, checkpoints, datasets;
* ``s3://bucket/prefix`` on AWS S3 or any S3-compatible endpoint (MinIO, moto's server in
  the tests). Only the ``s3://`` scheme is accepted (not ``s3a://``, ``gs://``, ``file://``).

Which client does what (one rule, kept everywhere): **boto3** lists, uploads, downloads and
checks (``check_storage``); **pyarrow.fs.S3FileSystem** is built only for Ray Train, which
takes a pyarrow filesystem (``ray_storage``). Both are configured from the same environment
variables by this module:

* endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (``http://`` or ``https://``;
  unset = AWS). With an endpoint, boto3 uses path-style addressing (needed for IP endpoints).
* credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``;
  unset = the SDKs' default chain (config files, instance metadata).
* region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``.

How credentials reach Ray workers: the driver passes ``credential_env()`` to
``ray.init(runtime_env={"env_vars": ...})`` (or the job's runtime env), so every worker
sees the same variables and builds its own clients. A ``storage_filesystem`` from
``ray_storage`` is pickled by Ray with the keys inside it; that stays in Ray's object store
and is never printed.

The no-printing rule: credential values are never printed, logged or put into an exception
message. Every ``StorageError`` names the URI (and the endpoint when one is involved) and is
passed through ``redact``; anything else that logs text that might carry a value from the
environment (MLflow params, error messages) calls ``redact`` first.

Objects are written whole: uploads and downloads go to a temporary name and are renamed (or,
on S3, appear only when the PUT / multipart upload completes), and a ``metadata.json`` is
always transferred after the other files of its folder, so a checkpoint whose metadata is
present is complete (the rule of ``dynvid.engine.checkpoint``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = [
    "StorageError",
    "is_remote",
    "split_s3",
    "s3_filesystem",
    "ray_storage",
    "credential_env",
    "redact",
    "check_storage",
    "upload_dir",
    "download_dir",
    "fetch_checkpoint",
    "fetch_dataset",
]

# Variables a worker needs to reach the same S3 as the driver. Not AWS_PROFILE or
# AWS_CA_BUNDLE: they point at files that need not exist on a worker node.
WORKER_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_S3_IGNORE_TLS",
)
# Names whose values are secrets wherever they appear: a whole `_`-separated word of the name.
_SECRET_NAME = re.compile(
    r"(^|_)(SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|ACCESS_KEY_ID|API_KEY|CREDENTIALS?)(_|$)", re.IGNORECASE
)
# Shorter values are not redacted: replacing every "ab" in a message would destroy it, and no
# real credential is that short.
_MIN_SECRET_LEN = 4
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+:[^/\s@]+@")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_META = "metadata.json"
# Smaller objects go in one PUT / GET; larger ones through boto3's managed (multipart,
# threaded) transfer, whose setup costs more than a small file takes. boto3's own threshold.
_SINGLE_REQUEST_BYTES = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


class StorageError(RuntimeError):
    """A storage location is invalid, unreachable or incomplete; the message names the URI
    and never contains a credential value."""

    def __init__(self, message: str):
        super().__init__(redact(message))


# --------------------------------------------------------------------------- URIs


def is_remote(uri: str) -> bool:
    """True for ``s3://`` URIs (the only remote scheme)."""
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``"s3://bucket/a/b/"`` -> ``("bucket", "a/b")``; the key has no leading/trailing slash."""
    if not is_remote(uri):
        raise StorageError(f"not an S3 URI (expected s3://bucket/prefix): {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"no bucket name in {uri}")
    if not 3 <= len(bucket) <= 63:
        raise StorageError(f"bucket name {bucket!r} must have 3-63 characters ({uri})")
    if not _BUCKET.match(bucket):
        raise StorageError(
            f"bucket name {bucket!r} may hold only lowercase letters, digits, '.' and '-', "
            f"and must start and end with a letter or digit ({uri})"
        )
    return bucket, key.strip("/")


def _local_path(uri: str) -> Path:
    if "://" in str(uri):
        scheme = str(uri).split("://", 1)[0]
        raise StorageError(f"unsupported URI scheme {scheme!r} in {uri}: use a local path or s3://bucket/prefix")
    return Path(uri).expanduser().resolve()


def _cache_root(kind: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dynvid" / kind


def _cache_dir_for(uri: str, kind: str) -> Path:
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return _cache_root(kind) / digest


# --------------------------------------------------------------------------- environment


def credential_env() -> dict[str, str]:
    """The S3 variables of ``os.environ`` that workers need (``WORKER_ENV_VARS``), for
    ``ray.init(runtime_env={"env_vars": ...})``. The values are secrets: never print them."""
    return {name: os.environ[name] for name in WORKER_ENV_VARS if os.environ.get(name)}


def secret_values(env: Mapping[str, str] | None = None, include_environ: bool = True) -> list[str]:
    """Values of the secret-named variables (see :func:`redact`) of ``os.environ`` and ``env``,
    longest first. The one definition of "a credential in the environment" in dynvid: the
    tracking layer scrubs the same values from params, tags and artifacts."""
    values = set()
    for source in ((os.environ,) if include_environ else ()) + (env or {},):
        for name, value in source.items():
            if value and len(value) >= _MIN_SECRET_LEN and _SECRET_NAME.search(name):
                values.add(value)
    return sorted(values, key=len, reverse=True)  # longest first: a secret may contain another


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every credential value replaced by ``***``.

    Redacted: the values of secret-named variables (``*_SECRET_*``, ``*TOKEN*``, ``*_PASSWORD``,
    ``*ACCESS_KEY*``, ``*API_KEY*``, ``*CREDENTIALS*`` as whole words of the name; this covers
    the AWS keys and session token of ``credential_env()``) in ``os.environ`` and in ``env``,
    and the ``user:password@`` part of URLs. Endpoints and regions are kept: they are what an
    error message needs to say.
    """
    text = str(text)
    for value in secret_values(env):
        text = text.replace(value, "***")
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _parse_endpoint(endpoint: str) -> tuple[str, str]:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
        raise StorageError(f"S3 endpoint must look like http(s)://host[:port], got {endpoint!r} (AWS_ENDPOINT_URL)")
    return parsed.scheme, parsed.netloc


def s3_filesystem() -> pyarrow.fs.S3FileSystem:
    """A pyarrow S3 filesystem configured from the environment (see the module docstring)."""
    from pyarrow.fs import S3FileSystem

    kwargs: dict = {}
    endpoint = _endpoint()
    if endpoint:
        kwargs["scheme"], kwargs["endpoint_override"] = _parse_endpoint(endpoint)
    if _region():
        kwargs["region"] = _region()
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        raise StorageError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
    if key_id:
        kwargs.update(access_key=key_id, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN") or None)
    return S3FileSystem(**kwargs)


def _client(check: bool = False):
    """A boto3 S3 client from the environment; ``check=True``: short timeouts, one attempt."""
    import boto3
    from botocore.config import Config

    options: dict = {"max_pool_connections": 32}
    if check:
        options.update(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"})
    else:
        options.update(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"})
    endpoint = _endpoint()
    if endpoint:
        _parse_endpoint(endpoint)
        options["s3"] = {"addressing_style": "path"}
    region = _region() or ("us-east-1" if endpoint else None)  # any region signs for a custom endpoint
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=Config(**options))


def _s3_error(exc: Exception, uri: str, client, action: str) -> StorageError:
    """Translate a boto3 exception into a StorageError that names the URI and endpoint."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError

    endpoint = client.meta.endpoint_url
    bucket = split_s3(uri)[0]
    if isinstance(exc, (ConnectionError, HTTPClientError)):  # refused, timed out, dropped
        return StorageError(f"cannot reach S3 endpoint {endpoint} for {uri}: {exc}")
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"no S3 credentials for {uri} (endpoint {endpoint}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return StorageError(f"bucket {bucket!r} does not exist ({uri}, endpoint {endpoint})")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"access denied to {uri} at {endpoint} while trying to {action}: check the credentials ({code})"
            )
    return StorageError(f"cannot {action} {uri} (endpoint {endpoint}): {exc}")


# --------------------------------------------------------------------------- Ray / checks


def ray_storage(uri: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig``: a local path gives
    its absolute path and None; ``s3://bucket/prefix`` gives ``"bucket/prefix"`` and
    ``s3_filesystem()`` (Ray wants a bucket-relative path with an explicit filesystem)."""
    if is_remote(uri):
        bucket, key = split_s3(uri)
        return (f"{bucket}/{key}" if key else bucket), s3_filesystem()
    return str(_local_path(uri)), None


def check_storage(uri: str) -> None:
    """Fail fast, before training: a local path is created and must be writable; for S3 the
    endpoint must answer and the bucket exist (one HeadBucket, a few seconds at most)."""
    if not is_remote(uri):
        path = _local_path(uri)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".dynvid-write-check-"):
                pass
        except OSError as exc:
            raise StorageError(f"storage path {uri} is not writable: {exc}") from None
        return
    bucket, _ = split_s3(uri)
    client = _client(check=True)
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # botocore raises many types; all become a StorageError naming the URI
        raise _s3_error(exc, uri, client, "check bucket") from None


# --------------------------------------------------------------------------- transfers


def _metadata_last(items: list, rel: Callable) -> list:
    """Order transfers so every ``metadata.json`` follows the other files."""
    return sorted(items, key=lambda item: (Path(rel(item)).name == _META, rel(item)))


def _list_objects(client, uri: str) -> list[tuple[str, str, int]]:
    """``(relative path, key, size)`` of every object under the URI's prefix (as a folder)."""
    bucket, key = split_s3(uri)
    prefix = f"{key}/" if key else ""
    out = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):  # folder markers written by some tools
                    continue
                parts = Path(rel).parts
                if ".." in parts or Path(rel).is_absolute():
                    raise StorageError(f"refusing object {obj['Key']!r} under {uri}: it would leave the target folder")
                out.append((rel, obj["Key"], int(obj["Size"])))
    except StorageError:
        raise
    except Exception as exc:
        raise _s3_error(exc, uri, client, "list") from None
    return out


def _local_files(root: Path) -> list[tuple[str, Path]]:
    return [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()]


def _part_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")


def _copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download_file(client, bucket: str, key: str, size: int, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(dest)
    try:
        if size < _SINGLE_REQUEST_BYTES:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            with open(tmp, "wb") as f:
                shutil.copyfileobj(body, f)
        else:
            client.download_file(bucket, key, str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(client, uri: str, objects: list[tuple[str, str, int]], dest: Path, progress: Progress | None = None,
              total: int | None = None, done: int = 0) -> None:
    """Download ``objects`` into ``dest`` (a few files at a time), metadata.json files last."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split_s3(uri)
    total = len(objects) if total is None else total
    first = [o for o in objects if Path(o[0]).name != _META]
    last = [o for o in objects if Path(o[0]).name == _META]
    try:
        for batch in (first, last):
            with ThreadPoolExecutor(max_workers=4) as pool:
                futures = [
                    pool.submit(_download_file, client, bucket, key, size, dest / rel) for rel, key, size in batch
                ]
                for future in futures:
                    future.result()
                    done += 1
                    if progress is not None:
                        progress(done, total)
    except (BotoCoreError, ClientError) as exc:  # before OSError: botocore's timeouts are OSErrors too
        raise _s3_error(exc, uri, client, "download") from None
    except OSError as exc:
        raise StorageError(f"cannot write {uri} into {dest}: {exc}") from None
    except StorageError:
        raise
    except Exception as exc:  # s3transfer's own errors (retries exceeded, ...)
        raise _s3_error(exc, uri, client, "download") from None


def upload_dir(local_dir: str | os.PathLike, uri: str) -> None:
    """Copy every file under ``local_dir`` to ``uri`` (``s3://bucket/prefix`` or a local path),
    keeping relative paths; each object is written whole, ``metadata.json`` files last."""
    src = Path(local_dir).expanduser()
    if not src.is_dir():
        raise StorageError(f"cannot upload {src} to {uri}: not a directory")
    files = _metadata_last(_local_files(src), lambda f: f[0])
    if not is_remote(uri):
        dest = _local_path(uri)
        try:
            for rel, path in files:
                _copy_file(path, dest / rel)
        except OSError as exc:
            raise StorageError(f"cannot copy {src} to {uri}: {exc}") from None
        return
    bucket, key = split_s3(uri)
    client = _client()
    try:
        for rel, path in files:  # one PUT, or a multipart upload: the object appears only when complete
            target = f"{key}/{rel}" if key else rel
            if path.stat().st_size < _SINGLE_REQUEST_BYTES:
                with open(path, "rb") as f:
                    client.put_object(Bucket=bucket, Key=target, Body=f)
            else:
                client.upload_file(str(path), bucket, target)
    except Exception as exc:
        raise _s3_error(exc, uri, client, "upload to") from None


def download_dir(uri: str, local_dir: str | os.PathLike) -> str:
    """Copy everything under ``uri`` into ``local_dir``; returns its absolute path.
    StorageError when there is nothing at ``uri``."""
    dest = Path(local_dir).expanduser().resolve()
    if not is_remote(uri):
        src = _local_path(uri)
        files = _local_files(src) if src.is_dir() else []
        if not files:
            raise StorageError(f"nothing to download at {uri}")
        try:
            for rel, path in _metadata_last(files, lambda f: f[0]):
                _copy_file(path, dest / rel)
        except OSError as exc:
            raise StorageError(f"cannot copy {uri} to {dest}: {exc}") from None
        return str(dest)
    client = _client()
    objects = _list_objects(client, uri)
    if not objects:
        raise StorageError(f"nothing to download at {uri}")
    _download(client, uri, objects, dest)
    return str(dest)


def fetch_checkpoint(uri: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A local directory holding the checkpoint at ``uri`` (for ``--init-from``).

    A local path is returned as is. An S3 checkpoint is downloaded into ``cache_dir``
    (default ``~/.cache/dynvid/checkpoints/<hash of uri>``, under ``$XDG_CACHE_HOME`` when
    set) and reused while its ``metadata.json`` is unchanged. A checkpoint without
    ``metadata.json`` is an interrupted write and is refused.
    """
    if not is_remote(uri):
        path = _local_path(uri)
        if not path.is_dir():
            raise StorageError(f"checkpoint not found: {uri}")
        if not (path / _META).is_file():
            raise StorageError(f"incomplete checkpoint {uri}: no {_META} (interrupted write?)")
        return str(path)
    client = _client()
    objects = _list_objects(client, uri)
    if not objects:
        raise StorageError(f"checkpoint not found: {uri}")
    meta = next((o for o in objects if o[0] == _META), None)
    if meta is None:
        raise StorageError(f"incomplete checkpoint {uri}: no {_META} (interrupted write?)")
    dest = Path(cache_dir).expanduser().resolve() if cache_dir else _cache_dir_for(uri, "checkpoints")
    bucket, _ = split_s3(uri)
    try:
        remote_meta = client.get_object(Bucket=bucket, Key=meta[1])["Body"].read()
    except Exception as exc:
        raise _s3_error(exc, uri, client, "read") from None
    if _same_checkpoint(dest, remote_meta, objects):
        return str(dest)
    # A fresh sibling folder swapped in at the end: a reader never sees a half-replaced checkpoint.
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _download(client, uri, objects, staging)
        for _ in range(3):
            if _same_checkpoint(dest, remote_meta, objects):  # another process on this node was first
                return str(dest)
            shutil.rmtree(dest, ignore_errors=True)  # an older version of this checkpoint
            try:
                os.replace(staging, dest)
                return str(dest)
            except OSError:  # dest reappeared in between: look again
                continue
        raise StorageError(f"cannot place checkpoint {uri} into {dest}: the folder keeps changing")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _same_checkpoint(dest: Path, remote_meta: bytes, objects: list[tuple[str, str, int]]) -> bool:
    try:
        if (dest / _META).read_bytes() != remote_meta:
            return False
        return all((dest / rel).stat().st_size == size for rel, _, size in objects)
    except OSError:
        return False


def fetch_dataset(uri: str, cache_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> str:
    """A local folder with the dataset at ``uri`` (dataset specs such as ``kinetics:s3://b/k400``).

    A local path is returned as is (it must exist). An S3 prefix is mirrored into
    ``cache_dir`` (default ``~/.cache/dynvid/datasets/<hash of uri>``): files already there
    with the same size are skipped, nothing local is deleted. ``progress(done, total)`` is
    called with file counts (skipped files count as done) once before and after each download.
    """
    if not is_remote(uri):
        path = _local_path(uri)
        if not path.exists():
            raise StorageError(f"dataset not found: {uri}")
        return str(path)
    client = _client()
    objects = _list_objects(client, uri)
    if not objects:
        raise StorageError(f"no dataset files at {uri}")
    dest = Path(cache_dir).expanduser().resolve() if cache_dir else _cache_dir_for(uri, "datasets")
    missing = []
    for obj in objects:
        local = dest / obj[0]
        if not (local.is_file() and local.stat().st_size == obj[2]):
            missing.append(obj)
    done = len(objects) - len(missing)
    if progress is not None:
        progress(done, len(objects))
    if missing:
        _download(client, uri, missing, dest, progress, total=len(objects), done=done)
    return str(dest)
