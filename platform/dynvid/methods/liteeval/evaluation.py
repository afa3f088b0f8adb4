"""LiteEval evaluation: offline and online recognition with the baselines of Table 1 and
Fig. 2, and the plots of Fig. 2 (accuracy vs GFLOPs per budget) and Fig. 4 (fine-feature
usage per class) (Wu et al., Sec. 4.2.1).

Cost. GFLOPs (= GMACs) per video count what ran: for LiteEval the cost meter records the
RNN steps, gate and classifier each sample executed; each coarse step and each fine read
adds the per-step MACs of that CNN, measured once with the meter on the frozen (static)
network (``features.step_macs``). A baseline that uses a CNN's own scores adds its head.

Baselines, all on the same videos, steps and CNNs:

- UNIFORM: the fine CNN's scores averaged over all T steps (Table 1; the paper's 25 frames);
- UNIFORM+CF: the coarse and the fine CNN's scores averaged over all T steps;
- LSTM: an LSTM over the fine features, last step (trained as the ``lstm`` stage);
- UNIFORM-K (online): the fine CNN's scores on K steps spread uniformly over the first K'
  steps, K' being where LiteEval emitted its prediction for that video (Sec. 4.2.1);
- SEQ-K (online): the fine CNN's scores on the first K consecutive steps.

Scores are averaged as softmax probabilities. Offline rows carry top-1 (Kinetics' protocol)
and mAP (FCVID's and ActivityNet's: per-class average precision over the videos, averaged);
online rows top-1, as the paper reports online recognition.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.ingest import localize_dataset
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.liteeval.features import build_feature_cache, load_split
from dynvid.methods.liteeval.model import LiteEval
from dynvid.metrics.classification import mean_average_precision
from dynvid.metrics.cost import CostMeter
from dynvid.tables import format_table

__all__ = ["infer_cached", "offline_rows", "online_rows", "rows_table", "run_offline", "stage_report"]


def infer_cached(model, inputs, manifest: dict, budget: int | None = None):
    """LiteEval's inference path on cached ``(coarse, fine)`` features ``(B, T, D)``:
    ``(logits, macs (B,), use (B, T), exit_step (B,))``. The meter counts the RNN path that
    ran; each coarse step and fine read adds that CNN's per-step MACs from ``manifest``."""
    coarse, fine = inputs
    b, t = coarse.shape[:2]
    with CostMeter(model.core, batch_size=b) as meter:
        logits, use, exit_step = model.core.infer(b, t, lambda s, rows: coarse[rows, s],
                                                  lambda s, rows: fine[rows, s], budget=budget)
    reads = use.sum(1).cpu().double()
    macs = meter.per_sample_macs + exit_step.double() * manifest["coarse_macs"] + reads * manifest["fine_macs"]
    return logits, macs, use, exit_step


def run_offline(model, inputs, manifest: dict | None, budget: int | None = None):
    """Predictions of a LiteEval or LSTM-baseline model on a batch: ``(logits, macs (B,), reads (B,))``.

    ``inputs`` is ``(coarse, fine)`` cached features (``manifest`` gives the per-step CNN
    MACs) or a video tensor (the pixel model runs and the meter counts everything)."""

    cached = isinstance(inputs, (tuple, list))
    if isinstance(model, LiteEval):
        if not cached:
            with CostMeter(model) as meter:
                logits = model(inputs, budget=budget)
            return logits, meter.per_sample_macs, model.last_use.sum(1).cpu()
        logits, macs, use, _ = infer_cached(model, inputs, manifest, budget)
        return logits, macs, use.sum(1).cpu().double()
    if not cached:  # LSTM baseline on pixels
        with CostMeter(model) as meter:
            logits = model(inputs)
        return logits, meter.per_sample_macs, torch.full((inputs.shape[0],), float(model.steps))
    _, fine = inputs
    b, t = fine.shape[:2]
    with CostMeter(model, batch_size=b) as meter:
        logits = model.from_features(fine)
    return logits, meter.per_sample_macs + t * manifest["fine_macs"], torch.full((b,), float(t))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _row(name: str, correct: np.ndarray, macs: np.ndarray, reads: np.ndarray, scores: np.ndarray | None = None,
         labels: np.ndarray | None = None, **extra) -> dict:
    if scores is not None:  # probabilities for every method (logits rank a class's videos differently)
        extra["mAP"] = mean_average_precision(scores, labels)
    return {"method": name, "top1": float(correct.mean()), "gflops": float(macs.mean() / 1e9),
            "gflops_std": float(macs.std() / 1e9), "fine_reads": float(reads.mean()),
            "fine_reads_std": float(reads.std()), **extra}


