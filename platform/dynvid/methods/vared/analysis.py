"""VA-RED² analysis: policy statistics, figures, measured speed, and the comparison table.

- Per-layer, per-class fraction of computed features (thesis Sec. 4.8, Fig. 4-1): for each
  dynamic layer, the temporal fraction ⌈T_o/R_s⌉/T_o (the share of output frames computed,
  the fraction the efficiency loss uses, not the nominal 1/R) and the channel fraction
  ⌈r_s·C⌉/C that the hard path executed, averaged per class; saved as a heatmap PNG.
- Per-layer share of the clips at each choice (:func:`choice_shares`, :func:`policy_table`).
- Instance-level cost distribution (App. B.4, Fig. B-6): a histogram of the measured
  GFLOPs per clip of the dynamic model, with the static model's cost marked.
- Speed (Tables 4.1–4.2, "clip/second"): clips per second of the model in inference mode
  on the same clips, one clip per forward (the papers' speed is per clip on one device),
  timed after warm-up; measured, not derived from FLOPs.
- The static-vs-dynamic table of Table 4.1: GFLOPs avg/max/min, speed, clip-1, video-1,
  video-5 (and the change in GFLOPs relative to the static model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dynvid.backbones.frameconv import use_frame_convs
from dynvid.backbones.fuse import fold_batchnorm
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.ingest import localize_dataset
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.vared.convert import dynamic_layers
from dynvid.methods.vared.dynconv import executed_fraction, executed_index
from dynvid.metrics.cost import CostMeter
from dynvid.metrics.speed import compare_throughput, measure_throughput
from dynvid.tables import format_table

__all__ = [
    "choice_shares",
    "comparison_table",
    "compare_throughput",
    "inference_copy",
    "load_stage_model",
    "measure_throughput",
    "plot_cost_histogram",
    "plot_policy_heatmap",
    "policy_stats",
    "policy_table",
    "stage_report",
]


@torch.no_grad()
def policy_stats(model: nn.Module, loader: Iterable) -> dict:
    """Run ``model`` in inference mode over ``(clips, labels)`` batches and collect, per clip,
    the executed temporal and channel fraction of every dynamic layer, the measured MACs and
    whether the prediction was right.

    Returns ``{"layers": [names], "temporal": (N, L), "channel": (N, L), "temporal_choice": (N, L),
    "channel_choice": (N, L), "choices": {"temporal": [R per layer], "channel": [r per layer]},
    "macs": (N,), "labels": (N,), "correct": (N,)}`` (tensors; L = 0 for a static model). The
    fractions are those of the sub-convolution that ran; ``*_choice`` is the executed index.
    """
    was_training = model.training
    model.eval()
    layers = dynamic_layers(model)
    temporal, channel, macs, labels, correct = [], [], [], [], []
    t_choice, c_choice = [], []
    device = next(model.parameters()).device
    for clips, y in loader:
        with CostMeter(model) as meter:
            logits = model(clips.to(device, non_blocking=True))  # a host loader with a model on the GPU
        macs.append(meter.per_sample_macs)
        labels.append(y)
        correct.append(logits.argmax(1).cpu() == y.cpu())
        if layers:
            temporal.append(torch.stack([executed_fraction(m.last_v_t, m.frame_fractions(m._last_out_size[0]))
                                         for _, m in layers], 1).cpu())
            channel.append(torch.stack([executed_fraction(m.last_v_c, m.channel_fractions) for _, m in layers], 1).cpu())
            t_choice.append(torch.stack([executed_index(m.last_v_t) for _, m in layers], 1).cpu())
            c_choice.append(torch.stack([executed_index(m.last_v_c) for _, m in layers], 1).cpu())
    model.train(was_training)
    n = sum(len(y) for y in labels)
    empty = torch.zeros(n, 0)
    return {
        "layers": [name for name, _ in layers],
        "temporal": torch.cat(temporal) if temporal else empty,
        "channel": torch.cat(channel) if channel else empty,
        "temporal_choice": torch.cat(t_choice) if t_choice else empty.long(),
        "channel_choice": torch.cat(c_choice) if c_choice else empty.long(),
        "choices": {"temporal": [list(m.temporal_factors) for _, m in layers],
                    "channel": [list(m.channel_ratios) for _, m in layers]},
        "macs": torch.cat(macs),
        "labels": torch.cat(labels),
        "correct": torch.cat(correct),
    }


def choice_shares(stats: dict) -> list[dict]:
    """Per dynamic layer, the share of clips at each executed choice:
    ``[{"layer", "temporal": {"R=1": share, ...}, "channel": {"r=1": share, ...}}]``."""
    out = []
    for k, name in enumerate(stats["layers"]):
        row = {"layer": name}
        for key, label in (("temporal", "R={:g}"), ("channel", "r={:g}")):
            picked = stats[f"{key}_choice"][:, k]
            values = stats["choices"][key][k]
            row[key] = {label.format(v): float((picked == i).float().mean()) for i, v in enumerate(values)}
        out.append(row)
    return out


def policy_table(stats: dict, markdown: bool = False) -> str:
    """:func:`choice_shares` as a table: one row per dynamic layer, the share of clips at each
    temporal and channel choice."""
    shares = choice_shares(stats)
    t_labels = sorted({k for r in shares for k in r["temporal"]}, key=lambda s: float(s[2:]))
    c_labels = sorted({k for r in shares for k in r["channel"]}, key=lambda s: -float(s[2:]))
    rows = [[_short(r["layer"]), *(f"{r['temporal'][k]:.2f}" if k in r["temporal"] else "–" for k in t_labels),
             *(f"{r['channel'][k]:.2f}" if k in r["channel"] else "–" for k in c_labels)] for r in shares]
    return format_table(["layer", *t_labels, *c_labels], rows, markdown)


def load_stage_model(task, cfg, stage_name: str, checkpoint: str, num_classes: int) -> nn.Module:
    """``task``'s network of stage ``stage_name`` with the weights of ``checkpoint`` (a local
    path or URI), in eval mode."""

    stage = next(s for s in task.stages if s.name == stage_name)
    model = task.build_model(stage.config(cfg), num_classes, stage)
    model.load_state_dict(load_checkpoint(fetch_checkpoint(checkpoint))["model"])
    return model.eval()


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` prepared for timing, the same way for a static and a dynamic network:
    one-frame convolutions on the 2-D path (:func:`~dynvid.backbones.frameconv.use_frame_convs`;
    the dynamic convs use it already) and every BatchNorm that follows a conv folded into it
    (:func:`~dynvid.backbones.fuse.fold_batchnorm`). It computes the model's function."""
    import copy

    return fold_batchnorm(use_frame_convs(copy.deepcopy(model).eval()))


