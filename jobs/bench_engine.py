"""Benchmark: training throughput of the Ray Train engine against a plain PyTorch loop.

    python jobs/bench_engine.py [--smoke-test] [--out FILE.json]
    python jobs/bench_engine.py --device cuda --paper-size [--steps N] [--loader-workers N] [--smoke-test] [--out FILE.json]

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

**Paper size on a GPU** (issue 20), ``--device cuda --paper-size``: full-width R(2+1)D-18 on
16×112² clips (stride 2 over 128×171 synthetic scenes, multi-scale crops from a 128 short side),
batch 32, AMP (float16 autocast + GradScaler), ``--steps`` steps per epoch, 2 epochs, the last
one measured (the first pays cuDNN's algorithm search, the allocator and the loader start-up).
Both sides read the project's own pipeline: the synthetic clip dataset in ``--loader-workers``
DataLoader processes (default: the CPUs less two, at most 12):

  (a) a plain PyTorch loop in this process: pinned batches copied with ``non_blocking``,
      ``torch.cuda.synchronize()`` around the measured epoch; measured before and after (b)
  (b) the engine, 1 GPU worker (``train.use_gpu=true train.amp=true``)
  (a0) for reference, the plain loop on one batch kept on the GPU: the model's own ceiling,
      no data loading (if (a) and (b) are both well below it, the data sets the pace)

Both (a) and (b) report the share of the epoch spent waiting for the loader. Target: (b)/(a)
≥ 0.90. ``--paper-size`` without ``--device cuda`` runs the same comparison on the CPU (no
AMP there: the engine refuses CPU autocast). ``--device cuda --smoke-test`` on a machine
without CUDA is a dry run of that code on the CPU at a tiny size, marked ``dry_run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.jobs import exit_on_bad_input
from dynvid.engine.optim import build_optimizer, build_scheduler
from dynvid.engine.task import get_task

TARGET_OVERHEAD = 0.05
TARGET_ENGINE_RATIO = 0.90  # issue 20: one GPU worker reaches >= 90% of a plain loop's clips/s
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
# The paper's clip (VA-RED² Table 4.1, R(2+1)D-18): full width, 16×112², batch 32, AMP.
PAPER = [
    "model.width_mult=1.0",
    "data.clip_len=16",
    "data.stride=2",
    "data.crop_size=112",
    "data.train_short_side=128",
    "data.synthetic_height=128",
    "data.synthetic_width=171",
    "data.batch_size=32",
    "data.synthetic_val_videos=32",
    "optim.optimizer=sgd",
    "optim.lr=0.01",
    "optim.epochs=2",
    "train.amp=true",
    "train.threads=2",
    "train.cpus_per_worker=1",
    "train.eval_every=0",
    "train.final_test=false",
    "train.log_every=10",
]
# --smoke-test: the smallest sizes that run every line (the CPU test and the GPU check's dry run).
TINY = ["data.synthetic_train_videos=32", "data.batch_size=8", "model.width_mult=0.125", "data.clip_len=4",
        "data.crop_size=32", "data.train_short_side=36", "data.synthetic_height=36", "data.synthetic_width=48"]
PAPER_TINY = ["model.width_mult=0.125", "data.clip_len=4", "data.crop_size=32", "data.train_short_side=36",
              "data.synthetic_height=36", "data.synthetic_width=48", "data.batch_size=4",
              "data.synthetic_val_videos=4", "train.threads=1"]  # 2 threads crawl on a loaded 2-core machine


def plain_loop(cfg: ExperimentConfig, threads: int, device: torch.device | None = None) -> float:
    """Clips/s of the last epoch of a hand-written loop over the same pieces (on the CPU, the
    original benchmark; see :func:`plain_loop_stats` for the device and AMP variant)."""
    return plain_loop_stats(cfg, threads, device or torch.device("cpu"))["clips_per_s"]


def _to(batch, device: torch.device):
    """Tensors of a batch (nested tuples/lists) on ``device``; copies from pinned memory overlap."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(task, model, batch, stage, optimizer, scaler, amp: bool, device: torch.device) -> None:
    """One plain training step: the Task's loss (float16 autocast under AMP), GradScaler."""
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss, _ = task.training_step(model, batch, stage)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def plain_loop_stats(cfg: ExperimentConfig, threads: int, device: torch.device) -> dict:
    """A plain PyTorch training loop over the engine's pieces (dataset, model, loss, optimizer,
    schedule): ``cfg.data.loader_workers`` DataLoader processes (pinned memory on CUDA), float16
    autocast + GradScaler when ``train.amp`` and CUDA. Clips/s, epoch time and the time spent
    waiting for the loader, of the last epoch."""
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(threads)
    task = get_task("static", cfg)
    ds = build_clip_dataset(cfg.data, cfg.data.train_split, "train", seed=cfg.train.seed)
    model = task.build_model(cfg, ds.num_classes).to(device)
    cuda = device.type == "cuda"
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.loader_workers, pin_memory=cuda,
                        collate_fn=getattr(ds, "collate_fn", None))
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(loader))
    amp = cfg.train.amp and cuda
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    stage = task.stages[0]
    stats: dict = {}
    for epoch in range(cfg.optim.epochs):
        ds.set_epoch(epoch)
        model.train()
        _sync(device)
        t0, seen, waited = time.perf_counter(), 0, 0.0
        mark = t0
        for batch in loader:
            waited += time.perf_counter() - mark
            batch = _to(batch, device)
            _step(task, model, batch, stage, optimizer, scaler, amp, device)
            scheduler.step()
            seen += len(batch[1])
            mark = time.perf_counter()
        _sync(device)
        elapsed = time.perf_counter() - t0
        stats = {"clips_per_s": seen / elapsed, "epoch_time_s": elapsed, "data_wait_s": waited,
                 "data_wait_fraction": waited / max(elapsed, 1e-9)}
        print(f"[bench] plain loop epoch {epoch + 1}: {stats['clips_per_s']:.1f} clips/s "
              f"(waiting for data {stats['data_wait_fraction']:.0%})", flush=True)
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return stats


