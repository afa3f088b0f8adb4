"""dynvid.engine.registry against a real ``mlflow server`` (artifacts on S3 via moto) and a
server-less SQLite store: log + register a real (tiny) dynvid backbone, load it back by
alias, move aliases, list versions, and the ``dynvid models`` CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch

from dynvid.backbones import build_backbone
from dynvid.cli import main
from dynvid.engine.registry import (
    RegistryError,
    list_models,
    load_registered,
    log_and_register,
    model_card,
    promote,
    registered_name,
)
from dynvid.engine.tracking import start_job_run, use_tracking_uri

CONFIG = {"data": {"dataset": "synthetic:actions", "clip_len": 4, "crop_size": 16},
          "model": {"backbone": "r2plus1d_18", "width_mult": 0.125},
          "storage": {"aws_secret_access_key": "card-secret-Hh72kq"}}


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("r2plus1d_18", num_classes=5, width_mult=0.125)


def _clips() -> torch.Tensor:
    return torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))


def _register(uri: str, name: str, seed: int = 0, accuracy: float = 0.5) -> dict:
    run_id = start_job_run(uri, "registry", f"job-{name}-{seed}", CONFIG)
    card = model_card(name, "static", "r2plus1d_18", "synthetic:actions", {"val_clip_top1": accuracy},
                      {"gflops_avg": 0.012, "params_m": 0.49}, CONFIG)
    tags = {"method": "static", "backbone": "r2plus1d_18", "dataset": "synthetic:actions", "gflops": 0.012,
            "accuracy": accuracy}
    return log_and_register(uri, run_id, _tiny_model(seed), _clips(), name, tags, card)


# ---- pure ---------------------------------------------------------------------------------

def test_registered_name():
    assert registered_name("static", "r2plus1d_18", "synthetic:actions") == "static-r2plus1d_18-synthetic-actions"
    assert registered_name("vared", "x3d_s", "kinetics:/data/k400/") == "vared-x3d_s-kinetics-k400"
    assert registered_name("ANT", "mobilenet v2", "s3://bucket/K400") == "ant-mobilenet-v2-s3-k400"
    assert registered_name("resq", "r2plus1d_18", "coco-vid:/d/vid") == "resq-r2plus1d_18-coco-vid-vid"
    with pytest.raises(RegistryError):
        registered_name("static", "", "synthetic:actions")


def test_model_card_sections_and_no_secret():
    card = model_card("static-r2plus1d_18-synthetic-actions", "static", "r2plus1d_18", "synthetic:actions",
                      {"val_clip_top1": 0.51234}, {"gflops_avg": 0.0123}, CONFIG)
    for section in ("# static-r2plus1d_18-synthetic-actions", "## What", "## Data", "## Metrics", "## Cost",
                    "## Config", "## How to load"):
        assert section in card
    assert "| val_clip_top1 | 0.5123 |" in card and "| gflops_avg | 0.0123 |" in card
    assert 'mlflow.pytorch.load_model("models:/static-r2plus1d_18-synthetic-actions@candidate")' in card
    assert "card-secret-Hh72kq" not in card and '"aws_secret_access_key": "***"' in card


# ---- on the server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered(mlflow_server):
    name = f"static-r2plus1d_18-synthetic-actions-{uuid.uuid4().hex[:6]}"
    return mlflow_server, _register(mlflow_server, name)


def test_log_and_register_creates_version_with_alias_tags_and_card(registered, s3_server, tmp_path):
    uri, info = registered
    name = info["name"]
    assert info["version"] == 1 and info["model_uri"] == f"models:/{name}/1"
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias(name, "candidate")
    assert str(version.version) == "1"
    tags = version.tags
    assert {k: tags[k] for k in ("method", "backbone", "dataset", "gflops", "accuracy")} == {
        "method": "static", "backbone": "r2plus1d_18", "dataset": "synthetic:actions", "gflops": "0.012",
        "accuracy": "0.5"}
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert "## How to load" in version.description
    with use_tracking_uri(uri):  # models:/ URIs resolve through the process-wide registry URI
        files = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "m")))
    assert (files / "README.md").read_text().startswith(f"# {name}")
    assert (files / "data" / "model.pth").is_file()  # pickle format: the original nn.Module
    card = Path(client.download_artifacts(version.run_id, "model_card.md", str(tmp_path / "run")))
    assert "card-secret-Hh72kq" not in card.read_text()
    keys = [o["Key"] for page in s3_server.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3_server.bucket, Prefix="mlartifacts/") for o in page.get("Contents", [])]
    assert any(k.endswith("/artifacts/data/model.pth") for k in keys)


def test_load_by_alias_gives_identical_outputs(registered):
    uri, info = registered
    expected = _tiny_model(0).eval()(_clips())
    with use_tracking_uri(uri):
        loaded = mlflow.pytorch.load_model(f"models:/{info['name']}@candidate")
    assert type(loaded).__module__.startswith("dynvid.")
    assert torch.equal(loaded.eval()(_clips()), expected)
    assert torch.equal(load_registered(uri, info["name"])(_clips()), expected)


def test_promote_moves_alias_and_list_shows_it(registered):
    uri, info = registered
    name = info["name"]
    second = _register(uri, name, seed=1, accuracy=0.6)
    assert second["version"] == 2
    promote(uri, name, 1, "production")
    rows = {r["version"]: r for r in list_models(uri, name)}
    assert rows[1]["aliases"] == ["production"] and rows[2]["aliases"] == ["candidate"]
    assert rows[2]["metrics"]["accuracy"] == 0.6 and rows[1]["metrics"]["gflops"] == 0.012
    assert rows[1]["run_id"] and rows[1]["created"].startswith("20")
    promote(uri, name, "2", "production")  # moved, not duplicated
    rows = {r["version"]: r for r in list_models(uri, name)}
    assert rows[1]["aliases"] == [] and rows[2]["aliases"] == ["candidate", "production"]
    assert any(r["name"] == name for r in list_models(uri))
    with pytest.raises(RegistryError, match=f"'{name}' has no version 7 \\(versions: 1, 2\\)"):
        promote(uri, name, 7, "production")
    with pytest.raises(RegistryError, match="no registered model 'nope'"):
        promote(uri, "nope", 1, "production")
    with pytest.raises(RegistryError, match="invalid alias"):
        promote(uri, name, 1, "latest")


def test_cli_models_list_and_promote(registered, capsys):
    uri, info = registered
    name = info["name"]
    assert main(["models", "promote", name, "1", "--alias", "staging", "--tracking-uri", uri]) == 0
    assert f"{name}@staging -> version 1" in capsys.readouterr().out
    assert main(["models", "list", name, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["NAME", "VERSION", "ALIASES", "ACCURACY", "GFLOPS"]
    v1 = next(line.split() for line in out[1:] if line.split()[1] == "1")
    assert v1[0] == name and "staging" in v1[2].split(",") and v1[3] == "0.5000" and v1[4] == "0.012"
    assert main(["models", "promote", name, "9", "--alias", "staging", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynvid: error:") and "no version 9" in err and len(err.strip().splitlines()) == 1


def test_cli_unreachable_server_is_a_one_line_error(capsys):
    assert main(["models", "list", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("dynvid: error: MLflow tracking server http://127.0.0.1:9 is not reachable: "
                   "[Errno 111] Connection refused")


# ---- the server-less default --------------------------------------------------------------

def test_sqlite_registry_and_cli_default_uri(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["models", "list"]) == 2  # nothing trained here yet: no database is created
    assert "no MLflow database at runs/mlflow.db" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    name = registered_name("static", "r2plus1d_18", "synthetic:actions")
    info = _register(uri, name)
    assert info["version"] == 1
    assert torch.equal(load_registered(uri, name)(_clips()), _tiny_model(0).eval()(_clips()))
    assert list(tmp_path.glob("runs/mlartifacts/models/*/artifacts/data/model.pth"))
    assert not (tmp_path / "mlruns").exists()

    assert main(["models", "promote", name, "1", "--alias", "production"]) == 0  # default URI, relative
    assert main(["models", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"production"' in out and '"candidate"' in out
    assert mlflow.active_run() is None
