"""The Ray Train worker loop: one stage of one method, on every worker.

Runs inside ``TorchTrainer`` workers. The first line rebuilds the typed config from the
plain dict Ray shipped; then data, model, optimizer and schedule are built here, the
Task's step functions are called, and every epoch ends with ``ray.train.report`` of the
metrics plus a checkpoint from rank 0 (weights, optimizer, scheduler, config, metadata;
see :mod:`dynvid.engine.checkpoint`). A rerun with the same run name resumes from
``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dynvid.config import ExperimentConfig, apply_overrides, from_dict, to_dict
from dynvid.engine.checkpoint import load_checkpoint, save_checkpoint
from dynvid.engine.ingest import StreamedBatches, localize_dataset, remote_dataset_uri
from dynvid.engine.optim import build_optimizer, build_scheduler
from dynvid.engine.preflight import stage_datasets
from dynvid.engine.storage import fetch_checkpoint, is_remote
from dynvid.engine.task import Stage, Task, get_task
from dynvid.engine.tracking import Tracker

__all__ = ["train_loop_per_worker", "reduce_metrics"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reduce_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Combine per-worker evaluation metrics: ``*_min``/``*_max`` by min/max, ``num_samples``
    summed, every other key averaged weighted by ``num_samples``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(metrics)
    n = float(metrics["num_samples"])
    keys = sorted(metrics)
    out = {}
    for key in keys:
        value = torch.tensor(float(metrics[key]), dtype=torch.float64)
        if key.endswith("_min"):
            dist.all_reduce(value, op=dist.ReduceOp.MIN)
        elif key.endswith("_max"):
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        elif key == "num_samples":
            dist.all_reduce(value)
        else:
            value *= n
            dist.all_reduce(value)
        out[key] = float(value)
    total = out["num_samples"]
    for key in keys:
        if not key.endswith(("_min", "_max")) and key != "num_samples":
            out[key] /= max(total, 1.0)
    return out


class ShardSampler(torch.utils.data.Sampler):
    """This rank's share of the dataset, reproducible from (seed, epoch) alone.

    Training: a permutation drawn from ``seed + epoch`` (so a run resumed at an epoch
    boundary sees exactly the batches an uninterrupted run would), cut so every rank gets
    the same number of samples. Evaluation: every ``world``-th sample from ``rank``, in
    order, without the padding of ``DistributedSampler`` (no sample is counted twice;
    metrics are reduced weighted by sample count).
    """

    def __init__(self, n: int, rank: int, world: int, shuffle: bool, seed: int = 0):
        self.n, self.rank, self.world, self.shuffle, self.seed = n, rank, world, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.world))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.n // self.world
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices()) if not self.shuffle else self.n // self.world


def _localize_dataset(cfg: ExperimentConfig, say) -> ExperimentConfig:
    """A dataset on S3 (``kinetics:s3://bucket/k400``) is mirrored to this node's cache once
    (the local-rank-0 worker downloads, the others wait) and read from there."""
    uri = remote_dataset_uri(cfg.data)
    if uri is None:
        return cfg
    if ray.train.get_context().get_local_rank() == 0:
        say(f"[dynvid] mirroring dataset {uri} to the local cache")
        data = localize_dataset(cfg.data)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if ray.train.get_context().get_local_rank() != 0:
        data = localize_dataset(cfg.data)  # everything is present: only compares sizes
    return dataclasses.replace(cfg, data=data)


def _loader(dataset, batch_size: int, shuffle: bool, workers: int, drop_last: bool, seed: int = 0) -> DataLoader:
    """This worker's shard of ``dataset``, batches moved to the worker's device.

    On CUDA the batches are collated into pinned host memory and copied on a side stream
    (Ray's ``auto_transfer``), overlapped with the step; a plain ``.to(device)`` from pageable
    memory waits for every kernel queued before it, a host synchronisation per batch."""
    ctx = ray.train.get_context()
    cuda = ray.train.torch.get_device().type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), ctx.get_world_rank(), ctx.get_world_size(), shuffle, seed),
        num_workers=workers,
        drop_last=drop_last,
        collate_fn=getattr(dataset, "collate_fn", None),  # e.g. detection targets kept as lists
        persistent_workers=False,  # re-pickle each epoch so set_epoch reaches the workers
        pin_memory=cuda,
    )
    return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False, auto_transfer=cuda)


def _set_epoch(loader, dataset, epoch: int) -> None:
    dataset.set_epoch(epoch)
    if isinstance(getattr(loader, "sampler", None), ShardSampler):
        loader.sampler.set_epoch(epoch)


def local_pretrained(task: Task, cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with each ``s3://`` pretrained setting of the Task replaced by this node's copy
    (``fetch_checkpoint``: cached, reused while unchanged); the loader reads local files."""
    remote = {key: spec for key, spec in task.pretrained_specs(cfg).items() if is_remote(spec)}
    return apply_overrides(cfg, [f"{key}={fetch_checkpoint(spec)}" for key, spec in remote.items()]) if remote else cfg


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = from_dict(ExperimentConfig, loop_config["experiment"], where="train_loop_config.experiment")
    task: Task = get_task(loop_config["method"], cfg)
    stage = next(s for s in task.stages if s.name == loop_config["stage"])
    cfg = stage.config(cfg)  # the stage's own schedule (e.g. VA-RED²'s finetune lr)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.train.seed + rank)
    torch.set_num_threads(max(1, int(cfg.train.threads or cfg.train.cpus_per_worker)))
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)

    # ---- data -------------------------------------------------------------------------------
    cfg = _localize_dataset(cfg, say)
    d = cfg.data
    train_ds, val_ds, own = stage_datasets(task, cfg, stage)  # own: the Task's data (e.g. LiteEval's feature cache)
    if d.ingest == "ray_data" and not own:
        train_loader = StreamedBatches(ray.train.get_dataset_shard("train"), d.batch_size, len(train_ds), world)
    else:
        train_loader = _loader(train_ds, d.batch_size, True, d.loader_workers, True, seed=cfg.train.seed)
    val_loader = _loader(val_ds, d.batch_size, False, d.loader_workers, False)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"train split has {len(train_ds)} videos, fewer than one batch of "
                         f"{d.batch_size} per worker × {world} workers")
    task.set_steps_per_epoch(steps_per_epoch)

    # ---- model, optimizer, schedule ---------------------------------------------------------
    model = task.build_model(cfg, train_ds.num_classes, stage)
    start_epoch, global_step = 0, 0
    ckpt = ray.train.get_checkpoint()
    init_from = loop_config.get("init_from")
    state = None
    if ckpt is not None:
        with ckpt.as_directory() as path:
            state = load_checkpoint(path)
        say(f"[dynvid] resuming {loop_config['run_name']} from epoch {state['metadata']['epoch'] + 1}")
    elif init_from:
        init = load_checkpoint(fetch_checkpoint(init_from))
        missing, unexpected = model.load_state_dict(init["model"], strict=False)
        say(f"[dynvid] initialised from {init_from} (missing keys: {len(missing)}, unexpected: {len(unexpected)})")
    if state is not None:
        model.load_state_dict(state["model"])
    elif not init_from:  # the stage starts fresh: from the method's pretrained weights, if any
        for line in task.load_pretrained(model, local_pretrained(task, cfg), stage):
            say(line)
    if cfg.train.sync_batchnorm and world > 1 and cfg.train.use_gpu:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=task.ddp_kwargs)
    device = ray.train.torch.get_device()
    amp = _Amp(cfg.train.amp, device)
    lr_mults = task.lr_multipliers(model, stage)
    optimizer = build_optimizer(model.parameters(), cfg.optim, lr_mults)
    scheduler = build_scheduler(optimizer, cfg.optim, math.ceil(steps_per_epoch / cfg.train.grad_accum_steps))
    if state is not None and state["train_state"] is not None:
        optimizer.load_state_dict(state["train_state"]["optimizer"])
        scheduler.load_state_dict(state["train_state"]["scheduler"])
        start_epoch = state["metadata"]["epoch"] + 1
        global_step = state["train_state"]["global_step"]

    bad = _bad_videos(train_ds, val_ds)
    skipped = ""
    if any(bad.values()):
        skipped = f" ({bad.get('data_bad_videos_train', 0)} / {bad.get('data_bad_videos_val', 0)} skipped: missing or unreadable)"
    say(f"[dynvid] {task.name}/{stage.name}: {len(train_ds)} train / {len(val_ds)} val videos{skipped}, "
        f"{train_ds.num_classes} classes, {world} worker(s), {steps_per_epoch} steps/epoch, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params")

    # ---- epochs -----------------------------------------------------------------------------
    tracker = Tracker(loop_config.get("mlflow_tracking_uri"), cfg.train.mlflow_experiment, loop_config["run_name"],
                      {"method": loop_config["method"], "stage": loop_config["stage"], **to_dict(cfg)},
                      enabled=rank == 0, parent_run_id=loop_config.get("mlflow_parent_run_id"))
    run = StageRun(cfg, task, stage, loop_config, model, optimizer, scheduler, amp, train_ds, train_loader,
                   val_loader, tracker, say)
    try:
        _epochs(run, start_epoch, global_step, state)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()