def resident_batch(cfg: ExperimentConfig, threads: int, device: torch.device, steps: int) -> float:
    """Clips/s of the plain loop's step on one batch kept on ``device``: the model's ceiling
    with no data loading (3 warm-up steps, then ``steps`` timed)."""
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(threads)
    task = get_task("static", cfg)
    ds = build_clip_dataset(cfg.data, cfg.data.train_split, "train", seed=cfg.train.seed)
    model = task.build_model(cfg, ds.num_classes).to(device).train()
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=False, drop_last=True,
                        collate_fn=getattr(ds, "collate_fn", None))
    batch = _to(next(iter(loader)), device)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    stage = task.stages[0]
    t0 = 0.0
    for step in range(3 + steps):
        if step == 3:
            _sync(device)
            t0 = time.perf_counter()
        _step(task, model, batch, stage, optimizer, scaler, amp, device)
    _sync(device)
    rate = steps * cfg.data.batch_size / (time.perf_counter() - t0)
    print(f"[bench] plain loop on one resident batch: {rate:.1f} clips/s", flush=True)
    del model, optimizer, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def engine(cfg: ExperimentConfig, workers: int, threads: int, storage: str, name: str) -> float:
    return engine_stats(cfg, workers, threads, storage, name)["throughput_clips_per_s"]


def engine_stats(cfg: ExperimentConfig, workers: int, threads: int, storage: str, name: str,
                 use_gpu: bool = False) -> dict:
    """The engine's metrics of its last epoch (clips/s, epoch time, time waiting for data)."""
    from dynvid.engine.trainer import fit  # imports Ray

    cfg = apply_overrides(cfg, [f"train.num_workers={workers}", f"train.threads={threads}",
                                f"train.cpus_per_worker={threads}", f"train.storage_path={storage}",
                                f"train.name={name}", f"train.use_gpu={str(use_gpu).lower()}"])
    m = fit(cfg, method="static").metrics
    stats = {k: m[k] for k in ("throughput_clips_per_s", "epoch_time_s", "data_wait_s", "data_wait_fraction") if k in m}
    print(f"[bench] engine {workers} worker(s) x {threads} thread(s){' on the GPU' if use_gpu else ''}: "
          f"{stats['throughput_clips_per_s']:.1f} clips/s", flush=True)
    return stats


def resolve_device(requested: str, smoke_test: bool) -> tuple[torch.device, bool]:
    """The device to measure on, and whether this is a dry run (CUDA asked for, none here,
    ``--smoke-test``: the same code on the CPU). CUDA asked for without one and without
    ``--smoke-test`` is an error (ValueError: one line, exit 2)."""
    if requested == "cpu":
        return torch.device("cpu"), False
    if torch.cuda.is_available():
        return torch.device("cuda", 0), False
    if not smoke_test:
        raise ValueError("--device cuda: no CUDA device on this machine (torch.cuda.is_available() is false); "
                         "add --smoke-test for a dry run of the same code on the CPU")
    return torch.device("cpu"), True


def default_loader_workers() -> int:
    return max(1, min(12, (os.cpu_count() or 2) - 2))


