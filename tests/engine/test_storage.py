"""dynvid.engine.storage against a real S3 endpoint over HTTP (moto's server, see conftest)."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
import torch

from dynvid.engine import storage
from dynvid.engine.checkpoint import load_checkpoint, save_checkpoint
from dynvid.engine.storage import StorageError

SECRETS = ("testing-key-id-123", "testing-secret-key-456")


@pytest.fixture
def prefix(s3_server):
    """A fresh key prefix per test in the shared bucket."""
    return f"t-{uuid.uuid4().hex[:8]}"


def _tree(root, files):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/a/b", ("bucket", "a/b")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
        ("s3://bucket", ("bucket", "")),
        ("s3://my.bucket-1/", ("my.bucket-1", "")),
    ],
)
def test_split_s3(uri, expected):
    assert storage.split_s3(uri) == expected
    assert storage.is_remote(uri)


@pytest.mark.parametrize(
    "uri, words",
    [
        ("s3:///key", "no bucket"),
        ("s3://ab/key", "3-63"),
        (f"s3://{'b' * 64}/key", "3-63"),
        ("s3://Bucket/key", "lowercase"),
        ("s3a://bucket/key", "not an S3 URI"),
        ("/local/path", "not an S3 URI"),
    ],
)
def test_split_s3_rejects_bad_uris(uri, words):
    with pytest.raises(StorageError, match=words) as info:
        storage.split_s3(uri)
    assert uri in str(info.value)


def test_other_schemes_are_refused():
    for call in (storage.ray_storage, storage.check_storage):
        with pytest.raises(StorageError, match="unsupported URI scheme 'gs'.*gs://b/x"):
            call("gs://b/x")


# --------------------------------------------------------------------------- Ray storage


def test_ray_storage_local(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path, fs = storage.ray_storage("~/runs/../runs")
    assert (path, fs) == (str(tmp_path.resolve() / "runs"), None)


def test_ray_storage_s3_writes_objects_boto3_sees(s3_server, prefix):
    path, fs = storage.ray_storage(s3_server.uri(prefix, "ray") + "/")
    assert path == f"{s3_server.bucket}/{prefix}/ray"
    with fs.open_output_stream(f"{path}/run/checkpoint_0/probe.txt") as out:
        out.write(b"written by pyarrow")
    key = f"{prefix}/ray/run/checkpoint_0/probe.txt"
    assert s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"written by pyarrow"


def test_s3_filesystem_follows_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-abc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-abc")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-abc")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    options = storage.s3_filesystem().__reduce__()[1][0]  # pyarrow's own record of its settings
    assert options["scheme"] == "https" and options["endpoint_override"] == "s3.example.com:9000"
    assert (options["access_key"], options["secret_key"], options["session_token"]) == (
        "key-id-abc", "secret-abc", "token-abc")
    assert options["region"] == "eu-west-3"

    # the S3-specific variable wins, for pyarrow and boto3 alike
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://10.1.2.3:9000")
    options = storage.s3_filesystem().__reduce__()[1][0]
    assert (options["scheme"], options["endpoint_override"]) == ("http", "10.1.2.3:9000")
    assert storage._client().meta.endpoint_url == "http://10.1.2.3:9000"

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://s3.example.com")
    with pytest.raises(StorageError, match="http\\(s\\)://host"):
        storage.s3_filesystem()


# --------------------------------------------------------------------------- transfers


def test_upload_download_round_trip(s3_server, prefix, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_SINGLE_REQUEST_BYTES", 1000)  # a.bin takes boto3's managed-transfer path
    files = {"a.bin": bytes(range(256)) * 10, "sub/b.txt": b"hello", "sub/deeper/c.txt": b"", "metadata.json": b"{}"}
    src = _tree(tmp_path / "src", files)
    storage.upload_dir(src, s3_server.uri(prefix, "dir"))
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)["Contents"]}
    assert keys == {f"{prefix}/dir/{rel}" for rel in files}

    out = storage.download_dir(s3_server.uri(prefix, "dir"), tmp_path / "out")
    assert out == str((tmp_path / "out").resolve())
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert got == files  # no leftover temporary files either

    # a sibling prefix that merely starts with the same letters is not part of the folder
    storage.upload_dir(_tree(tmp_path / "other", {"x.txt": b"x"}), s3_server.uri(prefix, "dir2"))
    assert "x.txt" not in {p.name for p in (tmp_path / "out").rglob("*")}
    storage.download_dir(s3_server.uri(prefix, "dir"), tmp_path / "out2")
    assert not (tmp_path / "out2" / "x.txt").exists()

    # the same functions copy between local folders
    storage.upload_dir(src, str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "sub" / "b.txt").read_bytes() == b"hello"
    storage.download_dir(str(tmp_path / "copy"), tmp_path / "copy2")
    assert (tmp_path / "copy2" / "a.bin").read_bytes() == files["a.bin"]


def test_download_of_nothing_is_an_error(s3_server, prefix, tmp_path):
    uri = s3_server.uri(prefix, "empty")
    with pytest.raises(StorageError, match=f"nothing to download at {uri}"):
        storage.download_dir(uri, tmp_path / "out")
    with pytest.raises(StorageError, match="nothing to download"):
        storage.download_dir(str(tmp_path / "missing"), tmp_path / "out")
    with pytest.raises(StorageError, match="not a directory"):
        storage.upload_dir(tmp_path / "missing", uri)


def test_fetch_checkpoint_from_s3(s3_server, prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = torch.nn.Linear(4, 3)
    local = save_checkpoint(tmp_path / "ckpt", model, {"seed": 1}, {"method": "static", "epoch": 2})
    uri = s3_server.uri(prefix, "run", "checkpoint_000002")
    storage.upload_dir(local, uri)

    fetched = storage.fetch_checkpoint(uri)
    assert fetched.startswith(str(tmp_path / "cache" / "dynvid" / "checkpoints"))
    ckpt = load_checkpoint(fetched)
    assert ckpt["config"] == {"seed": 1} and ckpt["metadata"]["epoch"] == 2
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt["model"][name], value)

    # unchanged remote: the cached copy is reused as is
    stamp = (Path(fetched) / "model.pt").stat().st_mtime_ns
    assert storage.fetch_checkpoint(uri) == fetched
    assert (Path(fetched) / "model.pt").stat().st_mtime_ns == stamp

    # a new checkpoint written to the same URI replaces the cached one
    with torch.no_grad():
        model.weight.fill_(7.0)
    storage.upload_dir(save_checkpoint(tmp_path / "ckpt", model, {"seed": 1}, {"method": "static", "epoch": 3}), uri)
    ckpt = load_checkpoint(storage.fetch_checkpoint(uri, cache_dir=tmp_path / "explicit"))
    assert ckpt["metadata"]["epoch"] == 3 and torch.all(ckpt["model"]["weight"] == 7.0)
    assert load_checkpoint(storage.fetch_checkpoint(uri))["metadata"]["epoch"] == 3

    assert storage.fetch_checkpoint(str(local)) == str(local.resolve())


def test_fetch_checkpoint_refuses_incomplete(s3_server, prefix, tmp_path):
    local = save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(2, 2), {}, {"epoch": 0})
    (local / "metadata.json").unlink()  # what an interrupted write leaves
    uri = s3_server.uri(prefix, "checkpoint_000000")
    storage.upload_dir(local, uri)
    with pytest.raises(StorageError, match=f"incomplete checkpoint {uri}: no metadata.json"):
        storage.fetch_checkpoint(uri, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(StorageError, match="incomplete checkpoint"):
        storage.fetch_checkpoint(str(local))
    with pytest.raises(StorageError, match="checkpoint not found"):
        storage.fetch_checkpoint(s3_server.uri(prefix, "nothing-here"), cache_dir=tmp_path / "cache")


def test_fetch_dataset_skips_files_already_present(s3_server, prefix, tmp_path):
    files = {"train.csv": b"a,1\nb,2\n", "videos/a.mp4": b"A" * 100, "videos/b.mp4": b"B" * 50}
    uri = s3_server.uri(prefix, "k400")
    storage.upload_dir(_tree(tmp_path / "src", files), uri)
    calls = []
    out = storage.fetch_dataset(uri, cache_dir=tmp_path / "cache", progress=lambda d, t: calls.append((d, t)))
    assert out == str((tmp_path / "cache").resolve())
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert (tmp_path / "cache" / "videos" / "a.mp4").read_bytes() == files["videos/a.mp4"]

    # same size -> kept (marked so we can tell); other size or missing -> fetched again
    (tmp_path / "cache" / "videos" / "a.mp4").write_bytes(b"Z" * 100)
    (tmp_path / "cache" / "videos" / "b.mp4").write_bytes(b"truncated")
    (tmp_path / "cache" / "train.csv").unlink()
    calls.clear()
    storage.fetch_dataset(uri, cache_dir=tmp_path / "cache", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert (tmp_path / "cache" / "videos" / "a.mp4").read_bytes() == b"Z" * 100
    assert (tmp_path / "cache" / "videos" / "b.mp4").read_bytes() == files["videos/b.mp4"]
    assert (tmp_path / "cache" / "train.csv").read_bytes() == files["train.csv"]

    assert storage.fetch_dataset(str(tmp_path / "src")) == str((tmp_path / "src").resolve())
    with pytest.raises(StorageError, match="no dataset files at"):
        storage.fetch_dataset(s3_server.uri(prefix, "none"), cache_dir=tmp_path / "c2")


# --------------------------------------------------------------------------- checks


def test_check_storage_accepts_good_locations(s3_server, tmp_path):
    storage.check_storage(s3_server.uri("any", "prefix"))
    storage.check_storage(str(tmp_path / "new" / "runs"))
    assert (tmp_path / "new" / "runs").is_dir()
    assert list((tmp_path / "new" / "runs").iterdir()) == []  # the write probe is gone


def test_check_storage_local_not_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    uri = str(tmp_path / "file" / "runs")
    with pytest.raises(StorageError, match=f"storage path {uri} is not writable"):
        storage.check_storage(uri)


def test_check_storage_unreachable_endpoint(s3_server, monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    uri = f"s3://{s3_server.bucket}/x"
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.check_storage(uri)
    assert time.monotonic() - t0 < 5
    assert str(info.value).startswith(f"cannot reach S3 endpoint {endpoint} for {uri}: ")
    _no_secrets(str(info.value))


def test_check_storage_missing_bucket(s3_server):
    uri = "s3://no-such-bucket-here/y"
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.check_storage(uri)
    assert time.monotonic() - t0 < 5
    assert str(info.value).startswith(f"bucket 'no-such-bucket-here' does not exist ({uri}")
    _no_secrets(str(info.value))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.download_dir(uri, "/nonexistent-unused")


# --------------------------------------------------------------------------- secrets


def test_credential_env_and_redact(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-789")
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.setenv("UNRELATED_VAR", "testing-key-id-123-not-aws")
    monkeypatch.setenv("MY_API_TOKEN", "tok-abcdef")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    env = storage.credential_env()
    assert set(env) <= set(storage.WORKER_ENV_VARS)
    assert env["AWS_ACCESS_KEY_ID"] == "testing-key-id-123" and env["AWS_SESSION_TOKEN"] == "session-token-789"
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == s3_server.endpoint
    assert "AWS_PROFILE" not in env and "UNRELATED_VAR" not in env and "PATH" not in env

    text = (f"key=testing-key-id-123 secret=testing-secret-key-456 token=session-token-789 api=tok-abcdef "
            f"endpoint={s3_server.endpoint} tracking=https://alice:pw-xyz@mlflow.example.com/ parallel=false")
    out = storage.redact(text)
    _no_secrets(out)
    for gone in ("session-token-789", "tok-abcdef", "alice", "pw-xyz"):
        assert gone not in out
    assert f"endpoint={s3_server.endpoint}" in out and "parallel=false" in out  # not secrets
    assert out.count("***") == 5
    assert storage.redact("pass=hunter22", env={"DB_PASSWORD": "hunter22"}) == "pass=***"
    assert storage.redact("nothing secret here") == "nothing secret here"


def test_storage_error_messages_are_redacted(s3_server):
    err = StorageError("failed with testing-secret-key-456 in s3://b/x")
    assert str(err) == "failed with *** in s3://b/x"
