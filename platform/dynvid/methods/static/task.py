"""StaticClassification: the Task of ``dynvid.methods.static`` (its stages and hooks are described in
the package docstring, ``methods/static/__init__.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import ExperimentConfig
from dynvid.task import Stage, Task
from dynvid.metrics.classification import AccuracyMeter, average_view_scores
from dynvid.metrics.cost import CostAccumulator, CostMeter

__all__ = ["StaticClassification"]


class StaticClassification(Task):
    name = "static"
    stages = (Stage("base", "train the static backbone as a clip classifier", init_from_previous=False),)

    def __init__(self, label_smoothing: float = 0.0, view_chunk: int = 32):
        self.label_smoothing = label_smoothing
        self.view_chunk = view_chunk  # views per forward in multi-view testing (memory bound)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> StaticClassification:
        return cls(label_smoothing=cfg.optim.label_smoothing)

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        m = cfg.model
        return build_backbone(m.backbone, num_classes=m.num_classes or num_classes, width_mult=m.width_mult)

    def training_step(self, model: nn.Module, batch, stage: Stage):
        clips, labels = batch
        logits = model(clips)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, stage: Stage) -> dict[str, float]:
        """Clip-level (5-D batches) or multi-view video-level (6-D batches) accuracy and cost.

        The clips go to the model's device: the engine's loaders deliver them there already (a
        no-op), a plain ``DataLoader`` (sweeps, reports) delivers them on the host."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        acc = AccuracyMeter((1, 5))
        cost = CostAccumulator()
        multiview = False
        for clips, labels in loader:
            if clips.device != device:
                clips = clips.to(device, non_blocking=True)
            if clips.ndim == 6:  # (B, V, C, T, H, W): K-LeftCenterRight views
                multiview = True
                b, v = clips.shape[:2]
                flat = clips.flatten(0, 1)
                logits, macs = [], []
                for chunk in flat.split(self.view_chunk):
                    with CostMeter(model) as meter:
                        logits.append(model(chunk))
                    macs.append(meter.per_sample_macs)
                scores = average_view_scores(torch.cat(logits).view(b, v, -1))
                cost.update(torch.cat(macs).view(b, v).sum(1))  # a video's cost = all its views
            else:
                with CostMeter(model) as meter:
                    scores = model(clips)
                cost.update(meter.per_sample_macs)
            acc.update(scores, labels)
        model.train(was_training)
        prefix = "video" if multiview else "clip"
        top = acc.compute()
        summary = cost.summary()
        return {
            f"{prefix}_top1": top["top1"],
            f"{prefix}_top5": top["top5"],
            "gflops_avg": summary["gflops_avg"],
            "gflops_min": summary["gflops_min"],
            "gflops_max": summary["gflops_max"],
            "num_samples": float(acc.count),
        }
