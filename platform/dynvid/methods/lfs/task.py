"""LFSTask: the Task of ``dynvid.methods.lfs`` (its stages and hooks are described in
the package docstring, ``methods/lfs/__init__.py``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dynvid.backbones.pretrained import load_parts
from dynvid.config import ExperimentConfig
from dynvid.data.datasets import scene_config
from dynvid.data.detection import build_detection_dataset
from dynvid.data.synthetic import SPLITS
from dynvid.detection.anchors import anchors_per_cell
from dynvid.detection.losses import detection_loss_batched
from dynvid.methods.lfs import adaptive
from dynvid.methods.lfs.calibration import fit_score_calibration
from dynvid.methods.lfs.env import REWARDS
from dynvid.methods.lfs.evaluation import FixedPolicy, LearnedPolicy, evaluate_policies
from dynvid.methods.lfs.model import F0, InterleavedDetector, unwrap
from dynvid.methods.lfs.policy import load_policy
from dynvid.methods.lfs.presets import PRESETS
from dynvid.methods.lfs.report import detector_report, evenly_spaced, fit_triggers
from dynvid.task import PolicySpec, PolicyTask, Stage

__all__ = ["LFSTask", "build_detector", "random_actions"]


CALIBRATION_SEED = 0
"""Seed of the score calibration's random schedule: fixed, so that a detector has one
calibration whatever ``train.seed`` a policy run or a benchmark seed sets."""


def random_actions(steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sec. 3.3's training schedule: f0 on the first step, then a uniformly random extractor."""
    a = torch.randint(0, 2, (steps,), generator=generator)
    a[0] = F0
    return a


def build_detector(cfg: ExperimentConfig, num_classes: int) -> InterleavedDetector:
    c = cfg.lfs
    return InterleavedDetector(num_classes, c.f0_width, c.f1_width, c.f0_size, c.f1_size, c.memory_input,
                               c.state_channels, c.groups, c.state_clip, c.skip_f1_update, c.num_levels, c.tau)



