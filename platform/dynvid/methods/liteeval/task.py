"""LiteEvalTask: the Task of ``dynvid.methods.liteeval`` (its stages and hooks are described in
the package docstring, ``methods/liteeval/__init__.py``)."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from dynvid.backbones import BACKBONES, build_backbone
from dynvid.backbones.pretrained import load_parts
from dynvid.config import ExperimentConfig
from dynvid.methods.liteeval.gumbel import temperature_at
from dynvid.methods.liteeval.model import FrameClassifiers, LSTMBaseline, LiteEval, LiteEvalCore
from dynvid.methods.liteeval.presets import PRESETS
from dynvid.metrics.classification import AccuracyMeter
from dynvid.metrics.cost import CostAccumulator, CostMeter
from dynvid.task import Stage, Task, unwrap_model

__all__ = ["KNOBS", "LiteEvalTask", "usage_loss"]

#: knobs no stage before ``liteeval`` reads: a γ/λ sweep trains ``cnns`` and ``lstm`` once
KNOBS = ("liteeval.gamma", "liteeval.usage_weight", "liteeval.tau_start", "liteeval.tau_end",
         "liteeval.anneal_steps", "liteeval.budget", "liteeval.budgets")


def usage_loss(use: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 7's second term before λ: ``(mean_t B_t − γ)²`` averaged over videos; ``use`` is (B, T)."""
    return ((use.mean(1) - gamma) ** 2).mean()