def per_class_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, L)`` mean of ``values`` (N, L) over the clips of each class (NaN if none)."""
    out = torch.full((num_classes, values.shape[1]), float("nan"))
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            out[c] = values[rows].float().mean(0)
    return out


def plot_policy_heatmap(stats: dict, class_names: Sequence[str], path: str | os.PathLike) -> str:
    """Fig. 4-1: per-class (rows) and per-layer (columns) fraction of computed features,
    temporal-wise and channel-wise side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    layers = stats["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.45 * len(layers) * 2 + 4), max(3, 0.3 * k + 1.5)),
                             constrained_layout=True)
    for ax, key, title in ((axes[0], "temporal", "temporal-wise (⌈T/R⌉/T)"), (axes[1], "channel", "channel-wise (r)")):
        grid = per_class_mean(stats[key], stats["labels"], k)
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"fraction of features computed, {title}")
        ax.set_xticks(range(len(layers)), [_short(n) for n in layers], rotation=90, fontsize=6)
        ax.set_yticks(range(k), class_names, fontsize=7)
        ax.set_xlabel("dynamic layer")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _short(name: str) -> str:
    return name.replace("layer", "L").replace(".conv", ".c").replace(".0.0", "")


def plot_cost_histogram(dynamic_gflops: torch.Tensor, static_gflops: float, path: str | os.PathLike) -> str:
    """Fig. B-6 as a histogram: measured GFLOPs per clip of the dynamic model, static cost marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.hist(dynamic_gflops.numpy(), bins=30, color="tab:blue", alpha=0.8, label="dynamic (per clip)")
    ax.axvline(static_gflops, color="tab:red", linestyle="--", label=f"static ({static_gflops:.3g})")
    ax.axvline(float(dynamic_gflops.mean()), color="black", linestyle=":",
               label=f"dynamic mean ({float(dynamic_gflops.mean()):.3g})")
    ax.set_xlabel("GFLOPs per clip (measured on the executed path)")
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


ROW_KEYS = (("GFLOPs avg", "gflops_avg", "{:.3f}"), ("GFLOPs max", "gflops_max", "{:.3f}"),
            ("GFLOPs min", "gflops_min", "{:.3f}"), ("clips/s b1", "clips_per_s", "{:.1f}"),
            ("clips/s batched", "clips_per_s_batched", "{:.1f}"),
            ("clip-1", "clip_top1", "{:.4f}"), ("video-1", "video_top1", "{:.4f}"),
            ("video-5", "video_top5", "{:.4f}"))


def comparison_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """Table 4.1 layout: one row per model (``{"model", gflops_avg, ...}``); the GFLOPs of
    rows after the first carry their change relative to the first (the static model)."""
    base = rows[0]
    header = ["model", *(name for name, _, _ in ROW_KEYS)]
    lines = []
    for row in rows:
        cells = [row["model"]]
        for _, key, fmt in ROW_KEYS:
            value = row.get(key)
            cell = "–" if value is None else fmt.format(value)
            if key.startswith("gflops") and row is not base and value is not None and base.get(key):
                cell += f" ({100 * (value / base[key] - 1):+.0f}%)"
            cells.append(cell)
        lines.append(cells)
    return format_table(header, lines, markdown)


def stage_report(task, cfg, stages: list, out_dir: str, throughput_clips: int = 32) -> dict:
    """The VA-RED² job report on the driver: loads the base and final checkpoints, measures
    both on the same ``val`` clips (policy statistics, cost per clip, clips/s), writes the
    figures and ``vared_report.json`` to ``out_dir`` and returns the comparison table."""

    by_name = {s.stage: s for s in stages}
    if not all(by_name.get(n) and by_name[n].checkpoint_path for n in ("base", "finetune")):
        print("[dynvid] vared report skipped: the base or finetune stage has no checkpoint", flush=True)
        return {"metrics": {}, "table": "", "artifacts": []}
    data = localize_dataset(cfg.data)
    val = build_clip_dataset(data, data.val_split, "val", seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(val, batch_size=cfg.data.batch_size, num_workers=cfg.data.loader_workers)
    models = {key: load_stage_model(task, cfg, stage_name, by_name[stage_name].checkpoint_path, val.num_classes)
              for key, stage_name in (("static", "base"), ("dynamic", "finetune"))}
    stats = {key: policy_stats(m, loader) for key, m in models.items()}
    clips = torch.stack([val[i][0] for i in range(min(throughput_clips, len(val)))])
    copies = {key: inference_copy(m) for key, m in models.items()}
    # latency (one clip per forward, where the gates' fixed cost weighs most) and throughput at
    # the job's batch size, side by side: they differ most at laptop width
    speed = compare_throughput(copies, clips)
    batch = max(1, min(cfg.data.batch_size, len(clips)))
    speed_batched = compare_throughput(copies, clips, batch_size=batch)
    os.makedirs(out_dir, exist_ok=True)
    heatmap = plot_policy_heatmap(stats["dynamic"], val.classes, os.path.join(out_dir, "policy_heatmap.png"))
    static_gflops = float(stats["static"]["macs"].mean()) / 1e9
    histogram = plot_cost_histogram(stats["dynamic"]["macs"] / 1e9, static_gflops,
                                    os.path.join(out_dir, "cost_histogram.png"))
    rows = []
    for key, stage_name in (("static", "base"), ("dynamic", "finetune")):
        m, s = by_name[stage_name].metrics, stats[key]
        gflops = s["macs"] / 1e9
        rows.append({"model": f"{key} ({stage_name})", "gflops_avg": float(gflops.mean()),
                     "gflops_max": float(gflops.max()), "gflops_min": float(gflops.min()),
                     "clips_per_s": speed[key], "clips_per_s_batched": speed_batched[key],
                     "clip_top1": float(s["correct"].float().mean()),
                     "video_top1": m.get("test_video_top1"), "video_top5": m.get("test_video_top5")})
    metrics = {
        "static_clips_per_s": speed["static"], "dynamic_clips_per_s": speed["dynamic"],
        "speedup": speed["dynamic"] / speed["static"],
        "static_clips_per_s_batched": speed_batched["static"], "dynamic_clips_per_s_batched": speed_batched["dynamic"],
        "speedup_batched": speed_batched["dynamic"] / speed_batched["static"], "throughput_batch": batch,
        "gflops_ratio": rows[1]["gflops_avg"] / rows[0]["gflops_avg"],
        "static_gflops_avg": rows[0]["gflops_avg"], "dynamic_gflops_avg": rows[1]["gflops_avg"],
        "dynamic_gflops_min": rows[1]["gflops_min"], "dynamic_gflops_max": rows[1]["gflops_max"],
        "static_clip_top1": rows[0]["clip_top1"], "dynamic_clip_top1": rows[1]["clip_top1"],
    }
    summary = os.path.join(out_dir, "vared_report.json")
    with open(summary, "w") as f:
        json.dump({"rows": rows, "metrics": metrics, "layers": stats["dynamic"]["layers"],
                   "choice_shares": choice_shares(stats["dynamic"]),
                   "threads": torch.get_num_threads(), "throughput_clips": len(clips)}, f, indent=2)
    title = f"VA-RED² {cfg.model.backbone} on {cfg.data.dataset} (clips/s: 1 clip per forward (b1) and " \
            f"{batch} per forward (batched), {torch.get_num_threads()} thread(s))"
    policy = "share of val clips at each choice, per dynamic layer (finetuned model)"
    return {"metrics": metrics,
            "table": f"{title}\n{comparison_table(rows)}\n\n{policy}\n{policy_table(stats['dynamic'])}",
            "markdown": f"### {title}\n\n{comparison_table(rows, markdown=True)}\n\n{policy}:\n\n"
                        f"{policy_table(stats['dynamic'], markdown=True)}",
            "artifacts": [heatmap, histogram, summary], "rows": rows}
