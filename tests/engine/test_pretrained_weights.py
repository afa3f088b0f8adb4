"""Pretrained weights on S3 (issue 22): the engine fetches an s3:// checkpoint to the node
before the method's loader, which reads local files only, sees it."""

from __future__ import annotations

import torch

from dynvid.backbones import build_backbone
from dynvid.config import ExperimentConfig, apply_overrides


def test_the_worker_loads_an_s3_checkpoint_from_its_local_copy(s3_server, tmp_path):
    """An s3:// pretrained setting reaches the loader as this node's copy of the checkpoint."""
    from dynvid.engine.checkpoint import save_checkpoint
    from dynvid.engine.storage import upload_dir
    from dynvid.engine.task import get_task
    from dynvid.engine.worker import local_pretrained

    net = build_backbone("mobilenet_v2", num_classes=5)
    save_checkpoint(tmp_path / "ckpt", net, config={}, metadata={"method": "static", "stage": "base", "epoch": 0})
    uri = s3_server.uri("pretrained/ckpt")
    upload_dir(tmp_path / "ckpt", uri)
    cfg = apply_overrides(ExperimentConfig(), ["model.backbone=mobilenet_v2", f"model.pretrained={uri}"])
    task = get_task("static", cfg)
    local = local_pretrained(task, cfg)
    assert not local.model.pretrained.startswith("s3://")
    other = build_backbone("mobilenet_v2", num_classes=5)
    task.load_pretrained(other, local, task.stages[0])
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