class LiteEvalTask(Task):
    """The LiteEval Task (see the package docstring)."""

    name = "liteeval"
    presets = PRESETS
    # the CNN stage scores clips; the RNN stages whole videos, on val
    summary_columns = (("clip-1", "val_clip_top1", "{:.4f}"), ("clip-5", "val_clip_top5", "{:.4f}"),
                       ("video-1", "val_video_top1", "{:.4f}"), ("video-5", "val_video_top5", "{:.4f}"))
    summary_metrics = (("fine_reads", "fine_reads", "{:.2f}"),)
    #: acts only at inference: an inference sweep varies it over one checkpoint
    inference_knobs = ("liteeval.budget",)

    def __init__(self, cfg: ExperimentConfig):
        le, d, o = cfg.liteeval, cfg.data, cfg.optim
        for key in ("coarse_backbone", "fine_backbone"):
            if getattr(le, key) not in BACKBONES:
                raise ValueError(f"liteeval.{key}: unknown backbone {getattr(le, key)!r}; "
                                 f"valid: {', '.join(sorted(BACKBONES))}")
        clips = build_backbone(le.fine_backbone, num_classes=1, width_mult=0.125).takes_clips
        if build_backbone(le.coarse_backbone, num_classes=1, width_mult=0.125).takes_clips != clips:
            raise ValueError("liteeval.coarse_backbone and liteeval.fine_backbone must both be 2-D (frame) "
                             "or both 3-D (snippet) networks")
        if not clips and le.snippet_len != 1:
            raise ValueError(f"liteeval.snippet_len={le.snippet_len} needs 3-D backbones; 2-D ones take one frame")
        if le.steps < 1 or le.snippet_len < 1:
            raise ValueError(f"liteeval.steps and liteeval.snippet_len must be >= 1, got {le.steps}, {le.snippet_len}")
        if d.clip_len != le.steps * le.snippet_len:
            raise ValueError(f"data.clip_len={d.clip_len} must equal liteeval.steps × liteeval.snippet_len = "
                             f"{le.steps} × {le.snippet_len} (a video is cut into T steps)")
        if not 0.0 <= le.gamma <= 1.0:
            raise ValueError(f"liteeval.gamma is a fraction of steps, in [0, 1]; got {le.gamma}")
        if le.usage_weight < 0:
            raise ValueError(f"liteeval.usage_weight must be >= 0, got {le.usage_weight}")
        if le.features not in ("cache", "pixels"):
            raise ValueError(f"liteeval.features: unknown mode {le.features!r}; valid: cache, pixels")
        if le.rnn not in ("lstm", "gru"):
            raise ValueError(f"liteeval.rnn: unknown RNN {le.rnn!r}; valid: lstm, gru")
        if not 0 < le.coarse_hidden < le.fine_hidden:
            raise ValueError(f"liteeval: Eq. 5 needs 0 < coarse_hidden < fine_hidden, got {le.coarse_hidden}, "
                             f"{le.fine_hidden}")
        if le.budget is not None and le.budget < 1:
            raise ValueError(f"liteeval.budget must be >= 1 or null, got {le.budget}")
        temperature_at(0, le.tau_start, le.tau_end, le.anneal_steps or 1)  # checks the temperatures
        self.cfg = cfg
        self.steps_per_epoch: int | None = None
        cnn_epochs = le.cnn_epochs if le.cnn_epochs is not None else o.epochs
        rnn_epochs = le.rnn_epochs if le.rnn_epochs is not None else o.epochs
        rnn = (f"optim.epochs={rnn_epochs}", "optim.optimizer=adam", f"optim.lr={le.rnn_lr}", "optim.warmup_epochs=0",
               "optim.weight_decay=0",
               f"data.batch_size={le.rnn_batch_size or d.batch_size}")
        self.stages = (
            Stage("cnns", "finetune the coarse and fine CNNs as step classifiers (Sec. 4.1)", init_from_previous=False,
                  overrides=(f"data.clip_len={le.snippet_len}", f"optim.epochs={cnn_epochs}"),
                  independent_of=KNOBS),
            Stage("lstm", "LSTM baseline on the fine features (Table 1), CNNs frozen", overrides=rnn,
                  independent_of=KNOBS),
            Stage("liteeval", f"cRNN + fRNN + gate, Eq. 7 with γ={le.gamma:g}, λ={le.usage_weight:g}", overrides=rnn),
        )

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    # ---- model ------------------------------------------------------------------------------

    def test_dataset(self, cfg: ExperimentConfig):
        """No final test after the last epoch: the validation metrics are the method's own."""
        return None

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        le, n = cfg.liteeval, cfg.model.num_classes or num_classes
        coarse = build_backbone(le.coarse_backbone, num_classes=n, width_mult=le.coarse_width)
        fine = build_backbone(le.fine_backbone, num_classes=n, width_mult=le.fine_width)
        name = stage.name if stage is not None else "liteeval"
        if name == "cnns":
            return FrameClassifiers(coarse, fine, le.coarse_size)
        if name == "lstm":
            return LSTMBaseline(coarse, fine, n, le.fine_hidden, le.coarse_size, le.steps, le.snippet_len)
        core = LiteEvalCore(coarse.num_features, fine.num_features, n, le.coarse_hidden, le.fine_hidden, le.rnn)
        return LiteEval(coarse, fine, core, le.coarse_size, le.steps, le.snippet_len)

    # ---- pretrained weights (Sec. 4.1: ImageNet CNNs, finetuned on the target data) ----------

    pretrained_keys = ("liteeval.coarse_pretrained", "liteeval.fine_pretrained")

    def load_pretrained(self, model: nn.Module, cfg: ExperimentConfig, stage: Stage) -> list[str]:
        """The coarse and fine CNNs from their own weights (``model.{coarse,fine}.net``)."""
        le = cfg.liteeval
        return load_parts([("liteeval.coarse_pretrained", le.coarse_pretrained, model.coarse.net, {}),
                           ("liteeval.fine_pretrained", le.fine_pretrained, model.fine.net, {})], stage.name)

    # ---- data -------------------------------------------------------------------------------

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """Engine hook: the RNN stages read the feature cache; ``None`` = the engine's clip datasets."""
        if stage.name == "cnns" or cfg.liteeval.features != "cache":
            return None
        from dynvid.methods.liteeval.features import CachedFeatures  # import circle: features -> task

        uri = cfg.liteeval.feature_cache
        if not uri:
            raise ValueError(f"stage {stage.name}: liteeval.features=cache but no liteeval.feature_cache was set "
                             "(the driver sets it before the stage; pass one, or use liteeval.features=pixels)")
        self.cache = CachedFeatures(uri, cfg.data.val_split)
        return CachedFeatures(uri, cfg.data.train_split), self.cache

    def prepare_stage(self, cfg: ExperimentConfig, stage: Stage, init_from: str | None) -> list[str]:
        """Engine hook, on the driver before a stage: build (or find) the feature cache of the
        CNNs in ``init_from`` for the RNN stages, and point the stage at it."""
        if stage.name == "cnns" or cfg.liteeval.features != "cache" or cfg.liteeval.feature_cache:
            return []
        if not init_from:
            raise ValueError(f"stage {stage.name} builds the feature cache from the 'cnns' stage's checkpoint; "
                             "run that stage first or pass init_from")
        from dynvid.methods.liteeval.features import build_feature_cache  # import circle: features -> task

        cache = build_feature_cache(cfg, init_from)
        return [f"liteeval.feature_cache={cache.uri}"]

    # ---- training ---------------------------------------------------------------------------

    def _features(self, model: nn.Module, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(coarse, fine) features (B, T, D): from the cache, or from the frozen CNNs."""
        if isinstance(inputs, (tuple, list)):
            return inputs[0], inputs[1]
        m = unwrap_model(model)
        x = m.step_inputs(inputs)
        with torch.no_grad():
            coarse = torch.stack([m.coarse(x[:, t]) for t in range(m.steps)], 1)
            fine = torch.stack([m.fine(x[:, t]) for t in range(m.steps)], 1)
        return coarse, fine

    # The RNN stages call the (possibly DDP-wrapped) model itself on the features, so that
    # with several workers DDP averages the gradients of the RNNs and the gate.

    def tau(self, step: int) -> float:
        le = self.cfg.liteeval
        epochs = le.rnn_epochs if le.rnn_epochs is not None else self.cfg.optim.epochs
        anneal = le.anneal_steps or max(1, (self.steps_per_epoch or 1) * epochs)
        return temperature_at(step, le.tau_start, le.tau_end, anneal)

    def training_step(self, model: nn.Module, batch, stage: Stage):
        inputs, labels = batch
        if stage.name == "cnns":
            clips = inputs if unwrap_model(model).fine.net.takes_clips else inputs[:, :, 0]
            coarse, fine = model(clips)
            loss = F.cross_entropy(coarse, labels) + F.cross_entropy(fine, labels)
            return loss, {"loss": loss.detach(), "coarse_acc": (coarse.argmax(1) == labels).float().mean(),
                          "acc": (fine.argmax(1) == labels).float().mean()}
        features = self._features(model, inputs)
        m = unwrap_model(model)
        if stage.name == "lstm":
            logits = model(features)
            loss = F.cross_entropy(logits, labels)
            return loss, {"loss": loss.detach(), "acc": (logits.argmax(1) == labels).float().mean()}
        le = self.cfg.liteeval
        if getattr(m, "_host_step", None) is None:  # the buffer is read once per model, not every step
            m._host_step = int(m.global_step)
        tau = self.tau(m._host_step)
        logits = model(features, tau=tau)
        use = m.last_use
        ce = F.cross_entropy(logits, labels)  # Eq. 7: the last step's prediction
        usage = usage_loss(use, le.gamma)
        loss = ce + le.usage_weight * usage
        m.global_step += 1  # the checkpointed count (a resumed run anneals on from it)
        m._host_step += 1
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "usage_loss": usage.detach(),
                      "acc": (logits.argmax(1) == labels).float().mean(),
                      "fine_fraction": use.detach().float().mean(), "tau": tau}

    # ---- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, stage: Stage) -> dict[str, float]:
        """``cnns``: per-step accuracy of both CNNs. ``lstm`` / ``liteeval``: offline video
        accuracy, GFLOPs per video (the path that ran) and fine-feature reads."""
        m = unwrap_model(model)
        was = m.training
        m.eval()
        try:
            if stage.name == "cnns":
                return self._evaluate_cnns(m, loader)
            return self._evaluate_videos(m, loader, stage)
        finally:
            m.train(was)

    def _evaluate_cnns(self, m: FrameClassifiers, loader) -> dict[str, float]:
        acc_c, acc_f, cost = AccuracyMeter((1, 5)), AccuracyMeter((1, 5)), CostAccumulator()
        for clips, labels in loader:
            clips = clips if m.fine.net.takes_clips else clips[:, :, 0]
            with CostMeter(m) as meter:
                coarse, fine = m(clips)
            acc_c.update(coarse, labels)
            acc_f.update(fine, labels)
            cost.update(meter.per_sample_macs)
        s = cost.summary()
        return {"clip_top1": acc_f.compute()["top1"], "clip_top5": acc_f.compute()["top5"],
                "coarse_clip_top1": acc_c.compute()["top1"], "gflops_avg": s["gflops_avg"],
                "gflops_min": s["gflops_min"], "gflops_max": s["gflops_max"], "num_samples": float(acc_f.count)}

    def _evaluate_videos(self, m: nn.Module, loader, stage: Stage) -> dict[str, float]:
        from dynvid.methods.liteeval.evaluation import run_offline  # import circle: evaluation -> features -> task

        acc, cost = AccuracyMeter((1, 5)), CostAccumulator()
        reads_sum, reads_sq, n = 0.0, 0.0, 0
        cache = getattr(self, "cache", None)
        per_step = cache.manifest if cache is not None else None
        for inputs, labels in loader:
            logits, macs, reads = run_offline(m, inputs, per_step, budget=self.cfg.liteeval.budget)
            acc.update(logits, labels)
            cost.update(macs)
            reads_sum += float(reads.sum())
            reads_sq += float((reads ** 2).sum())
            n += len(labels)
        s = cost.summary()
        return {"video_top1": acc.compute()["top1"], "video_top5": acc.compute()["top5"], "gflops_avg": s["gflops_avg"],
                "gflops_min": s["gflops_min"], "gflops_max": s["gflops_max"], "fine_reads": reads_sum / max(n, 1),
                "fine_reads_sq": reads_sq / max(n, 1), "num_samples": float(n)}

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """Offline and online tables with the baselines of Table 1 / Fig. 2, and the plots of
        Fig. 2 and Fig. 4 (see :mod:`.evaluation`)."""
        from dynvid.methods.liteeval.evaluation import stage_report  # import circle: evaluation -> features -> task

        return stage_report(self, cfg, stages, out_dir)
