"""LiteEval end to end on the shared Ray cluster: the job's three stages, the Ray Data feature
cache written to S3 (moto on 127.0.0.1), the report, the registered model, and the agreement
of the cached path with the pixel model (same decisions, same cost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides, set_arguments
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.liteeval import LiteEvalTask
from dynvid.methods.liteeval.evaluation import run_offline
from dynvid.methods.liteeval.features import build_feature_cache, load_split
from dynvid.methods.liteeval.presets import EMBEDDED, SMOKE

TINY = ["liteeval.coarse_hidden=16", "liteeval.fine_hidden=32", "data.synthetic_train_videos=16",
        "data.cpus_per_decoder=2",  # one actor takes the whole 2-CPU cluster: the writes must not wait for CPUs
        "data.synthetic_val_videos=6"]


@pytest.fixture(scope="module")
def liteeval_job(ray_cluster, s3_server, mlflow_server, tmp_path_factory):
    import liteeval
    tmp = tmp_path_factory.mktemp("liteeval")
    out = tmp / "result.json"
    storage = s3_server.uri("liteeval-job")
    args = ["--smoke-test", "--out", str(out), "--tracking-uri", mlflow_server,
            "--set", f"train.storage_path={storage}", "--set", "train.name=smoke-liteeval", *set_arguments(TINY)]
    assert liteeval.main(args) == 0
    cfg = apply_overrides(ExperimentConfig(), EMBEDDED + SMOKE + TINY + [f"train.storage_path={storage}"])
    return json.loads(out.read_text()), cfg, s3_server


def test_stages_report_and_registry(liteeval_job) -> None:
    result, cfg, s3 = liteeval_job
    assert list(result["stages"]) == ["cnns", "lstm", "liteeval"]
    assert result["stages"]["liteeval"]["epoch"] == 2 and "train_usage_loss" in result["stages"]["liteeval"]
    assert result["stages"]["cnns"]["val_gflops_avg"] > 0
    # the cache the driver built for the RNN stages, on S3: Parquet shards of both splits + manifest
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="liteeval-job/liteeval-features/")["Contents"]]
    assert any(k.endswith("/manifest.json") for k in keys)
    assert any("/rows/" in k and k.endswith(".parquet") for k in keys)
    report = result["report"]
    m = report["metrics"]
    assert {"liteeval_top1", "uniform_top1", "gflops_saving_vs_uniform", "lstm_top1", "top1_drop_vs_lstm"} <= set(m)
    # the LSTM comparison of Table 1 (the benchmark's target): its row of the saved table
    saved = json.loads(Path(next(a for a in report["artifacts"] if a.endswith(".json"))).read_text())
    lstm = next(r for r in saved["offline"] if r["method"] == "LSTM")
    assert m["gflops_ratio_vs_lstm"] == pytest.approx(m["liteeval_gflops"] / lstm["gflops"])
    assert m["top1_drop_vs_lstm"] == pytest.approx(lstm["top1"] - m["liteeval_top1"])
    names = sorted(Path(p).name for p in report["artifacts"])
    assert names == ["accuracy_vs_gflops.png", "fine_usage_per_class.png", "liteeval_report.json"]
    assert result["registered"]["name"] == "liteeval-r2plus1d_18-synthetic-actions"


def test_cache_is_reused_and_matches_the_pixel_model(liteeval_job) -> None:
    result, cfg, _ = liteeval_job
    ckpt = result["checkpoints"]["liteeval"]
    first = build_feature_cache(cfg, result["checkpoints"]["cnns"])
    again = build_feature_cache(cfg, ckpt)  # same CNN weights -> same cache, not rebuilt
    assert again.uri == first.uri and again.manifest["extract_time_s"] == first.manifest["extract_time_s"]
    data = load_split(first.uri, cfg.data.val_split)
    # one extraction over both splits: each split's rows are its own videos, in order
    train = load_split(first.uri, cfg.data.train_split)
    assert train["id"].tolist() == list(range(16)) and data["id"].tolist() == list(range(6))
    with pytest.raises(KeyError, match="no split 'test'"):
        load_split(first.uri, "test")
    task = LiteEvalTask(cfg)
    model = task.build_model(cfg, first.manifest["num_classes"], task.stage("liteeval"))
    model.load_state_dict(load_checkpoint(fetch_checkpoint(ckpt))["model"])
    model.eval()
    # the last train video's row holds that video's features (items 15 and 16 border the splits)
    last = build_clip_dataset(cfg.data, cfg.data.train_split, "val")[15][0][None]
    with torch.no_grad():
        x = model.step_inputs(last)
        coarse = torch.stack([model.coarse(x[:, t]) for t in range(model.steps)], 1)
    assert torch.allclose(coarse[0], torch.from_numpy(train["coarse"][15]), atol=1e-4)
    videos = build_clip_dataset(cfg.data, cfg.data.val_split, "val")
    video = torch.stack([videos[i][0] for i in range(len(videos))])
    assert data["label"].tolist() == [videos[i][1] for i in range(len(videos))]
    with torch.no_grad():
        x = model.step_inputs(video)
        coarse = torch.stack([model.coarse(x[:, t]) for t in range(model.steps)], 1)
        assert torch.allclose(coarse, torch.from_numpy(data["coarse"]), atol=1e-4)
        pixel_logits, pixel_macs, pixel_reads = run_offline(model, video, None)
        cache_logits, cache_macs, cache_reads = run_offline(
            model, (torch.from_numpy(data["coarse"]), torch.from_numpy(data["fine"])), first.manifest)
    assert torch.equal(pixel_reads.double(), cache_reads.double())  # the same decisions
    assert torch.allclose(pixel_logits, cache_logits, atol=1e-4)
    assert torch.allclose(pixel_macs, cache_macs, rtol=1e-6)  # the cache's cost = what the pixel path ran