def paper_size(args: argparse.Namespace) -> dict:
    """(a) plain loop vs (b) the engine with one worker at the paper's clip size (or, with
    ``--smoke-test``, the tiny one), on ``--device``; the JSON report."""
    device, dry_run = resolve_device(args.device, args.smoke_test)
    steps = args.steps or (2 if args.smoke_test else 40)
    loader_workers = args.loader_workers if args.loader_workers is not None else (
        1 if args.smoke_test else default_loader_workers())
    overrides = COMMON + PAPER + (PAPER_TINY if args.smoke_test else []) + [f"data.loader_workers={loader_workers}"]
    batch = apply_overrides(ExperimentConfig(), overrides).data.batch_size
    overrides += [f"data.synthetic_train_videos={steps * batch}"]
    cfg = apply_overrides(ExperimentConfig(), overrides + ["train.mlflow_tracking_uri=null"])
    use_gpu = device.type == "cuda"
    amp = cfg.train.amp and use_gpu
    print(f"[bench] {'DRY RUN on the CPU (no CUDA here): ' if dry_run else ''}R(2+1)D-18 width "
          f"{cfg.model.width_mult} on {cfg.data.clip_len}x{cfg.data.crop_size}^2 clips, batch {batch}, "
          f"{steps} steps/epoch, AMP {'fp16' if amp else 'off'}, {loader_workers} loader workers, {device}",
          flush=True)
    threads = cfg.train.threads
    ceiling = resident_batch(cfg, threads, device, steps)
    with tempfile.TemporaryDirectory(prefix="dynvid-bench-engine-") as tmp:
        before = plain_loop_stats(cfg, threads, device)
        eng = engine_stats(cfg, 1, threads, tmp, "bench-paper-1w", use_gpu=use_gpu)
        after = plain_loop_stats(cfg, threads, device)
    plain = (before["clips_per_s"] + after["clips_per_s"]) / 2
    ratio = eng["throughput_clips_per_s"] / plain
    where = "cuda" if args.device == "cuda" else "cpu"
    name = f"{where}_{'tiny' if args.smoke_test else 'paper'}_engine_over_plain_loop"
    return {
        "benchmark": "engine_vs_plain_loop",
        "config": {"overrides": overrides, "device": str(device), "requested_device": args.device, "dry_run": dry_run,
                   "smoke_test": args.smoke_test, "amp": amp, "batch_size": batch, "steps_per_epoch": steps,
                   "epochs": cfg.optim.epochs, "measured": "last epoch", "loader_workers": loader_workers,
                   "threads": threads, "gpu": torch.cuda.get_device_name(0) if use_gpu else None,
                   "torch": torch.__version__},
        "results": {"plain_loop_clips_per_s": plain,
                    "plain_loop_runs": [before, after],
                    "engine_1_worker": eng,
                    "engine_1_worker_clips_per_s": eng["throughput_clips_per_s"],
                    "engine_over_plain_loop": ratio,
                    "resident_batch_clips_per_s": ceiling},
        "targets": [{"name": name, "value": ratio, "target": TARGET_ENGINE_RATIO, "direction": "max",
                     "met": ratio >= TARGET_ENGINE_RATIO}],
    }


def print_paper_size(report: dict) -> None:
    c, r = report["config"], report["results"]
    dry = c["dry_run"]
    print(f"\n{'run':<48}{'clips/s':>10}{'data wait':>11}" + ("   (DRY RUN: not a measurement)" if dry else ""))
    before, after = r["plain_loop_runs"]
    rows = [("(a0) plain loop, one batch resident on the device", r["resident_batch_clips_per_s"], None),
            ("(a) plain PyTorch loop, mean of before/after", r["plain_loop_clips_per_s"],
             (before["data_wait_fraction"] + after["data_wait_fraction"]) / 2),
            ("(b) engine, 1 worker", r["engine_1_worker_clips_per_s"], r["engine_1_worker"].get("data_wait_fraction"))]
    for label, rate, wait in rows:
        print(f"{label:<48}{rate:>10.1f}{'' if wait is None else f'{wait:.0%}':>11}")
    t = report["targets"][0]
    print(f"target: engine / plain loop >= {t['target']:.2f}: {'met' if t['met'] else 'MISSED'} ({t['value']:.3f})"
          + (" (DRY RUN)" if dry else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke-test", action="store_true", help="tiny run that only checks the benchmark works")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="train on this device (cuda: AMP, one GPU worker; without CUDA only with --smoke-test, "
                        "as a dry run on the CPU)")
    p.add_argument("--paper-size", action="store_true",
                   help="full-width R(2+1)D-18, 16x112^2 clips, batch 32, AMP: plain loop vs engine with 1 worker")
    p.add_argument("--steps", type=int, metavar="N", help="training steps per epoch with --paper-size / --device "
                   "cuda (default 40; smoke 2)")
    p.add_argument("--loader-workers", type=int, metavar="N",
                   help=f"DataLoader processes with --paper-size / --device cuda (default {default_loader_workers()} "
                        "here: the CPUs less two, at most 12; smoke 1)")
    args = p.parse_args(argv)
    if args.paper_size or args.device == "cuda":
        return exit_on_bad_input("bench_engine", lambda: _paper_size_main(args))
    overrides = COMMON + (TINY if args.smoke_test else [])
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


def _paper_size_main(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.loader_workers is not None and args.loader_workers < 0:
        raise ValueError(f"--loader-workers must be >= 0, got {args.loader_workers}")
    report = paper_size(args)
    print_paper_size(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