def _liteeval(model, data: dict, manifest: dict, budget: int | None) -> dict:
    coarse, fine = torch.from_numpy(data["coarse"]), torch.from_numpy(data["fine"])
    model.eval()
    with torch.no_grad():
        logits, macs, use, exit_step = infer_cached(model, (coarse, fine), manifest, budget)
    return {"pred": logits.argmax(1).numpy(), "scores": logits.softmax(1).numpy(), "macs": macs.numpy(),
            "reads": use.sum(1).numpy(), "exit": exit_step.numpy(), "use": use.numpy()}


def offline_rows(data: dict, manifest: dict, liteeval, lstm=None) -> tuple[list[dict], dict]:
    """Table 1: UNIFORM, UNIFORM+CF, LSTM and LiteEval offline; returns rows and LiteEval's run."""
    labels, (n, t) = data["label"], data["fine_logits"].shape[:2]
    fine_p, coarse_p = _softmax(data["fine_logits"]), _softmax(data["coarse_logits"])
    fine_step = manifest["fine_macs"] + manifest["fine_head_macs"]
    coarse_step = manifest["coarse_macs"] + manifest["coarse_head_macs"]
    uniform, uniform_cf = fine_p.mean(1), (fine_p + coarse_p).mean(1)
    rows = [
        _row("UNIFORM", uniform.argmax(1) == labels, np.full(n, t * fine_step), np.full(n, float(t)), uniform, labels),
        _row("UNIFORM+CF", uniform_cf.argmax(1) == labels, np.full(n, t * (fine_step + coarse_step)),
             np.full(n, float(t)), uniform_cf, labels),
    ]
    if lstm is not None:
        lstm.eval()
        with torch.no_grad():
            logits, macs, reads = run_offline(lstm, (torch.from_numpy(data["coarse"]), torch.from_numpy(data["fine"])),
                                              manifest)
        rows.append(_row("LSTM", logits.argmax(1).numpy() == labels, macs.numpy(), reads.numpy(),
                         logits.softmax(1).numpy(), labels))
    run = _liteeval(liteeval, data, manifest, None)
    rows.append(_row("LiteEval", run["pred"] == labels, run["macs"], run["reads"], run["scores"], labels))
    return rows, run


def online_rows(data: dict, manifest: dict, liteeval, budgets) -> list[dict]:
    """Fig. 2: LiteEval with budget K against UNIFORM-K and SEQ-K, for each K."""
    labels, n = data["label"], len(data["label"])
    fine_p = _softmax(data["fine_logits"])
    fine_step = manifest["fine_macs"] + manifest["fine_head_macs"]
    rows = []
    for k in budgets:
        run = _liteeval(liteeval, data, manifest, k)
        rows.append(_row(f"LiteEval K={k}", run["pred"] == labels, run["macs"], run["reads"], budget=k,
                         seen=float(run["exit"].mean() / fine_p.shape[1])))
        uniform = np.empty(n, dtype=bool)
        for i in range(n):
            k_prime = int(run["exit"][i])
            idx = np.unique(np.linspace(0, k_prime - 1, min(k, k_prime)).round().astype(int))
            uniform[i] = fine_p[i, idx].mean(0).argmax() == labels[i]
        kk = min(k, fine_p.shape[1])
        rows.append(_row(f"UNIFORM-K K={k}", uniform, np.full(n, kk * fine_step), np.full(n, float(kk)), budget=k))
        rows.append(_row(f"SEQ-K K={k}", fine_p[:, :kk].mean(1).argmax(1) == labels, np.full(n, kk * fine_step),
                         np.full(n, float(kk)), budget=k))
    return rows


def rows_table(rows: list[dict], markdown: bool = False) -> str:
    """Table 1 / Table 2 layout: method, top-1 (and mAP where computed), GFLOPs and fine reads."""
    with_map = all("mAP" in r for r in rows)
    body = [[r["method"], f"{r['top1']:.4f}", *([f"{r['mAP']:.4f}"] if with_map else []),
             f"{r['gflops']:.3f} ± {r['gflops_std']:.3f}", f"{r['fine_reads']:.2f} ± {r['fine_reads_std']:.2f}"]
            for r in rows]
    return format_table(["method", "top-1", *(["mAP"] if with_map else []), "GFLOPs/video", "# fine feat"], body,
                        markdown)


