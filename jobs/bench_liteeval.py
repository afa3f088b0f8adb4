"""Benchmark: LiteEval against UNIFORM (the same fine CNN on every one of the same steps).

    python jobs/bench_liteeval.py [--smoke-test] [--out FILE.json] [--set key=value ...]

On the embedded synthetic data with fixed seeds and the job's laptop configuration
(``jobs/liteeval.py``; pass the job's ``train.storage_path`` with ``--set`` to measure the
models a finished job trained, whose stages are then found done and not retrained):
the CNN, LSTM and LiteEval stages train, the report computes Table 1 (offline: UNIFORM,
UNIFORM+CF, LSTM, LiteEval) and the online table per budget K on the val videos, and the
benchmark times both models on pixels (one video per forward, 2 threads, best of 3
interleaved rounds): LiteEval with real skipping against UNIFORM running the fine CNN on
all steps.

Targets: at least 40% fewer GFLOPs per video than UNIFORM, with top-1 at most 1 point lower
(the paper: 51.8% fewer on FCVID at equal mAP); and against Table 1's LSTM, which reads the
fine features of every step, top-1 at most 1 point lower at no more than 50% of its GFLOPs
(the paper: 80.0 vs 79.8 mAP at 94.3 vs 196.0 GFLOPs).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from dynvid.config import ExperimentConfig
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.jobs import bench_config, bench_parser, bench_run_config, print_targets
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.liteeval import LiteEvalTask
from dynvid.methods.liteeval.evaluation import rows_table
from dynvid.methods.liteeval.model import UniformBaseline
from dynvid.methods.liteeval.presets import EMBEDDED, SMOKE
from dynvid.metrics.speed import compare_throughput

TARGET_GFLOPS_SAVING = 0.40
TARGET_TOP1_DROP = 0.01
TARGET_LSTM_TOP1_DROP = 0.01
TARGET_LSTM_GFLOPS_RATIO = 0.50
BENCH = ["train.mlflow_tracking_uri=null", "train.log_every=40"]


def time_models(cfg: ExperimentConfig, checkpoint: str, num_classes: int, videos: int = 16) -> dict:
    """Videos/s of LiteEval (pixels, real skipping) and UNIFORM on the same val videos."""

    task = LiteEvalTask(cfg)
    model = task.build_model(cfg, num_classes, task.stage("liteeval"))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    uniform = UniformBaseline(model.fine.net, cfg.liteeval.steps, cfg.liteeval.snippet_len).eval()
    val = build_clip_dataset(cfg.data, cfg.data.val_split, "val", seed=cfg.train.seed)
    clips = torch.stack([val[i][0] for i in range(min(videos, len(val)))])
    speed = compare_throughput({"liteeval": model, "uniform": uniform}, clips, min_time_s=2.0)
    return {"liteeval_videos_per_s": speed["liteeval"], "uniform_videos_per_s": speed["uniform"],
            "speedup": speed["liteeval"] / speed["uniform"], "videos": len(clips)}


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    from dynvid.engine.trainer import fit  # imports Ray

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-liteeval-") as tmp:
        cfg = bench_config(EMBEDDED + BENCH, SMOKE, args, tmp)
        result = fit(cfg, method="liteeval", register=False)
        report = result.report or {}
        if not report.get("metrics"):
            print("bench_liteeval: error: the job produced no report", file=sys.stderr)
            return 1
        saved = json.loads(Path(next(a for a in report["artifacts"] if a.endswith(".json"))).read_text())
        ckpt = {s.stage: s.checkpoint_path for s in result.stages}

        timing = time_models(cfg, fetch_checkpoint(ckpt["liteeval"]), int(result.metrics["num_classes"]))
    m = report["metrics"]
    saving, drop = m["gflops_saving_vs_uniform"], m["top1_drop_vs_uniform"]
    gflops_ratio = m["uniform_gflops"] / m["liteeval_gflops"]
    print(f"\nLiteEval benchmark: {cfg.liteeval.fine_backbone} w{cfg.liteeval.fine_width:g} fine / "
          f"{cfg.liteeval.coarse_backbone} w{cfg.liteeval.coarse_width:g} coarse, {cfg.liteeval.steps} steps × "
          f"{cfg.liteeval.snippet_len} frames, {saved['videos']} val videos, γ={cfg.liteeval.gamma:g}")
    print(rows_table(saved["offline"]))
    print(f"\nOnline (budget K)\n{rows_table(saved['online'])}")
    lstm_drop, lstm_ratio = m["top1_drop_vs_lstm"], m["gflops_ratio_vs_lstm"]
    print(f"\nvs UNIFORM: GFLOPs saved {saving:.1%}, top-1 change {-drop:+.4f}; vs LSTM: {lstm_ratio:.1%} of its "
          f"GFLOPs, top-1 change {-lstm_drop:+.4f}; measured speed-up over UNIFORM {timing['speedup']:.2f}× "
          f"(GFLOPs ratio {gflops_ratio:.2f}×, {timing['liteeval_videos_per_s']:.1f} vs "
          f"{timing['uniform_videos_per_s']:.1f} videos/s)")
    out = {
        "benchmark": "liteeval",
        "config": {"fine": [cfg.liteeval.fine_backbone, cfg.liteeval.fine_width, cfg.data.crop_size],
                   "coarse": [cfg.liteeval.coarse_backbone, cfg.liteeval.coarse_width, cfg.liteeval.coarse_size],
                   "steps": cfg.liteeval.steps, "snippet_len": cfg.liteeval.snippet_len,
                   "gamma": cfg.liteeval.gamma, "usage_weight": cfg.liteeval.usage_weight,
                   "epochs": {s.stage: s.metrics.get("epoch") for s in result.stages},
                   "val_videos": saved["videos"], "seed": cfg.train.seed, **bench_run_config(args)},
        "results": {"offline": saved["offline"], "online": saved["online"], "timing": timing,
                    "gflops_ratio": gflops_ratio, **m},
        "targets": [
            {"name": "gflops_saving_vs_uniform", "value": saving, "target": TARGET_GFLOPS_SAVING, "direction": "max",
             "met": saving >= TARGET_GFLOPS_SAVING},
            {"name": "top1_drop_vs_uniform", "value": drop, "target": TARGET_TOP1_DROP, "direction": "min",
             "met": drop <= TARGET_TOP1_DROP},
            {"name": "top1_drop_vs_lstm", "value": lstm_drop, "target": TARGET_LSTM_TOP1_DROP, "direction": "min",
             "met": lstm_drop <= TARGET_LSTM_TOP1_DROP},
            {"name": "gflops_ratio_vs_lstm", "value": lstm_ratio, "target": TARGET_LSTM_GFLOPS_RATIO,
             "direction": "min", "met": lstm_ratio <= TARGET_LSTM_GFLOPS_RATIO},
        ],
    }
    print_targets(out["targets"])
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