@dataclass
class StageRun:
    """Everything the epoch loop of one stage works with, built by ``train_loop_per_worker``."""

    cfg: ExperimentConfig
    task: Task
    stage: Stage
    loop_config: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    amp: "_Amp"
    train_ds: torch.utils.data.Dataset
    train_loader: Iterable
    val_loader: Iterable
    tracker: Tracker
    say: Callable[..., None]


def _epochs(run: StageRun, start_epoch: int, global_step: int, state: dict | None) -> None:
    """The epoch loop of one stage: train, evaluate, test after the last, report + checkpoint."""
    cfg, task, stage, loop_config, say = run.cfg, run.task, run.stage, run.loop_config, run.say
    model, optimizer, scheduler, amp, tracker = run.model, run.optimizer, run.scheduler, run.amp, run.tracker
    train_ds, train_loader, val_loader = run.train_ds, run.train_loader, run.val_loader
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    steps_per_epoch = len(train_loader)
    epochs = cfg.optim.epochs
    if start_epoch >= epochs:  # a finished run submitted again: report what it reached
        say(f"[dynvid] {loop_config['run_name']} already trained {epochs} epochs; reporting its final metrics")
        ray.train.report(dict(state["metadata"]["metrics"]))
    for epoch in range(start_epoch, epochs):
        _set_epoch(train_loader, train_ds, epoch)
        model.train()
        t0, seen, sums = time.perf_counter(), 0, {}
        meter = _StepMeter(t0)
        accum = cfg.train.grad_accum_steps
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(train_loader):
            meter.batch_ready()
            _maybe_inject_failure(loop_config.get("inject_failure"), epoch, step)
            last_micro = (step + 1) % accum == 0 or step + 1 == steps_per_epoch
            # DDP all-reduces gradients only on the micro-batch that steps the optimizer.
            sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with amp.autocast():
                    loss, logs = task.training_step(model, batch, stage)
                meter.check_loss(loss)
                amp.backward(loss / accum)
            if last_micro:
                amp.step(optimizer, model.parameters(), cfg.optim.grad_clip)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            global_step += 1
            n = len(batch[1])
            seen += n
            for k, v in logs.items():  # a tensor stays on its device: read once per log line
                v = v.detach().float() if torch.is_tensor(v) else float(v)
                sums[k] = sums.get(k, 0.0) + v * n
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps_per_epoch:
                means = _host_means(sums, seen)  # the one host synchronisation of the window
                meter.raise_if_nonfinite(epoch, step)
                spent = time.perf_counter() - t0
                left = (steps_per_epoch - step - 1) + steps_per_epoch * (epochs - epoch - 1)
                say(f"[dynvid] {stage.name} epoch {epoch + 1}/{epochs} step {step + 1}/{steps_per_epoch} "
                    + " ".join(f"{k}={v:.4f}" for k, v in means.items())
                    + f" lr={scheduler.get_last_lr()[0]:.4g} {seen * world / spent:.1f} clips/s"
                    + f" {meter.split(step + 1)} ETA {_duration(spent / (step + 1) * left)}")
            meter.step_done()
        elapsed = time.perf_counter() - t0
        meter.raise_if_nonfinite(epoch, steps_per_epoch - 1)
        metrics = {f"train_{k}": v for k, v in _host_means(sums, max(seen, 1)).items()}
        metrics.update(epoch=epoch + 1, lr=scheduler.get_last_lr()[0], num_classes=train_ds.num_classes,
                       throughput_clips_per_s=seen * world / elapsed, epoch_time_s=elapsed,
                       data_wait_s=meter.waited, data_wait_fraction=meter.waited / max(elapsed, 1e-9))
        metrics.update(_bad_videos(train_ds, getattr(val_loader, "dataset", None)))
        metrics.update(task.end_epoch(model, stage, say))  # before the evaluation and checkpoint it may change
        last = epoch + 1 == epochs
        if cfg.train.eval_every > 0 and (last or (epoch + 1) % cfg.train.eval_every == 0):
            val = reduce_metrics(task.evaluate(model, val_loader, stage))
            metrics.update({f"val_{k}": v for k, v in val.items()})
            say(f"[dynvid] epoch {epoch + 1}/{epochs} val " + _summary(val, task) + f" ({elapsed:.0f}s)")
        if last and cfg.train.final_test:
            test_ds = task.test_dataset(cfg)
            if test_ds is not None:
                metrics.update(_final_test(cfg, task, stage, model, test_ds, say))
        tracker.log_metrics(metrics, step=epoch + 1)
        _report(metrics, model, optimizer, scheduler, cfg, loop_config, epoch, global_step, rank)


