"""VaredTask: the Task of ``dynvid.methods.vared`` (its stages and hooks are described in
the package docstring, ``methods/vared/__init__.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import ExperimentConfig
from dynvid.methods.static import StaticClassification
from dynvid.methods.vared.analysis import stage_report
from dynvid.methods.vared.convert import TARGETS, dynamic_layers, make_dynamic
from dynvid.methods.vared.dynconv import choices
from dynvid.methods.vared.efficiency import efficiency_loss
from dynvid.methods.vared.presets import PRESETS
from dynvid.task import Stage

__all__ = ["FINETUNE_LR_RATIO", "VaredTask"]

# Thesis finetune lr over base lr: 0.01 / 0.18 (R(2+1)D) and 0.1 / 1.8 (I3D, X3D) are both 1/18.
FINETUNE_LR_RATIO = 1.0 / 18.0


class VaredTask(StaticClassification):
    """The VA-RED² Task: static base → dynamic → efficiency finetune (see the package docstring).

    Evaluation is the static one (clip-1 on ``val``, video-1/5 with K-LeftCenterRight on
    ``test``, GFLOPs avg/min/max per clip from the cost meter); on a dynamic model the meter
    counts what the hard path executed per sample, gates and cheap operations included.
    """

    name = "vared"
    presets = PRESETS
    #: config keys that act only at inference (swept over one checkpoint, no retraining)
    inference_knobs = ("vared.gate_threshold",)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> VaredTask:
        return cls(cfg)

    def __init__(self, cfg: ExperimentConfig):
        super().__init__(label_smoothing=cfg.optim.label_smoothing)
        v, o = cfg.vared, cfg.optim
        if v.efficiency_weight < 0:
            raise ValueError(f"vared.efficiency_weight must be >= 0, got {v.efficiency_weight}")
        # fail on the driver, before the static stage trains, not when stage 2 starts
        choices(v.search_space, True, (1, 2, 4))
        if v.cheap_kernel < 1 or v.cheap_kernel % 2 == 0:
            raise ValueError(f"vared.cheap_kernel must be an odd positive int, got {v.cheap_kernel}")
        if not 0.0 <= v.gate_threshold < 1.0:
            raise ValueError(f"vared.gate_threshold must be in [0, 1), got {v.gate_threshold}")
        if v.gate_hidden < 1:
            raise ValueError(f"vared.gate_hidden must be >= 1, got {v.gate_hidden}")
        if cfg.model.backbone not in TARGETS:
            raise ValueError(f"VA-RED² has no dynamic-layer rule for backbone {cfg.model.backbone!r}; "
                             f"valid: {', '.join(sorted(TARGETS))}")
        self.efficiency_weight = v.efficiency_weight
        if v.gate_lr_mult <= 0:
            raise ValueError(f"vared.gate_lr_mult must be > 0, got {v.gate_lr_mult}")
        self.gate_lr_mult = v.gate_lr_mult
        dynamic_epochs = v.dynamic_epochs if v.dynamic_epochs is not None else o.epochs
        finetune_epochs = v.finetune_epochs if v.finetune_epochs is not None else max(1, o.epochs // 3)
        dynamic_lr = v.dynamic_lr if v.dynamic_lr is not None else o.lr
        finetune_lr = v.finetune_lr if v.finetune_lr is not None else o.lr * FINETUNE_LR_RATIO
        self.stages = (
            Stage("base", "train the static backbone (VA-RED² stage 1)", init_from_previous=False,
                  independent_of=("vared",)),
            Stage("dynamic", "dynamic model initialised from the base, accuracy loss (stage 2)",
                  overrides=(f"optim.epochs={dynamic_epochs}", f"optim.lr={dynamic_lr}")),
            Stage("finetune", f"finetune with the efficiency loss, λ_e={v.efficiency_weight:g} (stage 3)",
                  overrides=(f"optim.epochs={finetune_epochs}", f"optim.lr={finetune_lr}",
                             "optim.warmup_epochs=0")),
        )

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        m, d = cfg.model, cfg.data
        model = build_backbone(m.backbone, num_classes=m.num_classes or num_classes, width_mult=m.width_mult)
        if stage is not None and stage.name == "base":
            return model
        model = make_dynamic(model, m.backbone, cfg.vared, (3, d.clip_len, d.crop_size, d.crop_size))
        if stage is not None and stage.name == "dynamic":
            for _, layer in dynamic_layers(model):
                layer.explore = cfg.vared.explore
        return model

    def lr_multipliers(self, model: nn.Module, stage: Stage) -> dict[int, float]:
        """``vared.gate_lr_mult`` for every gate parameter in the efficiency finetune (engine
        hook, see ``build_optimizer``). Stage 2 keeps one lr: with no efficiency loss there,
        fast-moving gates only disturb the network (measured: ×50 in stage 2 cost 10 points)."""
        if stage.name != "finetune":
            return {}
        return {id(p): self.gate_lr_mult for _, layer in dynamic_layers(model) for p in layer.gate.parameters()}

    def training_step(self, model: nn.Module, batch, stage: Stage):
        clips, labels = batch
        logits = model(clips)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        correct = logits.argmax(1) == labels
        logs = {"acc": correct.float().mean()}  # tensors: the engine reads them once per log line
        layers = [layer for _, layer in dynamic_layers(model)]
        if layers:
            fractions = torch.stack([layer.last_fraction for layer in layers], 1)
            costs = self._layer_costs(layers, fractions.device)
            logs["exec_fraction"] = (fractions.detach() * costs / costs.sum()).sum(1).mean()
            if stage.name == "finetune" and self.efficiency_weight > 0:
                eff = efficiency_loss(fractions, costs, correct)
                logs["acc_loss"], logs["eff_loss"] = loss.detach(), eff.detach()
                loss = loss + self.efficiency_weight * eff
        logs["loss"] = loss.detach()
        return loss, logs

    def _layer_costs(self, layers: list, device: torch.device) -> torch.Tensor:
        """``(L,)`` full MACs C(f_l) of the dynamic layers at the last input size, on ``device``;
        kept per (sizes, device), so a step does not copy a fresh host tensor to the GPU (a copy
        from pageable memory waits for the queued kernels)."""
        macs = tuple(float(layer.full_macs) for layer in layers)
        cache = self.__dict__.setdefault("_cost_cache", {})
        if (macs, device) not in cache:
            cache.clear()
            cache[(macs, device)] = torch.tensor(macs, device=device)
        return cache[(macs, device)]

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """The paper-style table (static vs dynamic), measured clips/s, the per-layer per-class
        policy heatmap and the per-clip cost histogram (see :mod:`.analysis`)."""

        return stage_report(self, cfg, stages, out_dir)
