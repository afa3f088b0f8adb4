"""The detector job's report: the mAP-vs-τ curve (Fig. 6) and sync vs async latency (Sec. 3.5).

Rows: f0 on every frame, the fixed policy for each ``lfs.taus``, and f1 on every frame after
the first (the two ends of the curve), each with mAP@0.5, AP@[.5:.95], fraction of f0 runs
and amortized GMACs per frame counted from the path that ran. Latency: ``lfs.latency_videos``
validation videos through :func:`~.latency.run_sync` and :func:`~.latency.run_async` at
``lfs.tau``, frames arriving at ``lfs.latency_fps``, one intra-op thread per inference thread
(the async mode's two threads then use two cores, as on the paper's phone).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from dynvid.config import ExperimentConfig
from dynvid.data.datasets import scene_config
from dynvid.data.detection import build_detection_dataset
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.lfs.evaluation import FixedPolicy, evaluate_policies
from dynvid.methods.lfs.latency import F0Worker, LatencyPaths, latency_summary, run_async, run_sync
from dynvid.methods.lfs.model import InterleavedDetector
from dynvid.methods.lfs.trigger import ChangeTriggerPolicy, fit_threshold, memory_changes
from dynvid.tables import format_table

__all__ = ["curve_table", "detector_report", "evenly_spaced", "fit_triggers", "fixed_policies", "latency_rows",
           "latency_table", "load_detector", "latency_videos", "load_detector_model", "pace_label", "policy_videos",
           "postprocess_settings"]

F1_ONLY_TAU = 10**9


def fixed_policies(taus) -> list[FixedPolicy]:
    """f0 only, fixed τ for each of ``taus``, f1 only (after the first frame)."""
    ends = [FixedPolicy(0), FixedPolicy(F1_ONLY_TAU)]
    ends[0].name, ends[1].name = "f0 only", "f1 only"
    return [ends[0], *(FixedPolicy(t) for t in taus if t > 0), ends[1]]


def load_detector(task, cfg: ExperimentConfig, checkpoint: str):
    """``(model in eval mode, val dataset)`` of the detector checkpoint (local path or URI). A
    checkpoint saved without a score calibration (before it existed, or trained with
    ``lfs.calibration_videos=0``) is calibrated here when ``lfs.calibration_videos`` asks for
    one; with 0 the raw scores are used."""
    model = load_detector_model(task, cfg, checkpoint)
    if not cfg.lfs.calibration_videos or not model.calibrated:  # 0: raw scores, whatever the checkpoint holds
        if cfg.lfs.calibration_videos:
            print(f"[dynvid] lfs: {checkpoint} has no score calibration; fitting it on "
                  f"{cfg.lfs.calibration_videos} training videos", flush=True)
        task.calibrate(model, cfg, progress=lambda line: print(f"[dynvid] lfs: {line}", flush=True))
    stage = task.stages[-1]
    _, val = task.datasets(stage.config(cfg), stage)
    return model, val


def load_detector_model(task, cfg: ExperimentConfig, checkpoint: str) -> InterleavedDetector:
    """The detector of a checkpoint (local path or URI) in eval mode, without building any data;
    a checkpoint of another architecture than ``cfg.lfs`` is refused."""

    ckpt = load_checkpoint(fetch_checkpoint(checkpoint))
    trained = ckpt["config"].get("lfs", {})
    differ = [f"lfs.{k}={trained[k]!r} (config: {getattr(cfg.lfs, k)!r})" for k in ARCHITECTURE
              if k in trained and _plain(trained[k]) != _plain(getattr(cfg.lfs, k))]
    if differ:
        raise ValueError(f"detector checkpoint {checkpoint} was trained with {', '.join(differ)}: run with the "
                         "detector's architecture settings")
    model = task.build_model(cfg, task.num_classes_from_state(ckpt["model"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def policy_videos(cfg: ExperimentConfig, split: str | None = None, num_videos: int | None = None):
    """Whole videos of the policy's split (``lfs.policy_split``, else ``data.train_split``),
    ``lfs.policy_videos`` of them: the synthetic data's first ones, a real dataset's evenly
    spaced over its videos (None: the synthetic split's video count, a real split's every
    video). The videos the policy environment samples its episodes from and the change
    trigger's threshold is fitted on (``split`` / ``num_videos`` override the config's)."""
    d, c = cfg.data, cfg.lfs
    split = split or c.policy_split or d.train_split
    n = num_videos or c.policy_videos
    videos = build_detection_dataset(d.dataset, split, size=c.f0_size, clip_len=c.unroll, mode="eval",
                                     num_videos=n or (d.synthetic_train_videos if split == d.train_split
                                                      else d.synthetic_val_videos),
                                     scene=scene_config(d), content_seed=d.synthetic_seed, seed=cfg.train.seed,
                                     max_bad_fraction=d.max_bad_fraction)
    return evenly_spaced(videos, n) if n else videos


def evenly_spaced(videos, n: int):
    """``n`` of ``videos`` evenly spaced over them (a real dataset holds all its videos), with
    their ``collate_fn``; ``videos`` itself when it holds at most ``n``."""
    if len(videos) <= n:
        return videos
    keep = sorted({round(i * (len(videos) - 1) / max(n - 1, 1)) for i in range(n)})
    subset = torch.utils.data.Subset(videos, keep)
    subset.collate_fn = videos.collate_fn
    return subset


def fit_triggers(model: InterleavedDetector, cfg: ExperimentConfig, quantiles: Sequence[float],
                 tau: int | None = None) -> list[ChangeTriggerPolicy]:
    """A change trigger (``lfs.trigger``) per quantile, named ``trigger q=…``, each threshold
    fitted on ``model``'s memory outputs over :func:`policy_videos` (one pass for all)."""
    videos = policy_videos(cfg)
    split = cfg.lfs.policy_split or cfg.data.train_split
    where = f"{len(videos)} {split}-split videos (" + ("lfs.policy_split)" if cfg.lfs.policy_split
                                                       else "data.train_split: lfs.policy_split is not set)")
    loader = torch.utils.data.DataLoader(videos, batch_size=cfg.data.batch_size, collate_fn=videos.collate_fn)
    changes = memory_changes(model, loader)
    policies = []
    for q in quantiles:
        policy = ChangeTriggerPolicy(fit_threshold(changes, q, where), tau=tau,
                                     name=f"trigger q={q:g}" + (f" τ={tau}" if tau is not None else ""))
        print(f"[dynvid] lfs: {policy.name}: threshold {policy.threshold:.4g}, fitted on {where}", flush=True)
        policies.append(policy)
    return policies


