"""The driver: run a method's stages with Ray Train.

``fit(cfg, method)`` starts (or joins) Ray, then for each stage of the method builds a
``TorchTrainer`` over :func:`dynvid.engine.worker.train_loop_per_worker` and runs it; a
stage with ``init_from_previous`` starts from the previous stage's best checkpoint. Run
names are deterministic (``{run_name}-{stage}``), so rerunning the same job resumes each
stage from its last checkpoint instead of starting over.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import ray
import ray.train
from ray.train.torch import TorchTrainer

from dynvid.config import ExperimentConfig, to_dict
from dynvid.engine.storage import check_storage, credential_env, is_remote, ray_storage
from dynvid.engine.task import get_task
from dynvid.engine.worker import train_loop_per_worker

__all__ = ["fit", "StageResult", "FitResult", "init_ray"]


@dataclass
class StageResult:
    stage: str
    run_name: str
    metrics: dict
    checkpoint_path: str | None


@dataclass
class FitResult:
    run_name: str
    storage_path: str
    stages: list[StageResult] = field(default_factory=list)

    @property
    def metrics(self) -> dict:
        return self.stages[-1].metrics if self.stages else {}

    def table(self, markdown: bool = False) -> str:
        """One row per stage: epochs, accuracies, measured GFLOPs per clip, wall time."""
        cols = [("stage", "stage", "{}"), ("epochs", "epoch", "{:.0f}"), ("clip-1", "val_clip_top1", "{:.4f}"),
                ("clip-5", "val_clip_top5", "{:.4f}"), ("video-1", "test_video_top1", "{:.4f}"),
                ("video-5", "test_video_top5", "{:.4f}"), ("GFLOPs/clip", "val_gflops_avg", "{:.3f}"),
                ("time", "stage_time_s", "{:.0f}s")]
        rows = []
        for st in self.stages:
            values = {**st.metrics, "stage": st.stage}
            rows.append([fmt.format(values[key]) if values.get(key) is not None else "–" for _, key, fmt in cols])
        header = [name for name, _, _ in cols]
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        fmt_row = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
        return "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


# Ray Train V2 tees every worker print into its logger as well, which shows each line twice
# on the driver; the worker loop prints its own progress, so keep plain prints.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def init_ray(address: str | None = None) -> None:
    """Join the cluster this process belongs to (a ``ray job`` driver, ``RAY_ADDRESS``) or
    start a local one; quiet when already initialised."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:  # a job on a cluster: its runtime env (cluster/runtime_env.yaml) sets WORKER_ENV
        ray.init(address=address, log_to_driver=True)
    else:  # a local instance: workers get the S3/MLflow credentials of this process, never printed
        ray.init(log_to_driver=True, runtime_env={"env_vars": {**WORKER_ENV, **credential_env()}})


def fit(
    cfg: ExperimentConfig, method: str = "static", init_from: str | None = None, inject_failure: str | None = None
) -> FitResult:
    """Train every stage of ``method`` on Ray Train; returns the metrics of each stage.

    Args:
        cfg: the experiment.
        method: a name from ``dynvid.engine.task.TASKS``.
        init_from: checkpoint directory the first stage starts from (weights only).
        inject_failure: fault injection for tests and drills, ``"MARKER:EPOCH:STEP"``: the
            rank-0 worker dies once at that step (see ``worker._maybe_inject_failure``).
    """
    task = get_task(method, cfg)
    init_ray()
    run_name = cfg.run_name()
    check_storage(cfg.train.storage_path)  # an unreachable endpoint fails here, naming the URI
    storage, filesystem = ray_storage(cfg.train.storage_path)
    shown = cfg.train.storage_path if is_remote(cfg.train.storage_path) else storage
    result = FitResult(run_name=run_name, storage_path=shown)
    previous = init_from
    for stage in task.stages:
        stage_name = f"{run_name}-{stage.name}"
        print(f"[dynvid] stage {stage.name}: {stage.description} -> {shown}/{stage_name}", flush=True)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "experiment": to_dict(cfg),
                "method": method,
                "stage": stage.name,
                "run_name": stage_name,
                "init_from": previous if (stage.init_from_previous or previous == init_from) else None,
                "inject_failure": inject_failure,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.train.num_workers,
                use_gpu=cfg.train.use_gpu,
                resources_per_worker={"CPU": cfg.train.cpus_per_worker},
            ),
            run_config=ray.train.RunConfig(
                name=stage_name,
                storage_path=storage,
                storage_filesystem=filesystem,
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=cfg.train.checkpoints_to_keep,
                    checkpoint_score_attribute=cfg.train.checkpoint_score,
                    checkpoint_score_order=cfg.train.checkpoint_score_order,
                ),
                failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            ),
        )
        t0 = time.perf_counter()
        res = trainer.fit()
        ckpt = None
        if res.checkpoint is not None:  # an s3 checkpoint path is bucket-relative: give it back its scheme
            ckpt = f"s3://{res.checkpoint.path}" if filesystem is not None else res.checkpoint.path
        metrics = dict(res.metrics or {})
        metrics["stage_time_s"] = time.perf_counter() - t0
        result.stages.append(StageResult(stage.name, stage_name, metrics, ckpt))
        previous = ckpt
    print(f"\n[dynvid] results of {run_name}\n{result.table()}", flush=True)
    return result
