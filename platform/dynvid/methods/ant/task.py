"""ANTTask: the Task of ``dynvid.methods.ant`` (its stages and hooks are described in
the package docstring, ``methods/ant/__init__.py``)."""

from __future__ import annotations

import random

import torch
from torch import distributed as dist
from torch import nn

from dynvid.backbones.efficientnet import RATIOS
from dynvid.backbones.pretrained import load_parts
from dynvid.config import ExperimentConfig
from dynvid.data.datasets import scene_config
from dynvid.data.detection import build_detection_dataset
from dynvid.detection.efficientdet import ANCHOR_RATIOS, ANCHOR_SCALES
from dynvid.methods.ant.evaluation import AntMode, NonTemporalMode, StaticMode, evaluate_modes
from dynvid.methods.ant.model import ELASTIC, ANTDetector
from dynvid.methods.ant.modules import LARGEST, SMALLEST, bn_buffers, recalibrate_bn
from dynvid.methods.ant.nas import BUDGET_FLOOR, SEARCHES, search_within, subnet_cost
from dynvid.methods.ant.presets import PRESETS
from dynvid.methods.ant.training import gate_step, sandwich_step, stage_costs, static_step
from dynvid.task import Stage, Task, unwrap_model

__all__ = ["ANTTask", "GATE_KEYS", "SUPERNET_KEYS", "build_detector", "frame_targets", "prior_ratios", "rank0_table"]

GATE_KEYS = ("ant.temporal", "ant.gate_epochs", "ant.gate_lr", "ant.gate_lr_mult", "ant.fusion_lr_mult",
             "ant.key_every",
             "ant.key_stride_max", "ant.gumbel_tau", "ant.fusion_kd_weight", "ant.cost_weight", "ant.cost_target",
             "ant.cost_metric", "ant.gate_prior", "ant.gate_prior_weight", "ant.nas_candidates", "ant.nas_videos",
             "ant.nas_search")
SUPERNET_KEYS = ("ant.supernet_epochs", "ant.sandwich_random", "ant.kd_weight")


def build_detector(cfg: ExperimentConfig, num_classes: int, temporal: bool | None = None) -> ANTDetector:
    c = cfg.ant
    return ANTDetector(num_classes, c.fpn_channels, c.fpn_layers, c.head_repeats, width_mult=c.width_mult,
                       temporal=c.temporal if temporal is None else temporal)


def frame_targets(targets: list[dict], t: int) -> list[dict]:
    """The ``boxes``/``labels`` of frame ``t`` of each clip's target (:func:`dynvid.data.detection.collate`)."""
    return [{"boxes": tg["boxes"][t], "labels": tg["labels"][t]} for tg in targets]


def rank0_table(costs: torch.Tensor) -> torch.Tensor:
    """Rank 0's copy of a per-worker cost table under ``torch.distributed`` (a copy of
    ``costs`` otherwise): a search whose candidates depend on the table must see the same one on
    every rank, or the ranks score different subnets and their collective AP calls mismatch."""
    table = costs.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(table, 0)
    return table


def prior_ratios(value: str) -> tuple[int, ...]:
    """The subnet a named ``ant.gate_prior`` starts the gates at: one ratio per elastic stage,
    comma-separated, each one of ``RATIOS`` (``"1,6,2,1,1,1"``). Raises ``ValueError`` naming
    the key and what it accepts."""
    accepted = (f"null, 'nas' or {len(ELASTIC)} comma-separated ratios in {RATIOS[0]}..{RATIOS[-1]}, one per "
                f"elastic stage (e.g. '1,6,2,1,1,1')")
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != len(ELASTIC) or not all(p.isdecimal() and int(p) in RATIOS for p in parts):
        raise ValueError(f"ant.gate_prior must be {accepted}, got {value!r}")
    return tuple(int(p) for p in parts)