class LFSTask(PolicyTask):
    """The Looking Fast and Slow detector Task (see the package docstring)."""

    name = "lfs"
    presets = PRESETS
    summary_columns = (("mAP@0.5", "val_AP50", "{:.4f}"), ("AP", "val_AP", "{:.4f}"),
                       ("f0 runs", "val_f0_fraction", "{:.3f}"))
    summary_metrics = (("AP50", "AP50", "{:.4f}"), ("AP", "AP", "{:.4f}"), ("f0_fraction", "f0_fraction", "{:.2f}"))
    #: act only at inference: an inference sweep varies them over one checkpoint
    inference_knobs = ("lfs.tau", "lfs.policy", "lfs.trigger", "lfs.score_threshold", "lfs.nms_iou",
                       "lfs.eval_frames", "lfs.calibration_videos")

    def __init__(self, cfg: ExperimentConfig):
        c = cfg.lfs
        if c.f0_size != 2 * c.f1_size or c.f0_size % 32:
            raise ValueError(f"lfs.f0_size must be a multiple of 32 and twice lfs.f1_size (f1 has one stride "
                             f"less, Sec. 3.1), got f0_size={c.f0_size}, f1_size={c.f1_size}")
        if c.state_channels % c.groups:
            raise ValueError(f"lfs.groups={c.groups} must divide lfs.state_channels={c.state_channels}")
        if c.unroll < 1 or c.tau < 0 or any(t < 0 for t in c.taus):
            raise ValueError(f"lfs.unroll must be >= 1 and lfs.tau / lfs.taus >= 0, got {c.unroll}, {c.tau}, {c.taus}")
        if not 0.0 <= c.image_fraction <= 1.0:
            raise ValueError(f"lfs.image_fraction is a share of items, in [0, 1]; got {c.image_fraction}")
        if c.calibration_videos < 0:
            raise ValueError(f"lfs.calibration_videos must be >= 0 (0: raw scores), got {c.calibration_videos}")
        if c.trigger is not None and not 0.0 < c.trigger < 1.0:
            raise ValueError(f"lfs.trigger is a quantile of the memory output's change, in (0, 1); got {c.trigger}")
        if c.trigger is not None and c.policy:
            raise ValueError(f"lfs.policy={c.policy!r} and lfs.trigger={c.trigger} are two interleaving policies: "
                             "set one")
        if c.trigger is not None and (c.policy_split or cfg.data.train_split) == cfg.data.val_split:
            raise ValueError(f"lfs.trigger fits its threshold on the lfs.policy_split videos, here the validation "
                             f"split {cfg.data.val_split!r} it is scored on: set lfs.policy_split to another split")
        if c.gamma < 0 or c.history < 1:
            raise ValueError(f"lfs.gamma must be >= 0 and lfs.history >= 1, got {c.gamma}, {c.history}")
        if c.reward not in REWARDS:
            raise ValueError(f"lfs.reward must be one of {sorted(REWARDS)}, got {c.reward!r}")
        if c.reward_horizon < 1:
            raise ValueError(f"lfs.reward_horizon must be >= 1 frame (1: Eq. 2), got {c.reward_horizon}")
        if c.min_f0_gap < 1:
            raise ValueError(f"lfs.min_f0_gap must be >= 1 frame (1: no gap, the paper's policy), got {c.min_f0_gap}")
        if c.dqn_learner_gpus < 0:
            raise ValueError(f"lfs.dqn_learner_gpus must be >= 0, got {c.dqn_learner_gpus}")
        if c.dqn_training_intensity is not None and c.dqn_training_intensity <= 0:
            raise ValueError(f"lfs.dqn_training_intensity must be > 0 or null, got {c.dqn_training_intensity}")
        if (c.latency_fps is not None and not (math.isfinite(c.latency_fps) and c.latency_fps > 0)) \
                or c.latency_videos < 1:
            raise ValueError(f"lfs.latency_fps must be > 0 or null and lfs.latency_videos >= 1, got "
                             f"{c.latency_fps}, {c.latency_videos}")
        if (c.policy_split is not None and cfg.data.dataset.startswith("synthetic")
                and c.policy_split not in SPLITS):
            raise ValueError(f"lfs.policy_split={c.policy_split!r}: the synthetic data has the splits "
                             f"{', '.join(SPLITS)}")
        self.cfg = cfg
        self.steps_per_epoch: int | None = None
        self.val_gt: dict | None = None
        self._costs: dict[str, float] | None = None
        self._actions_rng: torch.Generator | None = None
        self._calibration_data: tuple | None = None
        self.stages = (
            Stage("interleaved", f"interleaved detector, LSTM unrolled {c.unroll} steps, random extractor per step "
                  "(Sec. 3.3)", init_from_previous=False,
                  overrides=(f"data.clip_len={c.unroll}",)),
        )

    # ---- model and data ---------------------------------------------------------------------

    def test_dataset(self, cfg: ExperimentConfig):
        """No final test after the last epoch: the validation metrics are the method's own."""
        return None

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        return build_detector(cfg, cfg.model.num_classes or num_classes)

    pretrained_keys = ("lfs.f0_pretrained", "lfs.f1_pretrained")

    def load_pretrained(self, model: nn.Module, cfg: ExperimentConfig, stage: Stage) -> list[str]:
        """Each extractor's trunk from MobileNetV2 weights (Sec. 3.3: ImageNet): the trunk is
        ``features`` up to the last inverted residual, so the final conv and the classifier
        of the weights are not used."""
        c, (f0, f1) = cfg.lfs, unwrap(model).extractors
        trunk = dict(prefix="features.", partial=True)
        return load_parts([("lfs.f0_pretrained", c.f0_pretrained, f0, trunk),
                           ("lfs.f1_pretrained", c.f1_pretrained, f1, trunk)], stage.name)

    def run_label(self, cfg: ExperimentConfig) -> str:
        """The two extractors: width x resolution of each."""
        c = cfg.lfs
        return f"lfs_mnv2-{c.f0_width:g}x{c.f0_size}-{c.f1_width:g}x{c.f1_size}"

    def backbone_label(self, cfg: ExperimentConfig) -> str:
        """The name the registry files the model under (two MobileNetV2 extractors)."""
        return "mobilenet_v2"

    def example_input(self, cfg: ExperimentConfig) -> torch.Tensor:
        """A batch for the registered model's signature: 2 videos of 2 frames at f0's size."""
        return torch.zeros(2, 2, 3, cfg.lfs.f0_size, cfg.lfs.f0_size)

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """Engine hook: training clips and whole validation videos (:mod:`.data`)."""

        d, c = cfg.data, cfg.lfs
        scene = scene_config(d)
        common = dict(size=c.f0_size, clip_len=c.unroll, seed=cfg.train.seed, scene=scene,
                      content_seed=d.synthetic_seed, max_bad_fraction=d.max_bad_fraction)
        train = build_detection_dataset(d.dataset, d.train_split, mode="train", image_fraction=c.image_fraction,
                                        num_videos=d.synthetic_train_videos, **common)
        val = build_detection_dataset(d.dataset, d.val_split, mode="eval", eval_frames=c.eval_frames,
                                      num_videos=d.synthetic_val_videos, **common)
        self.val_gt = val.source.to_coco_gt(c.eval_frames)
        return train, val

    def eval_dataset(self, cfg: ExperimentConfig):
        """The validation videos alone (inference sweeps over ``lfs.tau`` / ``lfs.policy``)."""
        stage = self.stages[-1]
        return self.datasets(stage.config(cfg), stage)[1]

    @staticmethod
    def num_classes_from_state(state: dict) -> int:
        """Object classes of a detector state dict (the shared predictor's class conv)."""

        return int(state["head.predictor.cls.1.bias"].shape[0]) // anchors_per_cell()

    def calibration_data(self, cfg: ExperimentConfig):
        """``(videos, ground truth)`` the score calibration is fitted on: ``lfs.calibration_videos``
        training-split videos, whole, as the evaluation reads videos (the synthetic data's first
        ones; a real dataset's evenly spaced over its videos, with the split's ground truth).
        Kept for the task's later evaluations."""
        d, c = cfg.data, cfg.lfs
        n = c.calibration_videos
        if n < 1:
            raise ValueError(f"lfs.calibration_videos={n}: no videos to fit the score calibration on")
        key = (d.dataset, d.train_split, n, c.f0_size, c.unroll, cfg.train.seed, d.synthetic_seed, scene_config(d))
        if self._calibration_data is not None and self._calibration_data[0] == key:
            return self._calibration_data[1]
        videos = build_detection_dataset(d.dataset, d.train_split, mode="eval", size=c.f0_size, clip_len=c.unroll,
                                         num_videos=n, scene=scene_config(d), content_seed=d.synthetic_seed,
                                         seed=cfg.train.seed, max_bad_fraction=d.max_bad_fraction)
        gt = videos.source.to_coco_gt()  # a real split's whole ground truth: the fit scores the frames it saw
        videos = evenly_spaced(videos, n)
        self._calibration_data = (key, (videos, gt))
        return videos, gt

    @torch.no_grad()
    def calibrate(self, model: nn.Module, cfg: ExperimentConfig | None = None, progress=None) -> dict | None:
        """Set the detector's score calibration (:mod:`.calibration`) as ``lfs.calibration_videos``
        asks: fitted on :meth:`calibration_data`, or the identity (raw scores) when it is 0.
        Under ``torch.distributed`` rank 0's fit is broadcast, so every rank scores with the
        same one. Returns the fit's statistics (None for the identity)."""
        cfg = cfg or self.cfg
        c = cfg.lfs
        m = unwrap(model)
        if not c.calibration_videos:
            m.score_calibration.copy_(m.identity_calibration(m.score_calibration.shape[-1]).to(m.score_calibration))
            return None
        videos, gt = self.calibration_data(cfg)
        loader = torch.utils.data.DataLoader(videos, batch_size=cfg.data.batch_size, collate_fn=videos.collate_fn)
        _, stats = fit_score_calibration(m, loader, gt, score_threshold=c.score_threshold, nms_iou=c.nms_iou,
                                         max_detections=c.max_detections, seed=CALIBRATION_SEED, progress=progress)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(m.score_calibration, src=0)
        return stats

    # ---- training ---------------------------------------------------------------------------

    #: DDP: a clip whose random schedule never runs f1 leaves f1 without gradients
    ddp_kwargs = {"find_unused_parameters": True}

    def training_step(self, model: nn.Module, batch, stage: Stage):
        frames, targets = batch
        T = frames.shape[1]
        if self._actions_rng is None:  # the same schedule on every rank: one seed for all workers
            self._actions_rng = torch.Generator().manual_seed(self.cfg.train.seed)
        actions = random_actions(T, self._actions_rng)
        cls_logits, box_codes, anchors = model(frames, actions.to(frames.device))
        # every frame of every clip in one batched loss (a per-frame loop reads back ~6 values
        # per frame: a GPU synchronisation each); frames b-major, as the logits are laid out
        cls, loc = detection_loss_batched(
            cls_logits.flatten(0, 1), box_codes.flatten(0, 1), anchors,
            [target["boxes"][t] for target in targets for t in range(T)],
            [target["labels"][t] for target in targets for t in range(T)], focal=self.cfg.lfs.focal)
        cls_loss, loc_loss = cls.mean(), loc.mean()
        loss = cls_loss + loc_loss
        return loss, {"loss": loss.detach(), "cls_loss": cls_loss.detach(), "loc_loss": loc_loss.detach(),
                      "f0_fraction": float((actions == F0).float().mean())}  # actions: a CPU tensor

    # ---- evaluation -------------------------------------------------------------------------

    def policy(self, cfg: ExperimentConfig | None = None, model: nn.Module | None = None):
        """The evaluation policy: the learned one in ``lfs.policy`` if set, the change trigger
        ``lfs.trigger`` (its threshold fitted on ``model``'s memory outputs over the policy
        videos), else fixed ``lfs.tau``."""

        cfg = cfg or self.cfg
        c = cfg.lfs
        if c.policy:
            return LearnedPolicy(load_policy(c.policy), name=f"learned ({c.policy})", min_gap=c.min_f0_gap)
        if c.trigger is not None:
            if model is None:
                raise ValueError("lfs.trigger fits its threshold on the detector: LFSTask.policy needs the model")
            policy = fit_triggers(model, cfg, [c.trigger])[0]
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # every rank fitted on the same videos; rank 0's threshold for all, as with the calibration
                threshold = torch.tensor([policy.threshold], dtype=torch.float64,
                                         device=next(unwrap(model).parameters()).device)
                dist.broadcast(threshold, src=0)
                policy.threshold = float(threshold)
            return policy
        return FixedPolicy(c.tau)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, stage: Stage) -> dict[str, float]:
        """mAP@0.5 (``AP50``), AP@[.5:.95], fraction of f0 runs and amortized GFLOPs per frame of
        the evaluation policy over every frame of this worker's validation videos, after the
        score calibration is fitted on training videos (``lfs.calibration_videos``; it is saved
        with the checkpoint, and refitted, or reset by 0, at every evaluation)."""

        if self.val_gt is None:
            raise RuntimeError("LFSTask.evaluate needs the validation ground truth: call datasets() first")
        m = unwrap(model)
        c = self.cfg.lfs
        self.calibrate(m)  # the scores of the weights being evaluated on one scale (lfs.calibration), or raw
        policy = self.policy(model=m)
        r = evaluate_policies(m, loader, self.val_gt, [policy], score_threshold=c.score_threshold,
                              nms_iou=c.nms_iou, max_detections=c.max_detections)[policy.name]
        return {"AP50": r["AP50"], "AP": r["AP"], "f0_fraction": r["f0_fraction"],
                "gflops_avg": r["gmacs_per_frame"], "num_samples": r["videos"]}

    # ---- the adaptive policy (Sec. 3.4) --------------------------------------------------------

    #: knobs a policy sweep (``kind: policy``) may vary: each trial trains a DQN policy
    policy_knobs = ("lfs.gamma", "lfs.reward", "lfs.reward_horizon", "lfs.min_f0_gap", "lfs.dqn_iterations",
                    "lfs.dqn_lr", "lfs.dqn_discount", "lfs.episode_len", "lfs.dqn_epsilon_steps", "train.seed")

    def policy_runner_bundles(self, cfg: ExperimentConfig) -> list[dict]:
        """Resource bundles of the policy training's env runners (one each, besides the
        learner's): a policy sweep trial reserves them in its placement group."""
        if cfg.lfs.dqn_learner_gpus > 0:
            raise ValueError(f"lfs.dqn_learner_gpus={cfg.lfs.dqn_learner_gpus:g}: a policy sweep trial reserves "
                             "CPUs only (the learner's and the env runners'); train its policies with "
                             "lfs.dqn_learner_gpus=0")
        return [{"CPU": cfg.lfs.dqn_cpus_per_runner} for _ in range(cfg.lfs.dqn_env_runners)]

    def policy_spec(self, cfg: ExperimentConfig, model: str, local: str) -> PolicySpec:
        """Engine hook of policy training (:func:`dynvid.engine.rl.train_policy`): the DQN of
        Sec. 3.4 on the frozen detector, with ``cfg.lfs.gamma`` (see :mod:`.adaptive`)."""
        return adaptive.policy_spec(self, cfg, model, local)

    def evaluate_policy(self, cfg: ExperimentConfig, model: str, policy: str, out_dir: str, training: dict,
                        shared: dict, progress=print) -> dict:
        """The learned policy next to the fixed ones on every validation frame (see :mod:`.adaptive`)."""
        return adaptive.evaluate_policy(self, cfg, model, policy, out_dir, training, shared, progress)

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """The mAP-vs-τ curve (Fig. 6) with f0-only and f1-only ends, and sync vs async latency."""

        return detector_report(self, cfg, stages, out_dir)