ARCHITECTURE = ("f0_width", "f1_width", "f0_size", "f1_size", "memory_input", "state_channels", "groups",
                "state_clip", "skip_f1_update", "num_levels")
"""``lfs`` keys that shape the detector's weights or their meaning: a checkpoint fixes them."""


def _plain(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def curve_table(rows: dict[str, dict], markdown: bool = False) -> str:
    body = [[name, f"{r['AP50']:.4f}", f"{r['AP']:.4f}", f"{r['f0_fraction']:.3f}", f"{r['gmacs_per_frame']:.4f}"]
            for name, r in rows.items()]
    return format_table(["policy", "mAP@0.5", "AP", "f0 runs", "GMACs/frame"], body, markdown)


def latency_rows(model: InterleavedDetector, videos: Sequence[torch.Tensor], tau: int, fps: float | None = None,
                 repeats: int = 1, post: dict | None = None, script: bool = True) -> dict[str, dict]:
    """Sync and async latency summaries (ms) at ``tau`` over ``videos`` (each ``(T, 3, S, S)``),
    each video run ``repeats`` times in both modes, the modes interleaved video by video (and
    which goes first alternating) so that the machine's noise falls on both; frames arrive at
    ``fps`` (None: back to back). ``post``: :func:`postprocess_settings`.
    One intra-op thread per inference thread (:mod:`~dynvid.methods.lfs.latency`)."""
    if isinstance(videos, torch.Tensor) or not videos:
        raise ValueError("latency_rows takes a non-empty list of videos, each (T, 3, S, S)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = LatencyPaths(model, videos[0][:1], script=script, post=post)
        with F0Worker(paths) as worker:
            warm = videos[0][: tau + 2]  # warm-up: not counted
            run_sync(paths, warm, tau)
            run_async(paths, warm, tau, worker=worker)
            sync, asyn, done = [], [], 0
            for r in range(repeats):
                for v, frames in enumerate(videos):
                    sync_first = (r + v) % 2 == 0  # neither mode always finds the caches warm
                    if sync_first:
                        sync.append(run_sync(paths, frames, tau, fps))
                    lat, n = run_async(paths, frames, tau, fps, worker=worker)
                    asyn.append(lat)
                    done += n
                    if not sync_first:
                        sync.append(run_sync(paths, frames, tau, fps))
    finally:
        torch.set_num_threads(threads)
    launched = sum(len(range(0, len(r), tau + 1)) for r in asyn)
    return {"sync": latency_summary(sync), "async": {**latency_summary(asyn), "f0_runs": float(done),
                                                     "f0_launches_due": float(launched)}}


def postprocess_settings(c) -> dict:
    """``postprocess`` keyword arguments of the ``lfs`` config section ``c``."""
    return dict(score_threshold=c.score_threshold, iou_threshold=c.nms_iou, max_detections=c.max_detections)


def pace_label(fps: float | None) -> str:
    """How the latency runs' frames arrive, for tables."""
    return "back to back" if fps is None else f"{fps:g} fps"


def latency_videos(val, c) -> list[torch.Tensor]:
    """The first ``c.latency_videos`` videos of the val dataset ``val`` (frames only)."""
    return [val[i][0] for i in range(min(c.latency_videos, len(val)))]


def latency_table(latency: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sync/async latency table (ms)."""
    header = ["mode", "amortized ms", "p50 ms", "p95 ms", "p99 ms", "worst ms", "frames"]
    body = [[mode, *(f"{r[k]:.1f}" for k in ("amortized_ms", "p50_ms", "p95_ms", "p99_ms", "worst_ms")),
             f"{int(r['frames'])}"] for mode, r in latency.items()]
    return header, body


def _plot(rows: dict[str, dict], out_dir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = list(rows.items())
    ax.plot([r["gmacs_per_frame"] for _, r in pts], [100 * r["AP50"] for _, r in pts], marker="o")
    for name, r in pts:
        ax.annotate(name, (r["gmacs_per_frame"], 100 * r["AP50"]), fontsize=7)
    ax.set_xlabel("amortized GMACs per frame")
    ax.set_ylabel("mAP@0.5 (%)")
    ax.set_title("Looking Fast and Slow: fixed interleave policies (Fig. 6)")
    fig.tight_layout()
    path = os.path.join(out_dir, "lfs_tau_curve.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def detector_report(task, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
    ckpt = stages[-1].checkpoint_path if stages else None
    if not ckpt:
        return {"metrics": {}, "table": "", "markdown": "", "artifacts": []}
    c = cfg.lfs
    model, val = load_detector(task, cfg, ckpt)
    loader = torch.utils.data.DataLoader(val, batch_size=max(1, cfg.data.batch_size), collate_fn=val.collate_fn)
    rows = evaluate_policies(model, loader, task.val_gt, fixed_policies(c.taus), score_threshold=c.score_threshold,
                             nms_iou=c.nms_iou, max_detections=c.max_detections)
    videos = latency_videos(val, c)
    latency = latency_rows(model, videos, c.tau, c.latency_fps, post=postprocess_settings(c))
    costs = model.component_macs()
    metrics = {f"tau{p.tau}_AP50" if p.tau not in (0, F1_ONLY_TAU) else p.name.replace(" ", "_") + "_AP50":
               rows[p.name]["AP50"] for p in fixed_policies(c.taus)}
    metrics.update({f"{mode}_{k}": v for mode, r in latency.items() for k, v in r.items()})
    metrics.update({f"gmacs_{k}": v / 1e9 for k, v in costs.items()})
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "lfs_report.json")
    with open(path, "w") as f:
        json.dump({"curve": rows, "latency_ms": latency, "component_gmacs": {k: v / 1e9 for k, v in costs.items()},
                   "tau": c.tau}, f, indent=2)
    lat_header, lat_body = latency_table(latency)
    n = int(next(iter(rows.values()))["videos"])
    table = (f"Looking Fast and Slow, {n} val videos, every frame (Fig. 6)\n{curve_table(rows)}\n\n"
             f"Per-frame latency at τ={c.tau}, {len(videos)} val videos at {pace_label(c.latency_fps)}, "
             f"1 thread per inference thread (Sec. 3.5)\n"
             f"{format_table(lat_header, lat_body)}")
    markdown = (f"### Fixed interleave policies\n\n{curve_table(rows, True)}\n\n### Latency at τ={c.tau}\n\n"
                f"{format_table(lat_header, lat_body, True)}")
    return {"metrics": metrics, "table": table, "markdown": markdown, "artifacts": [path, _plot(rows, out_dir)]}