def _plots(offline: list[dict], online: list[dict], run: dict, labels: np.ndarray, classes: list[str],
           out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, marker in (("LiteEval", "o"), ("UNIFORM-K", "s"), ("SEQ-K", "^")):
        pts = [r for r in online if r["method"].startswith(prefix + " ")]
        ax.plot([r["gflops"] for r in pts], [100 * r["top1"] for r in pts], marker=marker, label=prefix)
    for r in offline:
        ax.scatter([r["gflops"]], [100 * r["top1"]], marker="x")
        ax.annotate(r["method"], (r["gflops"], 100 * r["top1"]), fontsize=7)
    ax.set_xlabel("GFLOPs per video")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Online recognition: accuracy vs cost per budget K (Fig. 2)")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "accuracy_vs_gflops.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    reads = run["use"].sum(1)
    present = [c for c in range(len(classes)) if (labels == c).any()]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(present)), 4))
    ax.boxplot([reads[labels == c] for c in present], showmeans=True)
    ax.set_xticks(range(1, len(present) + 1), [classes[c] for c in present], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("fine features read per video")
    ax.set_title("Fine-feature usage per class (Fig. 4)")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "fine_usage_per_class.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def stage_report(task, cfg, stages: list, out_dir: str) -> dict:
    """The job's report: offline table (Table 1), online table (Fig. 2), both plots, JSON."""

    ckpt = {s.stage: s.checkpoint_path for s in stages}
    if not ckpt.get("liteeval"):
        return {"metrics": {}, "table": "", "markdown": "", "artifacts": []}
    cache = build_feature_cache(cfg, ckpt.get("cnns") or ckpt["liteeval"])
    data = load_split(cache.uri, cfg.data.val_split)
    classes = build_clip_dataset(localize_dataset(cfg.data), cfg.data.val_split, "val").classes
    num_classes = cache.manifest["num_classes"]
    models = {}
    for name in ("lstm", "liteeval"):
        if ckpt.get(name):
            model = task.build_model(cfg, num_classes, task.stage(name))
            model.load_state_dict(load_checkpoint(fetch_checkpoint(ckpt[name]))["model"])
            models[name] = model.eval()
    offline, run = offline_rows(data, cache.manifest, models["liteeval"], models.get("lstm"))
    online = online_rows(data, cache.manifest, models["liteeval"], cfg.liteeval.budgets)
    by = {r["method"]: r for r in offline}
    lite, uni = by["LiteEval"], by["UNIFORM"]
    metrics = {
        "liteeval_top1": lite["top1"], "liteeval_gflops": lite["gflops"], "liteeval_fine_reads": lite["fine_reads"],
        "uniform_top1": uni["top1"], "uniform_gflops": uni["gflops"],
        "gflops_saving_vs_uniform": 1.0 - lite["gflops"] / uni["gflops"],
        "top1_drop_vs_uniform": uni["top1"] - lite["top1"],
    }
    if "LSTM" in by:  # Table 1's other baseline: LiteEval should match it at about half its cost
        lstm = by["LSTM"]
        metrics.update(lstm_top1=lstm["top1"], lstm_gflops=lstm["gflops"],
                       top1_drop_vs_lstm=lstm["top1"] - lite["top1"],
                       gflops_ratio_vs_lstm=lite["gflops"] / lstm["gflops"])
    artifacts = _plots(offline, online, run, data["label"], list(classes), out_dir)
    path = os.path.join(out_dir, "liteeval_report.json")
    with open(path, "w") as f:
        json.dump({"offline": offline, "online": online, "metrics": metrics, "feature_cache": cache.uri,
                   "videos": int(len(data["label"]))}, f, indent=2)
    artifacts.append(path)
    n = len(data["label"])
    table = (f"LiteEval offline ({n} val videos, {cache.manifest['steps']} steps)\n{rows_table(offline)}\n\n"
             f"Online, budget K of fine reads\n{rows_table(online)}\n\n"
             f"GFLOPs saved vs UNIFORM: {100 * metrics['gflops_saving_vs_uniform']:.1f}%  "
             f"top-1 change: {100 * (lite['top1'] - uni['top1']):+.1f} pts")
    if "lstm_top1" in metrics:
        table += (f"\nGFLOPs vs LSTM: {100 * metrics['gflops_ratio_vs_lstm']:.1f}%  "
                  f"top-1 change: {100 * -metrics['top1_drop_vs_lstm']:+.1f} pts")
    markdown = f"### LiteEval offline\n\n{rows_table(offline, True)}\n\n### Online (budget K)\n\n{rows_table(online, True)}"
    return {"metrics": metrics, "table": table, "markdown": markdown, "artifacts": artifacts}