def _bad_videos(train_ds, val_ds) -> dict[str, int]:
    """``data_bad_videos_{train,val}``: the missing or unreadable videos each dataset skipped
    (those with a ``bad_videos`` record; counted at load, plus any this process met since)."""
    return {f"data_bad_videos_{name}": len(ds.bad_videos)
            for name, ds in (("train", train_ds), ("val", val_ds)) if hasattr(ds, "bad_videos")}


def _summary(val: dict[str, float], task: Task) -> str:
    """The evaluation line: accuracies, the method's own metrics (``Task.summary_metrics``) and
    GFLOPs (``clip-1 0.4120 clip-5 … GFLOPs 0.238``)."""
    parts = []
    for key, value in val.items():
        if key.endswith(("_top1", "_top5")):
            parts.append(f"{key.replace('_top', '-')} {value:.4f}")
    parts += [f"{label} {fmt.format(val[key])}" for label, key, fmt in task.summary_metrics if key in val]
    parts.append(f"GFLOPs {val['gflops_avg']:.3f}")
    return " ".join(parts)


class _StepMeter:
    """Where a training epoch's wall time goes, and the loss check, without a host
    synchronisation per step.

    *Data wait* is the time the loop is blocked on the loader (from the end of one step to
    the next batch in hand); *step* is the rest (forward, backward, optimizer, logging). On
    CUDA the step's kernels run asynchronously, so a step's device time is paid at the next
    synchronisation, the log line's read of the running means (:func:`_host_means`); over a
    log window ``wait + step`` is the wall time, and a wait near 0 means the device, not the
    data, sets the pace.

    The loss is checked for inf/NaN on the device and read at each log line, not after
    every step (``if not torch.isfinite(loss)`` would stall the CUDA queue once a step); a
    non-finite loss stops the run at the end of its log window, before any checkpoint."""

    def __init__(self, start: float):
        self.waited = 0.0
        self._start = self._mark = start
        self._bad: torch.Tensor | None = None  # count of non-finite losses since the last check
        self._window_start = 0

    def batch_ready(self) -> None:
        now = time.perf_counter()
        self.waited += now - self._mark
        self._mark = now

    def step_done(self) -> None:
        self._mark = time.perf_counter()

    def check_loss(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).sum()
        self._bad = bad if self._bad is None else self._bad + bad

    def raise_if_nonfinite(self, epoch: int, step: int) -> None:
        if self._bad is not None:
            count = int(self._bad)
            if count:
                raise FloatingPointError(f"non-finite loss in {count} of steps {self._window_start + 1}–{step + 1} "
                                         f"of epoch {epoch + 1} (checked once per log line, train.log_every)")
            self._bad = None
        self._window_start = step + 1

    def split(self, steps: int) -> str:
        """``data 12 ms step 150 ms``: the mean per step over the ``steps`` done this epoch."""
        busy = time.perf_counter() - self._start - self.waited
        return f"data {1000 * self.waited / steps:.0f} ms step {1000 * busy / steps:.0f} ms"