class ANTTask(Task):
    """The ANT detector Task (see the package docstring)."""

    name = "ant"
    presets = PRESETS
    summary_columns = (("mAP@0.5", "val_AP50", "{:.4f}"), ("AP", "val_AP", "{:.4f}"))
    summary_metrics = (("AP50", "AP50", "{:.4f}"), ("AP", "AP", "{:.4f}"))
    #: act only at inference: an inference sweep varies them over one checkpoint
    inference_knobs = ("ant.key_threshold", "ant.score_threshold", "ant.nms_iou", "ant.max_detections",
                       "ant.eval_frames")
    #: DDP: the static and supernet stages never run the fusion modules and gates
    ddp_kwargs = {"find_unused_parameters": True}

    def __init__(self, cfg: ExperimentConfig):
        c = cfg.ant
        if c.image_size % 32:
            raise ValueError(f"ant.image_size must be a multiple of 32 (P5 has stride 32), got {c.image_size}")
        if c.key_every < 2:
            raise ValueError(f"ant.key_every must be >= 2 (one key frame in key_every), got {c.key_every}")
        if c.key_stride_max < 1:
            raise ValueError(f"ant.key_stride_max must be >= 1 (1: consecutive frames), got {c.key_stride_max}")
        for key in ("gate_lr_mult", "fusion_lr_mult"):
            if not getattr(c, key) > 0:
                raise ValueError(f"ant.{key} must be > 0, got {getattr(c, key)}")
        if c.cost_target is not None and not 0 < c.cost_target <= 1:
            raise ValueError(f"ant.cost_target must be in (0, 1] (a fraction of the full network's elastic stages) "
                             f"or null, got {c.cost_target}")
        if c.gate_prior not in (None, "nas"):
            prior_ratios(c.gate_prior)  # a named subnet, or a ValueError that says what is accepted
        if c.gate_prior == "nas" and c.cost_target is None:
            raise ValueError("ant.gate_prior='nas' searches a subnet within ant.cost_target: set ant.cost_target")
        if c.nas_candidates < 1:
            raise ValueError(f"ant.nas_candidates must be >= 1, got {c.nas_candidates}")
        if c.nas_search not in SEARCHES:
            raise ValueError(f"ant.nas_search must be one of {SEARCHES}, got {c.nas_search!r}")
        if not 0 < c.gate_prior_weight < 1:
            raise ValueError(f"ant.gate_prior_weight must be in (0, 1), got {c.gate_prior_weight}")
        if c.key_threshold < 0 or c.gumbel_tau <= 0 or c.width_mult <= 0:
            raise ValueError(f"ant.key_threshold must be >= 0, ant.gumbel_tau and ant.width_mult > 0; got "
                             f"{c.key_threshold}, {c.gumbel_tau}, {c.width_mult}")
        if c.gate_epochs < 1 or c.supernet_epochs < 0 or c.recalib_batches < 1 or c.latency_rounds < 1:
            raise ValueError("ant.gate_epochs, ant.recalib_batches and ant.latency_rounds must be >= 1 and "
                             "ant.supernet_epochs >= 0")
        self.cfg = cfg
        self.val_gt: dict | None = None
        self._train = None
        self._costs: torch.Tensor | None = None
        self._rng = random.Random(cfg.train.seed)  # the same subnets on every rank (DDP)
        supernet_epochs = c.supernet_epochs or cfg.optim.epochs
        self.stages = (
            Stage("static", "standalone EfficientDet-D0 (every ratio 6) on single frames (Sec. 4.1)",
                  init_from_previous=False,
                  independent_of=GATE_KEYS + SUPERNET_KEYS),
            Stage("supernet", f"weight-sharing supernet, sandwich rule + in-place KD, {supernet_epochs} epochs "
                  "(Sec. 3.1)", overrides=(f"optim.epochs={supernet_epochs}",),
                  independent_of=GATE_KEYS),
            Stage("gates", f"{'fusion + ' if c.temporal else 'non-temporal '}gates, stem frozen, 1 key in "
                  f"{c.key_every}, lr {c.gate_lr:g}, {c.gate_epochs} epochs (Sec. 3.2)",
                  overrides=(f"optim.epochs={c.gate_epochs}", f"optim.lr={c.gate_lr}")),
        )

    # ---- model and data ---------------------------------------------------------------------

    def test_dataset(self, cfg: ExperimentConfig):
        """No final test after the last epoch: the validation metrics are the method's own."""
        return None

    def build_model(self, cfg: ExperimentConfig, num_classes: int, stage: Stage | None = None) -> nn.Module:
        model = build_detector(cfg, cfg.model.num_classes or num_classes)
        if stage is not None and stage.name == "gates":
            model.freeze_stem()
        return model

    pretrained_keys = ("ant.backbone_pretrained",)

    def load_pretrained(self, model: nn.Module, cfg: ExperimentConfig, stage: Stage) -> list[str]:
        """The EfficientNet-B0 backbone (every ratio 6 is B0) from ImageNet weights, as
        EfficientDet starts (the classifier is left out: the supernet has none of its own)."""
        return load_parts([("ant.backbone_pretrained", cfg.ant.backbone_pretrained, unwrap_model(model).backbone, {})],
                          stage.name)

    def run_label(self, cfg: ExperimentConfig) -> str:
        """The supernet's width and resolution; the non-temporal baseline named as such."""
        c = cfg.ant
        width = "" if c.width_mult == 1.0 else f"-w{c.width_mult:g}"
        return f"ant{'' if c.temporal else '-nontemporal'}_effdet-d0{width}x{c.image_size}"

    def backbone_label(self, cfg: ExperimentConfig) -> str:
        """The name the registry files the model under."""
        return "efficientdet_d0" + ("" if cfg.ant.width_mult == 1.0 else f"_w{cfg.ant.width_mult:g}")

    def example_input(self, cfg: ExperimentConfig) -> torch.Tensor:
        """A batch for the registered model's signature: 2 frames at the input size."""
        return torch.zeros(2, 3, cfg.ant.image_size, cfg.ant.image_size)

    def datasets(self, cfg: ExperimentConfig, stage: Stage):
        """Engine hook: training frames (clips of ``ant.key_every`` frames in the gates stage)
        and whole validation videos."""

        d, c = cfg.data, cfg.ant
        common = dict(size=c.image_size, seed=cfg.train.seed, scene=scene_config(d), content_seed=d.synthetic_seed,
                      max_bad_fraction=d.max_bad_fraction)
        gates = stage.name == "gates"
        train = build_detection_dataset(d.dataset, d.train_split, mode="train", num_videos=d.synthetic_train_videos,
                                        clip_len=c.key_every if gates else 1,
                                        frame_stride=(1, c.key_stride_max) if gates else 1, **common)
        val = build_detection_dataset(d.dataset, d.val_split, mode="eval", eval_frames=c.eval_frames, clip_len=1,
                                      num_videos=d.synthetic_val_videos, **common)
        self.val_gt = val.source.to_coco_gt(c.eval_frames)
        self._train = train
        return train, val

    def eval_dataset(self, cfg: ExperimentConfig):
        """The validation videos alone (inference sweeps over ``ant.key_threshold``)."""
        stage = self.stages[-1]
        return self.datasets(stage.config(cfg), stage)[1]

    @staticmethod
    def num_classes_from_state(state: dict) -> int:
        """Object classes of a detector state dict (the class net's prediction conv)."""

        return int(state["head.cls_net.predict.1.bias"].shape[0]) // (len(ANCHOR_SCALES) * len(ANCHOR_RATIOS))

    # ---- training ---------------------------------------------------------------------------

    def lr_multipliers(self, model: nn.Module, stage: Stage) -> dict[int, float]:
        """``ant.gate_lr_mult`` for the gates' parameters and ``ant.fusion_lr_mult`` for the
        fusion modules' in stage 2 (engine hook, see ``build_optimizer``); the network keeps
        ``ant.gate_lr``."""
        if stage.name != "gates":
            return {}
        m, c = unwrap_model(model), self.cfg.ant
        mults = {}
        if c.fusion_lr_mult != 1.0 and m.fusions is not None:  # the non-temporal network has none
            mults.update({id(p): c.fusion_lr_mult for p in m.fusions.parameters()})
        if c.gate_lr_mult != 1.0:
            mults.update({id(p): c.gate_lr_mult for p in m.gates.parameters()})
        return mults

    def training_step(self, model: nn.Module, batch, stage: Stage):
        frames, targets = batch
        c = self.cfg.ant
        if stage.name == "static":
            return static_step(model, frames[:, 0], frame_targets(targets, 0))
        if stage.name == "supernet":
            return sandwich_step(model, frames[:, 0], frame_targets(targets, 0), self._rng, c.sandwich_random,
                                 c.kd_weight)
        per_frame = [frame_targets(targets, t) for t in range(frames.shape[1])]
        clip_targets = [[per_frame[t][b] for t in range(frames.shape[1])] for b in range(frames.shape[0])]
        m = unwrap_model(model)
        first = not m.width_stats_ready  # the first step of stage 2 (a resumed run has them in its checkpoint)
        if first:
            m.calibrate_width_statistics(self.recalibration_batches())
        if self._costs is None:  # measured once per worker, on its own hardware; kept on its device
            self._costs = stage_costs(model, c.image_size, c.cost_metric, channels_last=c.channels_last).to(frames.device)
        if first and c.gate_prior is not None:  # after the statistics: the search scores subnets with them
            self.set_gate_prior(m, self._costs)
        return gate_step(model, frames, clip_targets, c.gumbel_tau, c.key_every, c.fusion_kd_weight, c.cost_weight,
                         self._costs, c.cost_target)

    def end_epoch(self, model: nn.Module, stage: Stage, say) -> dict[str, float]:
        """Stage 2 (engine hook, before the evaluation and checkpoint): the per-ratio statistics
        this epoch's training left stale are recalibrated
        (:meth:`~.model.ANTDetector.refresh_stale_width_statistics`), so the checkpoint's
        static subnets (the NAS rows and their search) normalize with statistics of the current
        weights, while the ratios the gates ran with enough samples keep what they tracked.
        Stale: updated this epoch with fewer than 7 batches' worth of samples
        (:func:`~.modules.fresh_updates` at BatchNorm's momentum 0.1, used as a sample budget),
        counted on rank 0 under DDP (:func:`rank0_table`). Logs ``width_stats_refreshed``, the
        number of (stage, ratio) statistics refreshed."""
        m = unwrap_model(model)
        if stage.name != "gates" or not m.width_stats_ready:
            return {}
        counts = rank0_table(m.width_update_counts())  # every rank refreshes the same ratios (DDP)
        refreshed = m.refresh_stale_width_statistics(self.recalibration_batches, counts)  # decoded if any is stale
        if refreshed:
            say("[dynvid] stale per-ratio statistics recalibrated (stage: ratios): "
                + "; ".join(f"{s + 1}: {','.join(map(str, rs))}" for s, rs in refreshed.items()))
        return {"width_stats_refreshed": float(sum(len(rs) for rs in refreshed.values()))}

    def set_gate_prior(self, model: ANTDetector, costs: torch.Tensor, say=print) -> dict:
        """``ant.gate_prior="nas"``: the best static subnet by AP on the search videos among
        ``ant.nas_candidates`` (``ant.nas_search``; the sensitivity search scores its 31-subnet
        table first) within ``[0.9, 1] × ant.cost_target`` of ``costs`` (a
        :func:`~.training.stage_costs` table), each gate biased toward its stage's ratio
        (:meth:`~.modules.DynamicGate.set_prior`). Each worker measures its own table, so the
        search uses rank 0's (:func:`rank0_table`); every rank scores its share of the search
        videos and all see the same AP, so all set the same biases. Where even the cheapest
        subnet costs more than ``ant.cost_target`` on this hardware (a latency table on a GPU,
        where a narrow stage takes about as long as a wide one), the search runs within
        ``[1, 1/0.9]`` × that cheapest cost instead and says so: a budget below what the
        hardware allows asks for the cheapest networks, not for an error at stage 2's first
        step. Returns ``{"ratios", "search_AP", "cost", "budget", "tried"}`` (``budget``: the
        one searched; ``tried``: candidates scored in full). A named subnet
        (``ant.gate_prior="1,6,2,1,1,1"``) sets the biases toward it without a search
        (``search_AP`` and ``budget`` None, ``tried`` 0)."""
        c = self.cfg.ant
        table = rank0_table(costs).cpu().tolist()  # every rank ranks the same subnets; lists: 6^6 cheap lookups
        searched = c.gate_prior == "nas"
        if searched:
            ratios, ap, tried, budget = self._search_prior(model, table, say)
        else:
            ratios, ap, tried, budget = prior_ratios(c.gate_prior), None, 0, None
        for gate, r in zip(model.gates, ratios):
            gate.set_prior(RATIOS.index(r), c.gate_prior_weight)
        found = {"ratios": list(ratios), "search_AP": ap, "cost": subnet_cost(table, ratios), "budget": budget,
                 "tried": tried}
        how = f"search AP {ap:.4f}, best of {tried}" if searched else "not searched"
        say(f"[dynvid] gate prior: subnet {ratios}{'' if searched else ' as named by ant.gate_prior'} (cost "
            f"{found['cost']:.3f} of the full elastic stages, {how}); each gate starts at {c.gate_prior_weight:g} "
            f"on its ratio")
        return found

    def _search_prior(self, model: ANTDetector, table: list[list[float]], say) -> tuple:
        """:meth:`set_gate_prior`'s search on rank 0's cost ``table``: ``(ratios, search AP,
        candidates scored in full, the budget searched)``."""
        c = self.cfg.ant
        loader, gt = self.search_videos(self.cfg, shard=True)
        post = c.post_processing()

        def score(ratios):
            return evaluate_modes(model, loader, gt, [StaticMode(ratios)], only_seen=True, **post)["static"]["AP"]

        cheapest = sum(min(row) for row in table)  # stages are costed independently
        budget = c.cost_target
        if cheapest > budget:
            budget = cheapest / BUDGET_FLOOR
            say(f"[dynvid] gate prior: the cheapest subnet costs {cheapest:.3f} of the full elastic stages on this "
                f"hardware, above ant.cost_target={c.cost_target:g}; searching within [{cheapest:.3f}, {budget:.3f}]")
        ratios, ap, tried = search_within(c.nas_search, random.Random(self.cfg.train.seed),
                                          lambda r: subnet_cost(table, r), budget, c.nas_candidates, score, say)
        return ratios, ap, tried, budget

    # ---- evaluation -------------------------------------------------------------------------

    def search_videos(self, cfg: ExperimentConfig | None = None, shard: bool = False):
        """The NAS search's videos: the first ``ant.nas_videos`` of the training split, as
        whole videos in evaluation mode (never the val videos). ``shard``: under
        ``torch.distributed`` each rank takes every world-size-th of them. Returns
        ``(loader, coco ground truth)``."""
        cfg = cfg or self.cfg
        d, c = cfg.data, cfg.ant
        search = build_detection_dataset(d.dataset, d.train_split, mode="eval", size=c.image_size, clip_len=1,
                                         eval_frames=c.eval_frames, num_videos=d.synthetic_train_videos,
                                         seed=cfg.train.seed, content_seed=d.synthetic_seed, scene=scene_config(d),
                                         max_bad_fraction=d.max_bad_fraction)
        picked = range(min(c.nas_videos, len(search)))
        if shard and dist.is_available() and dist.is_initialized():
            picked = picked[dist.get_rank()::dist.get_world_size()]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(search, picked), batch_size=max(1, d.batch_size),
                                             collate_fn=search.collate_fn)
        return loader, search.source.to_coco_gt(c.eval_frames)

    def recalibration_batches(self, cfg: ExperimentConfig | None = None):
        """``ant.recalib_batches`` batches of training frames (first frame of each item)."""
        if self._train is None:
            raise RuntimeError("ANTTask: call datasets() before recalibrating BatchNorm")
        cfg = cfg or self.cfg
        loader = torch.utils.data.DataLoader(self._train, batch_size=cfg.data.batch_size, shuffle=False,
                                             collate_fn=self._train.collate_fn)
        out = []
        for frames, _ in loader:
            out.append(frames[:, 0])
            if len(out) == cfg.ant.recalib_batches:
                break
        return out

    def recalibrated(self, model: ANTDetector, ratios, batches) -> None:
        """Recompute BatchNorm statistics for the static subnet ``ratios`` (Sec. 3.1 practice)."""

        device = next(model.parameters()).device
        recalibrate_bn(model, lambda x: model.forward_static(x.to(device), ratios), batches)

    def modes(self, cfg: ExperimentConfig | None = None) -> list:
        """The evaluation mode of the final model: adaptive key frames or the non-temporal gates."""

        c = (cfg or self.cfg).ant
        return [AntMode(c.key_threshold, name="ANT")] if c.temporal else [NonTemporalMode()]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, stage: Stage) -> dict[str, float]:
        """AP@[.5:.95] (``AP``), AP50 and GMACs per frame over every frame of the val videos:
        the full network (static), the recalibrated largest and smallest subnets (supernet,
        BatchNorm restored after), or the dynamic network (gates)."""

        if self.val_gt is None:
            raise RuntimeError("ANTTask.evaluate needs the validation ground truth: call datasets() first")
        m = unwrap_model(model)
        c = self.cfg.ant
        post = c.post_processing()
        if stage.name == "gates":
            mode = self.modes()[0]
            r = evaluate_modes(m, loader, self.val_gt, [mode], **post)[mode.name]
            out = {k: r[k] for k in ("AP", "AP50", "key_fraction", "mean_ratio")}
            if r["configs"]["top_share"] is not None:  # 1.0: every non-key frame ran one configuration
                out["config_top_share"] = r["configs"]["top_share"]
        elif stage.name == "static":
            r = evaluate_modes(m, loader, self.val_gt, [StaticMode()], **post)["static"]
            out = {"AP": r["AP"], "AP50": r["AP50"]}
        else:
            saved, batches = bn_buffers(m), self.recalibration_batches()
            try:
                rows = {}
                for name, ratios in (("largest", LARGEST), ("smallest", SMALLEST)):
                    self.recalibrated(m, ratios, batches)
                    rows[name] = evaluate_modes(m, loader, self.val_gt, [StaticMode(ratios, name)], **post)[name]
            finally:
                m.load_state_dict(saved, strict=False)
            r = rows["largest"]
            out = {"AP": r["AP"], "AP50": r["AP50"], "AP_smallest": rows["smallest"]["AP"],
                   "gflops_smallest": rows["smallest"]["gmacs_avg"]}
        out.update({"gflops_avg": r["gmacs_avg"], "gflops_min": r["gmacs_min"], "gflops_max": r["gmacs_max"],
                    "num_samples": r["videos"]})
        return out

    def report(self, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
        """Table 1: the standalone network vs ANT — AP, GMACs, parameters, single-core latency."""
        from dynvid.methods.ant.report import job_report  # import circle: report -> task

        return job_report(self, cfg, stages, out_dir)
