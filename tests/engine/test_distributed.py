"""Data-parallel training and fault tolerance on a real local Ray cluster."""

import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.checkpoint import load_checkpoint

from test_trainer import TINY

TWO_EPOCHS = TINY + ["optim.epochs=2", "train.final_test=false"]


def _fit(cfg, **kw):
    from dynvid.engine.trainer import fit

    return fit(cfg, method="static", **kw)


def test_two_worker_ddp_run(ray_cluster, tmp_path):
    cfg = apply_overrides(ExperimentConfig(), TWO_EPOCHS + [f"train.storage_path={tmp_path}", "train.name=ddp",
                                                            "train.num_workers=2", "optim.epochs=1"])
    result = _fit(cfg)
    m = result.metrics
    assert m["val_num_samples"] == 8  # both shards evaluated, no sample counted twice
    ckpt = load_checkpoint(result.stages[0].checkpoint_path)
    assert ckpt["train_state"]["global_step"] == 2  # 16 videos / (2 workers x 4) per worker
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped from DDP


def test_injected_failure_finishes_with_uninterrupted_metrics(ray_cluster, tmp_path):
    base = apply_overrides(ExperimentConfig(), TWO_EPOCHS + [f"train.storage_path={tmp_path}"])
    clean = _fit(apply_overrides(base, ["train.name=clean"]))
    marker = tmp_path / "failed-once"
    failed = _fit(apply_overrides(base, ["train.name=faulty", "train.max_failures=1"]),
                  inject_failure=f"{marker}:2:2")
    assert marker.exists()  # the worker really died mid-epoch 2
    for key in ("train_loss", "val_clip_top1", "val_clip_top5"):
        assert failed.metrics[key] == pytest.approx(clean.metrics[key], abs=1e-6), key
    a = load_checkpoint(clean.stages[0].checkpoint_path)["model"]
    b = load_checkpoint(failed.stages[0].checkpoint_path)["model"]
    assert all((a[k].float() - b[k].float()).abs().max() < 1e-5 for k in a)


def test_failure_without_retries_fails_the_run(ray_cluster, tmp_path):
    cfg = apply_overrides(ExperimentConfig(), TWO_EPOCHS + [f"train.storage_path={tmp_path}", "train.name=fragile"])
    with pytest.raises(Exception):
        _fit(cfg, inject_failure=f"{tmp_path / 'marker'}:1:2")


def test_ray_data_ingest(ray_cluster, tmp_path):
    cfg = apply_overrides(ExperimentConfig(), TWO_EPOCHS + [
        f"train.storage_path={tmp_path}", "train.name=raydata", "optim.epochs=1",
        "data.ingest=ray_data", "data.decoders=1", "data.cpus_per_decoder=1",
    ])
    result = _fit(cfg)
    ckpt = load_checkpoint(result.stages[0].checkpoint_path)
    assert ckpt["train_state"]["global_step"] == 4  # 16 videos streamed in batches of 4
    assert result.metrics["train_loss"] > 0 and result.metrics["val_num_samples"] == 8


def test_amp_and_gradient_accumulation(ray_cluster, tmp_path):
    cfg = apply_overrides(ExperimentConfig(), TWO_EPOCHS + [
        f"train.storage_path={tmp_path}", "train.name=amp-accum", "optim.epochs=1",
        "train.amp=true", "train.grad_accum_steps=2",
    ])
    result = _fit(cfg)
    ckpt = load_checkpoint(result.stages[0].checkpoint_path)
    assert ckpt["train_state"]["global_step"] == 4  # micro-batches
    sched = ckpt["train_state"]["scheduler"]
    assert sched["last_epoch"] == 2  # optimizer steps: 4 micro-batches / 2
    assert result.metrics["train_loss"] > 0 and all(v.dtype == torch.float32 for k, v in ckpt["model"].items()
                                                     if v.is_floating_point())