def _host_means(sums: dict[str, float | torch.Tensor], count: int) -> dict[str, float]:
    """The running sums divided by ``count``, as Python floats; the tensors among them (a
    Task's logs stay on the device, see ``Task.training_step``) are read in one transfer."""
    keys = [k for k, v in sums.items() if torch.is_tensor(v)]
    read = dict(zip(keys, torch.stack([sums[k].reshape(()) for k in keys]).tolist())) if keys else {}
    return {k: read.get(k, v) / max(count, 1) for k, v in sums.items()}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Amp:
    """Mixed precision on CUDA: float16 autocast + GradScaler. On CPU the run stays float32:
    bfloat16 autocast of 3-D convolutions died with SIGILL (illegal instruction) on CPUs
    without AVX512-BF16, a crash no Python code can catch, so CPU AMP is refused with a
    warning rather than attempted."""

    def __init__(self, enabled: bool, device: torch.device):
        if enabled and device.type != "cuda":
            print("[dynvid] train.amp is CUDA-only; training in float32 on CPU", flush=True)
            enabled = False
        self.enabled = enabled
        self.device_type = device.type
        self.dtype = torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer, params, grad_clip: float | None) -> None:
        if grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()


def _maybe_inject_failure(spec: str | None, epoch: int, step: int) -> None:
    """Fault injection for tests and chaos drills (``fit(..., inject_failure=...)``): with
    ``spec = "MARKER:EPOCH:STEP"`` (1-based) the rank-0 worker process dies at that step
    unless the file ``MARKER`` exists; it creates ``MARKER`` first, so the worker group
    that Ray starts in its place goes on."""
    if not spec or ray.train.get_context().get_world_rank() != 0:
        return
    marker, at_epoch, at_step = spec.rsplit(":", 2)
    if (epoch + 1, step + 1) == (int(at_epoch), int(at_step)) and not os.path.exists(marker):
        open(marker, "w").close()
        print(f"[dynvid] injected failure: worker exits at epoch {epoch + 1} step {step + 1}", flush=True)
        os._exit(1)


def _final_test(cfg: ExperimentConfig, task: Task, stage, model, test_ds, say) -> dict[str, float]:
    """The Task's final test (``Task.test_dataset``; by default K-LeftCenterRight video-level
    accuracy on the val split, thesis Sec. 4.3), as ``test_*`` metrics."""
    d = cfg.data
    loader = _loader(test_ds, max(1, d.batch_size // 4), False, d.loader_workers, False)
    t0 = time.perf_counter()
    test = reduce_metrics(task.evaluate(model, loader, stage))
    say(f"[dynvid] test ({int(test['num_samples'])} samples): {_summary(test, task)} ({time.perf_counter() - t0:.0f}s)")
    return {f"test_{k}": v for k, v in test.items()}


def _report(metrics, model, optimizer, scheduler, cfg, loop_config, epoch, global_step, rank) -> None:
    with tempfile.TemporaryDirectory(prefix="dynvid-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(
                tmp,
                model,
                config=to_dict(cfg),
                metadata={"method": loop_config["method"], "stage": loop_config["stage"], "epoch": epoch,
                          "run_name": loop_config["run_name"],
                          "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}},
                train_state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "global_step": global_step},
            )
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)

