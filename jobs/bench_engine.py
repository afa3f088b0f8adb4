"""Benchmark: training throughput of the Ray Train engine against a plain PyTorch loop.

    python jobs/bench_engine.py [--smoke-test] [--out FILE.json]

Same model (R(2+1)D-18 at width 0.25), same synthetic data and augmentation, same batch
size and number of steps, measured as training clips/s over the last epoch (data loading
included, evaluation excluded):

  (a) plain PyTorch loop in this process, 2 torch threads
  (b) the engine, 1 worker × 2 threads
  (c) the engine, 2 workers × 1 thread (DDP) — compare with (b)

Target: the engine's overhead at 1 worker, 1 - (b)/(a), is at most 5%.

On a shared 2-core machine one measurement varies by about ±5%, so (a) is measured twice,
before and after the engine runs, and their mean is the reference; every number is the
last of 3 epochs (the first epochs warm up allocators and caches).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.optim import build_optimizer, build_scheduler
from dynvid.engine.task import get_task

TARGET_OVERHEAD = 0.05
COMMON = [
    "model.width_mult=0.25",
    "data.clip_len=8",
    "data.stride=4",
    "data.crop_size=48",
    "data.train_short_side=54",
    "data.synthetic_height=54",
    "data.synthetic_width=72",
    "data.batch_size=16",
    "data.loader_workers=0",
    "data.synthetic_train_videos=480",
    "data.synthetic_val_videos=16",
    "optim.optimizer=adam",
    "optim.lr=0.002",
    "optim.epochs=3",
    "train.eval_every=0",
    "train.final_test=false",
    "train.log_every=1000",
]


def plain_loop(cfg: ExperimentConfig, threads: int) -> float:
    """Clips/s of the last epoch of a hand-written loop over the same pieces."""
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(threads)
    task = get_task("static", cfg)
    ds = build_clip_dataset(cfg.data, cfg.data.train_split, "train", seed=cfg.train.seed)
    model = task.build_model(cfg, ds.num_classes)
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(loader))
    stage = task.stages[0]
    rate = 0.0
    for epoch in range(cfg.optim.epochs):
        ds.set_epoch(epoch)
        model.train()
        t0, seen = time.perf_counter(), 0
        for batch in loader:
            loss, _ = task.training_step(model, batch, stage)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(batch[1])
        rate = seen / (time.perf_counter() - t0)
        print(f"[bench] plain loop epoch {epoch + 1}: {rate:.1f} clips/s", flush=True)
    return rate


def engine(cfg: ExperimentConfig, workers: int, threads: int, storage: str, name: str) -> float:
    from dynvid.engine.trainer import fit

    cfg = apply_overrides(cfg, [f"train.num_workers={workers}", f"train.threads={threads}",
                                f"train.cpus_per_worker={threads}", f"train.storage_path={storage}",
                                f"train.name={name}"])
    rate = fit(cfg, method="static").metrics["throughput_clips_per_s"]
    print(f"[bench] engine {workers} worker(s) x {threads} thread(s): {rate:.1f} clips/s", flush=True)
    return rate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke-test", action="store_true", help="tiny run that only checks the benchmark works")
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    overrides = COMMON + (["data.synthetic_train_videos=32", "data.batch_size=8", "model.width_mult=0.125",
                           "data.clip_len=4", "data.crop_size=32", "data.train_short_side=36",
                           "data.synthetic_height=36", "data.synthetic_width=48"] if args.smoke_test else [])
    cfg = apply_overrides(ExperimentConfig(), overrides + ["train.mlflow_tracking_uri=null"])
    with tempfile.TemporaryDirectory(prefix="dynvid-bench-engine-") as tmp:
        plain_before = plain_loop(cfg, threads=2)
        one = engine(cfg, 1, 2, tmp, "bench-1x2")
        two = engine(cfg, 2, 1, tmp, "bench-2x1")
        plain_after = plain_loop(cfg, threads=2)
    plain = (plain_before + plain_after) / 2
    overhead = 1.0 - one / plain
    report = {
        "benchmark": "engine_overhead",
        "config": {"overrides": overrides, "cpus": torch.get_num_threads()},
        "results": {"plain_loop_clips_per_s": plain, "plain_loop_runs_clips_per_s": [plain_before, plain_after],
                    "engine_1x2_clips_per_s": one,
                    "engine_2x1_clips_per_s": two, "engine_overhead_1_worker": overhead,
                    "speedup_2x1_vs_1x2": two / one},
        "targets": [{"name": "engine_overhead_1_worker", "value": overhead, "target": TARGET_OVERHEAD,
                     "direction": "min", "met": overhead <= TARGET_OVERHEAD}],
    }
    print(f"\n{'run':<34}{'clips/s':>10}")
    for label, value in (("(a) plain PyTorch loop, 2 threads", plain),
                         ("    (a) before / after the engine", f"{plain_before:.1f} / {plain_after:.1f}"), ("(b) engine, 1 worker x 2 threads", one),
                         ("(c) engine, 2 workers x 1 thread", two)):
        print(f"{label:<34}{value:>10.1f}" if isinstance(value, float) else f"{label:<34}{value:>14}")
    t = report["targets"][0]
    print(f"target: engine overhead at 1 worker <= {TARGET_OVERHEAD:.0%}: "
          f"{'met' if t['met'] else 'MISSED'} ({overhead:+.1%})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
