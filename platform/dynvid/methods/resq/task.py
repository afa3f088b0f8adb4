"""ResQTask: the Task of ``dynvid.methods.resq`` (its stages and hooks are described in
the package docstring, ``methods/resq/__init__.py``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.backbones import ddrnet
from dynvid.config import ExperimentConfig
from dynvid.data.datasets import scene_config
from dynvid.data.segmentation import build_segmentation_dataset
from dynvid.methods.resq.evaluation import SCHEMES, calibration_sequences, evaluate_videos, quantized_copy
from dynvid.methods.resq.layers import parse_bits
from dynvid.methods.resq.presets import PRESETS
from dynvid.methods.resq.wrap import calibrate_model, quant_layers, reset_state, set_mode, wrap_model
from dynvid.task import Stage, Task, unwrap_model

__all__ = ["IGNORE_INDEX", "NETWORKS", "QAT_KEYS", "ResQTask", "build_network", "num_outputs"]

NETWORKS = ("ddrnet23_slim", "ddrnet23")
IGNORE_INDEX = 255
QAT_KEYS = ("resq.qat_epochs", "resq.qat_lr", "resq.bits", "resq.per_channel", "resq.period",
            "resq.calib_samples", "resq.calib_candidates")


def build_network(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    if cfg.resq.network not in NETWORKS:
        raise ValueError(f"resq.network must be one of {NETWORKS}, got {cfg.resq.network!r}")
    return getattr(ddrnet, cfg.resq.network)(num_classes)


def num_outputs(net: nn.Module) -> int:
    """Classes of a DDRNet, float or wrapped (its last convolution's outputs)."""
    conv = net.final_layer.conv2
    return (conv.conv if hasattr(conv, "conv") else conv).out_channels


class ResQTask(Task):
    """The ResQ segmentation Task (see the package docstring)."""

    name = "resq"
    presets = PRESETS
    summary_columns = (("mIoU float", "val_mIoU_float", "{:.4f}"), ("mIoU quant", "val_mIoU", "{:.4f}"),
                       ("GBOPs quant", "val_gbops_avg", "{:.2f}"))
    summary_metrics = (("mIoU_float", "mIoU_float", "{:.4f}"), ("mIoU", "mIoU", "{:.4f}"),
                       ("GBOPs", "gbops_avg", "{:.2f}"))
    #: act only at inference: an inference sweep varies them over one checkpoint
    inference_knobs = ("resq.bits", "resq.scheme", "resq.period", "resq.tau", "resq.per_channel",
                       "resq.calib_samples", "resq.calib_candidates", "resq.eval_frames")

    def __init__(self, cfg: ExperimentConfig):
        c = cfg.resq
        key, res, pool = parse_bits(c.bits)  # a bad configuration is reported before anything runs
        for spec in c.report_bits:
            parse_bits(spec)
        if c.scheme not in SCHEMES[1:]:
            raise ValueError(f"resq.scheme must be 'resq' or 'frame', got {c.scheme!r}")
        if c.scheme == "frame" and pool is not None:
            raise ValueError(f"resq.bits {c.bits!r} is a Dynamic-ResQ pool; frame quantization has no residuals")
        if c.period < 1 or c.calib_samples < 1 or c.calib_candidates < 2 or c.tau < 0 or c.qat_epochs < 0:
            raise ValueError("resq.period and resq.calib_samples must be >= 1, resq.calib_candidates >= 2, "
                             "resq.tau and resq.qat_epochs >= 0")
        if c.qat_epochs and pool is not None:
            raise ValueError("QAT trains static ResQ: give resq.bits without a pool (e.g. W8A8->W4A4)")
        self.cfg = cfg
        self._train = None
        self.num_classes: int | None = None
        stages = [Stage("float", "segmentation network in floating point on single frames",
                        init_from_previous=False,
                        independent_of=QAT_KEYS + self.inference_knobs)]
        if c.qat_epochs:
            stages.append(Stage("qat", f"QAT of ResQ {c.bits} on clips of T={c.period}, scales from PTQ, "
                                f"lr {c.qat_lr:g}, {c.qat_epochs} epochs (Sec. 5)",
                                overrides=(f"optim.epochs={c.qat_epochs}", f"optim.lr={c.qat_lr}",
                                           "optim.warmup_epochs=0")))
        self.stages = tuple(stages)

    # ---- model and data ---------------------------------------------------------------------

    def test_dataset(self, cfg: ExperimentConfig):
        """No final test after the last epoch: the validation metrics are the method's own."""
        return None

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        net = build_network(cfg, cfg.model.num_classes or num_classes)
        stage = stage or self.stages[-1]
        if stage.name != "qat":
            return net
        key, res, _ = parse_bits(cfg.resq.bits)
        wrap_model(net, key, res, cfg.resq.per_channel, tau=cfg.resq.tau)
        for layer in quant_layers(net):
            layer.enable_qat()
        return net

    def run_label(self, cfg: ExperimentConfig) -> str:
        """The network and its input size; QAT named with its epochs."""
        c, d = cfg.resq, cfg.data
        return f"resq_{c.network}x{d.synthetic_height}x{d.synthetic_width}{f'-qat{c.qat_epochs}' if c.qat_epochs else ''}"

    def backbone_label(self, cfg: ExperimentConfig) -> str:
        """The name the registry files the model under."""
        return cfg.resq.network + (f"_qat_{cfg.resq.bits}".replace("->", "_") if cfg.resq.qat_epochs else "")

    def example_input(self, cfg: ExperimentConfig) -> torch.Tensor:
        """A batch for the registered model's signature: 2 frames at the data's size."""
        return torch.zeros(2, 3, cfg.data.synthetic_height, cfg.data.synthetic_width)

    def _dataset(self, cfg: ExperimentConfig, split: str, mode: str, clip_len: int, num_videos: int):
        d = cfg.data
        return build_segmentation_dataset(d.dataset, split, clip_len=clip_len, mode=mode, seed=cfg.train.seed,
                                          scene=scene_config(d) if d.dataset.startswith("synthetic") else None,
                                          content_seed=d.synthetic_seed, num_videos=num_videos,
                                          max_frames=cfg.resq.eval_frames if mode == "test" else None,
                                          crop_size=cfg.resq.crop_size, max_bad_fraction=d.max_bad_fraction)

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """Engine hook: training frames (clips of T frames in the QAT stage) and whole val videos."""
        d, c = cfg.data, cfg.resq
        train = self._dataset(cfg, d.train_split, "train", c.period if stage.name == "qat" else 1,
                              d.synthetic_train_videos)
        val = self._dataset(cfg, d.val_split, "test", self._eval_len(cfg), d.synthetic_val_videos)
        self._train, self.num_classes = train, val.num_classes
        return train, val

    def _eval_len(self, cfg: ExperimentConfig) -> int:
        """Frames per val item: whole videos (their first ``eval_frames``) for the synthetic data;
        for folders, windows of ``eval_frames`` (default 30) frames, each starting with a keyframe."""
        d = cfg.data
        if d.dataset.startswith("synthetic"):
            return min(cfg.resq.eval_frames or d.synthetic_frames, d.synthetic_frames)
        period = cfg.resq.period  # a multiple of T, so that no window boundary adds a keyframe
        return max(period, (cfg.resq.eval_frames or 30) // period * period)

    def eval_dataset(self, cfg: ExperimentConfig):
        """The validation videos alone (inference sweeps over the ResQ knobs)."""
        stage = self.stages[-1]
        return self.datasets(stage.config(cfg), stage)[1]

    @staticmethod
    def num_classes_from_state(state: dict) -> int:
        key = "final_layer.conv2.bias" if "final_layer.conv2.bias" in state else "final_layer.conv2.conv.bias"
        return int(state[key].shape[0])

    def calibration(self, cfg: ExperimentConfig | None = None) -> list[torch.Tensor]:
        """PTQ calibration data: ``resq.calib_samples`` training frames in clips of T."""

        cfg = cfg or self.cfg
        c, d = cfg.resq, cfg.data
        clips = self._dataset(cfg, d.train_split, "train", c.period, d.synthetic_train_videos)
        return calibration_sequences(clips, c.calib_samples, c.period)

    # ---- training ---------------------------------------------------------------------------

    def training_step(self, model: nn.Module, batch, stage: Stage):
        frames, labels, _ = batch
        device = next(model.parameters()).device
        frames, labels = frames.to(device), labels.to(device)
        if stage.name == "float":
            logits = model(frames[:, 0])
            loss = F.cross_entropy(logits, labels[:, 0], ignore_index=IGNORE_INDEX)
            return loss, {"loss": loss.detach()}

        m = unwrap_model(model)
        layers = quant_layers(m)
        # NaN scales: QAT not initialised yet. Checked once per model (host flag), not every
        # step: the check reads every scale to the host, a CUDA synchronisation per layer.
        if not getattr(m, "_dynvid_qat_ready", False):
            if any(torch.isnan(p).any() for layer in layers for p in layer.qat_scale.values()):
                calibrate_model(m, [s.to(device) for s in self.calibration()], self.cfg.resq.period,
                                self.cfg.resq.calib_candidates)  # PTQ initialises QAT (Sec. 5)
                for layer in layers:
                    layer.init_qat_from_ptq()
            m._dynvid_qat_ready = True
        losses = []
        for t in range(frames.shape[1]):  # one clip: keyframe, then residuals that reach back to it
            set_mode(m, "key" if t % self.cfg.resq.period == 0 else "residual")
            losses.append(F.cross_entropy(model(frames[:, t]), labels[:, t], ignore_index=IGNORE_INDEX))
        loss = torch.stack(losses).mean()
        reset_state(m)  # the graph stays with the loss; the layers keep no reference to it
        return loss, {"loss": loss.detach()}

    # ---- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, stage: Stage) -> dict[str, float]:
        """The float network (``mIoU_float``, ``gflops_avg``) and the configured quantization
        (``mIoU``, ``gbops_avg/min/max``, ``bits``-dependent) over every frame of the val videos."""

        c = self.cfg.resq
        m = unwrap_model(model)
        n = num_outputs(m)
        fl = evaluate_videos(m, loader, "float", c.period, n, IGNORE_INDEX)
        q = quantized_copy(m, c.bits, self.calibration(), c.period, c.per_channel, c.tau, c.calib_candidates)
        r = evaluate_videos(q, loader, c.scheme, c.period, n, IGNORE_INDEX)
        return {"mIoU": r["mIoU"], "mIoU_float": fl["mIoU"], "gbops_avg": r["gbops_avg"],
                "gbops_min": r["gbops_min"], "gbops_max": r["gbops_max"], "gbops_float": fl["gbops_avg"],
                "gflops_avg": fl["gmacs_avg"], "gflops_min": fl["gmacs_avg"], "gflops_max": fl["gmacs_avg"],
                "num_samples": r["videos"]}

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """Frame quantization vs ResQ vs Dynamic-ResQ at ``resq.report_bits`` (mIoU, GBOPs) and a
        bit-width map figure."""
        from dynvid.methods.resq.report import job_report  # import circle: report -> task

        return job_report(self, cfg, stages, out_dir)
