"""The driver: run a method's stages with Ray Train.

``fit(cfg, method)`` checks its input on the driver (:mod:`dynvid.engine.preflight`), starts
(or joins) Ray, then for each stage of the method builds a ``TorchTrainer`` over
:func:`dynvid.engine.worker.train_loop_per_worker` and runs it; a stage with
``init_from_previous`` starts from the previous stage's checkpoint. Run names are
deterministic (``{run_name}-{stage}``, the run name ending with a hash of the run's identity:
:mod:`dynvid.engine.identity`), so rerunning the same job resumes each stage from its last
checkpoint instead of starting over, and a run on other data or settings starts its own.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from dynvid.config import ExperimentConfig, apply_overrides, to_dict
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine import registry, tracking
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.ingest import build_train_dataset, localize_dataset
from dynvid.engine.preflight import prepare_run
from dynvid.engine.storage import credential_env, fetch_checkpoint, is_remote, ray_storage
from dynvid.engine.worker import train_loop_per_worker
from dynvid.tables import format_table
from dynvid.task import Task

__all__ = ["fit", "EpochHistory", "StageResult", "FitResult", "init_ray"]


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
    registered: dict | None = None
    """``{"name", "version", "model_uri"}`` of the registered final model, if any."""
    report: dict | None = None
    """The method's own report (``Task.report``): ``{"metrics", "table", "artifacts", "dir"}``."""
    columns: tuple[tuple[str, str, str], ...] = Task.summary_columns
    """The results table's quality columns: the method's ``Task.summary_columns``."""

    @property
    def metrics(self) -> dict:
        return self.stages[-1].metrics if self.stages else {}

    def table(self, markdown: bool = False) -> str:
        """One row per stage: epochs, the method's quality columns (``Task.summary_columns``),
        measured GFLOPs per sample (a clip, or a whole video), wall time."""
        cols = [("stage", "stage", "{}"), ("epochs", "epoch", "{:.0f}"), *self.columns,
                ("GFLOPs", "val_gflops_avg", "{:.3f}"), ("time", "stage_time_s", "{:.0f}s")]
        rows = []
        for st in self.stages:
            values = {**st.metrics, "stage": st.stage}
            rows.append([fmt.format(values[key]) if values.get(key) is not None else "–" for _, key, fmt in cols])
        return format_table([name for name, _, _ in cols], rows, markdown)


class EpochHistory(ray.train.UserCallback):
    """Every epoch's metrics of the stages a :func:`fit` runs, for the driver (a learning
    curve): pass it as ``fit(..., train_callbacks=[history])``, then read
    ``history.epochs()``, rank 0's reported metrics in order (a stage found finished reports
    its final metrics only). Ray Train calls the callback in its controller process, so the
    metrics travel back through a Ray queue: create it once Ray runs (:func:`init_ray`)."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self._queue = Queue(actor_options={"num_cpus": 0})
        self._seen: list[dict] = []

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        self._queue.put(dict(metrics[0]))

    def epochs(self) -> list[dict]:
        """The metrics reported so far, one dict per epoch."""
        while not self._queue.empty():
            self._seen.append(self._queue.get())
        return list(self._seen)


# Ray Train V2 tees every worker print into its logger as well, which shows each line twice
# on the driver; the worker loop prints its own progress, so keep plain prints.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def local_ray_options(env_vars: dict[str, str] | None = None) -> dict:
    """``ray.init`` arguments of a local instance that this process starts: the dashboard on a
    free 127.0.0.1 port, and every worker told where it is (``RAY_API_SERVER_ADDRESS``, with
    ``WORKER_ENV`` and ``env_vars``, in the job's runtime env).

    Ray Train's placement-group cleaner asks the State API (served by the dashboard) whether a
    trial's controller died, and frees its CPUs when it did (a sweep trial stopped by ASHA).
    Left to find the API itself, a worker of an instance started by ``ray.init`` reads
    ``/tmp/ray/ray_current_cluster`` — the last ``ray start`` head on the machine, which may be
    long dead (every call then times out after a minute and the stopped trial's CPUs stay
    reserved: the next training waits for them forever) — or, without that file, scans the
    running GCS processes and refuses when it finds two."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**WORKER_ENV, **(env_vars or {}), "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    return {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
            "runtime_env": {"env_vars": env}}


def _last_ray_start() -> tuple[str | None, bool]:
    """The address the last ``ray start`` on this machine recorded (``ray_current_cluster`` in
    Ray's temp folder), and whether a GCS still answers there (a TCP connect, 2 s)."""
    import socket

    from ray._private.utils import read_ray_address

    try:
        address = read_ray_address()
    except OSError:
        return None, False
    if not address:
        return None, False
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return address, True
    except (OSError, ValueError):
        return address, False


def init_ray(address: str | None = None) -> None:
    """Join the cluster this process belongs to (a ``ray job`` driver, ``RAY_ADDRESS``; or the
    running head of the last ``ray start`` on this machine) or start a local one; quiet when
    already initialised. A head that ``ray start`` recorded but that no longer runs is
    ignored with a note: ``ray.init()`` would wait for it forever."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:  # a job on a cluster: its runtime env (cluster/runtime_env.yaml) sets WORKER_ENV
        ray.init(address=address, log_to_driver=True)
        return
    # workers get the S3/MLflow credentials of this process (never printed)
    recorded, alive = _last_ray_start()
    if alive:
        ray.init(address=recorded, log_to_driver=True,
                 runtime_env={"env_vars": {**WORKER_ENV, **credential_env()}})
        return
    if recorded:
        print(f"[dynvid] the last 'ray start' on this machine recorded a head at {recorded}, which does not "
              "answer: starting a local Ray instance instead", flush=True)
    ray.init(address="local", log_to_driver=True, **local_ray_options(credential_env()))


def fit(
    cfg: ExperimentConfig,
    method: str = "static",
    init_from: str | None = None,
    inject_failure: str | None = None,
    register: bool = True,
    stages: list[str] | None = None,
    train_callbacks: list | None = None,
    parent_run_id: str | None = None,
    run_tags: dict | None = None,
    report: bool = True,
) -> FitResult:
    """Train every stage of ``method`` on Ray Train; returns the metrics of each stage.

    Before Ray starts, :func:`dynvid.engine.preflight.prepare_run` makes local paths absolute
    and checks the config's ranges, the storage path, the MLflow tracking URI, the start
    checkpoint and the datasets of the first stage (bad input fails here in seconds, naming
    the file, line, key or URI), and settles the run's name and identity (a name reused for
    another experiment is refused: :mod:`dynvid.engine.identity`). With tracking on, the job
    is an MLflow parent run and each stage a child run (logged by the rank-0 worker); at the
    end the final model is logged and registered (alias ``candidate``) with a model card.

    Args:
        cfg: the experiment.
        method: a name from ``dynvid.engine.task.TASKS``.
        init_from: checkpoint (directory or ``s3://`` URI) the first stage starts from.
        inject_failure: fault injection for tests and drills, ``"MARKER:EPOCH:STEP"``: the
            rank-0 worker dies once at that step (see ``worker._maybe_inject_failure``).
        register: log and register the final model in the MLflow registry.
        stages: run only these of the method's stages (in its order; e.g. a sweep that
            retrains VA-RED²'s finetune from one dynamic checkpoint). None = all.
        train_callbacks: Ray Train ``UserCallback``s of every stage (a sweep passes Tune's
            ``TuneReportCallback`` so each epoch's metrics reach Tune and ASHA).
        parent_run_id: MLflow run the job's run becomes a child of (a sweep's run).
        run_tags: extra tags of the job's MLflow run (a sweep trial's knobs).
        report: run the method's driver-side report (``Task.report``) after the last stage.
    """
    run = prepare_run(cfg, method, init_from, stages)  # every check and the run's name, before Ray starts
    cfg, task, run_stages, init_from, run_name, uri = (run.cfg, run.task, run.stages, run.init_from, run.run_name,
                                                       run.tracking_uri)
    init_ray()
    storage, filesystem = ray_storage(cfg.train.storage_path)
    shown = cfg.train.storage_path if is_remote(cfg.train.storage_path) else storage
    result = FitResult(run_name=run_name, storage_path=shown, columns=task.summary_columns)
    parent = tracking.start_job_run(uri, cfg.train.mlflow_experiment, run_name,
                                    {"method": method, **to_dict(cfg)},
                                    tags={"dynvid.run_identity": run.identity.digest, **dict(run_tags or {})},
                                    parent_run_id=parent_run_id) if uri else None
    try:
        datasets = _ray_datasets(cfg)
        previous = init_from
        for stage in run_stages:
            stage_name = f"{run_name}-{stage.name}"
            print(f"[dynvid] stage {stage.name}: {stage.description} -> {shown}/{stage_name}", flush=True)
            stage_init = previous if (stage.init_from_previous or previous == init_from) else None
            # a stage this run already trained to the end: its result, without a worker group or the
            # stage's driver-side work (a callback, e.g. a sweep's report to Tune, needs the run's own
            # report: it goes through Ray)
            done = None if train_callbacks else finished_stage(storage, filesystem, stage_name, stage.name,
                                                               stage.config(cfg).optim.epochs)
            if done is not None:
                print(f"[dynvid] stage {stage.name}: {shown}/{stage_name} already trained its "
                      f"{done.metrics['epoch']:.0f} epochs; its result is reused, nothing is started", flush=True)
                result.stages.append(done)
                previous = done.checkpoint_path
                continue
            # driver-side work between stages (LiteEval's feature cache); most methods have none
            stage_cfg = cfg
            stage_overrides = task.prepare_stage(cfg, stage, stage_init)
            if stage_overrides:
                stage_cfg = apply_overrides(cfg, stage_overrides)
            trainer = TorchTrainer(
                train_loop_per_worker,
                datasets=datasets,
                train_loop_config={
                    "experiment": to_dict(stage_cfg),
                    "method": method,
                    "stage": stage.name,
                    "run_name": stage_name,
                    "init_from": stage_init,
                    "inject_failure": inject_failure,
                    "mlflow_tracking_uri": uri,
                    "mlflow_parent_run_id": parent,
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
                    callbacks=list(train_callbacks or []),
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
        if report:
            result.report = _method_report(task, cfg, result, storage if filesystem is None else None)
        if parent:
            _finish_tracking(cfg, task, method, uri, parent, result, register)
    except BaseException:
        if parent:
            tracking.finish_job_run(uri, parent, {}, status="FAILED")
        raise
    return result


def finished_stage(storage: str, filesystem, run_name: str, stage: str, epochs: int) -> StageResult | None:
    """The result of ``stage``'s Ray Train run ``run_name`` under ``storage`` (``ray_storage``'s path and
    filesystem) when its latest checkpoint is that of its last epoch (reported ``epoch`` >=
    ``epochs``), else None (no such run, or one to resume).

    It is what ``TorchTrainer.fit`` gives for the run started again (its latest checkpoint and
    the metrics Ray Train stored with it; the worker only reports the metrics its checkpoint
    saved, ``worker._epochs``), read from the run's Ray Train state
    (``ray.train.Result.from_path``) instead of from a controller and a worker group started for
    it, ~10 s per stage on a 2-core machine. The metrics are the numeric, finite ones the
    checkpoint's metadata keeps, without ``stage_time_s`` (nothing trained). Unlike a run
    started again, it leaves the stage's MLflow child run as it is (finished by the run that
    trained it)."""
    try:
        found = ray.train.Result.from_path(f"{storage}/{run_name}", storage_filesystem=filesystem)
    except RuntimeError:  # no run folder, or no Ray Train state in it: never started
        return None
    metrics = found.metrics or {}
    if found.checkpoint is None or metrics.get("epoch", 0) < epochs:
        return None
    path = found.checkpoint.path
    return StageResult(stage=stage, run_name=run_name,
                       metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
                       checkpoint_path=f"s3://{path}" if filesystem is not None else path)


def _method_report(task, cfg: ExperimentConfig, result: FitResult, local_storage: str | None) -> dict | None:
    """Run the method's driver-side report into ``<storage>/<run>-report`` (a temporary folder
    when storage is remote: the files then live in MLflow) and print its table; None when the
    method writes no report (its folder is removed again)."""
    local_dir = os.path.join(local_storage, f"{result.run_name}-report") if local_storage else None
    existed = local_dir is not None and os.path.isdir(local_dir)
    out_dir = local_dir or tempfile.mkdtemp(prefix="dynvid-report-")
    os.makedirs(out_dir, exist_ok=True)
    written = task.report(cfg, result.stages, out_dir)
    if written is None:
        if not existed and not os.listdir(out_dir):
            os.rmdir(out_dir)  # the local folder, or the temporary one of remote storage
        return None
    print(f"[dynvid] {task.name} report -> {out_dir}", flush=True)
    report = dict(written)
    report["dir"] = out_dir
    if report.get("table"):
        print(f"\n{report['table']}", flush=True)
    return report


def _ray_datasets(cfg: ExperimentConfig) -> dict | None:
    """``TorchTrainer(datasets=...)`` for ``data.ingest=ray_data``; None for DataLoaders."""
    if cfg.data.ingest == "torch":
        return None
    if cfg.data.ingest != "ray_data":
        raise ValueError(f"data.ingest: unknown ingest {cfg.data.ingest!r}; valid: torch, ray_data")

    data = localize_dataset(cfg.data)  # the driver needs the list of videos only
    n = len(build_clip_dataset(data, data.train_split, "train"))
    return {"train": build_train_dataset(cfg.data, n, cfg.train.seed, cfg.data.decoders, cfg.data.cpus_per_decoder)}


def _finish_tracking(cfg, task, method, uri, parent, result: FitResult, register: bool) -> None:
    """Close the job's MLflow run: final metrics, results table, final checkpoint, and the
    registered model with its card."""
    m = result.metrics
    cost = {k: v for k, v in m.items() if "gflops" in k}
    ckpt_dir = fetch_checkpoint(result.stages[-1].checkpoint_path) if result.stages[-1].checkpoint_path else None
    backbone = task.backbone_label(cfg)
    name = registry.registered_name(method, backbone, cfg.data.dataset)
    checkpoint = result.stages[-1].checkpoint_path
    known = {v["tags"].get("checkpoint") for v in registry.list_models(uri)
             if v["name"] == name}  # a finished job submitted again is not registered twice
    if register and ckpt_dir and checkpoint not in known:
        ckpt = load_checkpoint(ckpt_dir)
        model = task.build_model(cfg, int(m["num_classes"]))
        model.load_state_dict(ckpt["model"])
        model.eval()
        accuracy = m.get("test_video_top1", m.get("val_video_top1", m.get("val_clip_top1", m.get("val_AP50",
                         m.get("val_mIoU")))))
        card = registry.model_card(name, method, backbone, cfg.data.dataset, m, cost, to_dict(cfg))
        example = task.example_input(cfg)
        result.registered = registry.log_and_register(
            uri, parent, model, example, name,
            {"method": method, "backbone": backbone, "dataset": cfg.data.dataset,
             "gflops": cost.get("val_gflops_avg"), "accuracy": accuracy, "checkpoint": checkpoint}, card,
            build_info={"config": to_dict(cfg), "method": method, "stage": result.stages[-1].stage})
        print(f"[dynvid] registered {name} version {result.registered['version']} "
              f"(alias candidate): models:/{name}@candidate", flush=True)
    with tempfile.TemporaryDirectory(prefix="dynvid-report-") as tmp:
        curves = tracking.plot_training_curves(uri, parent, f"{tmp}/training_curves.png")
        artifacts = [p for p in (ckpt_dir, curves) if p]
        report = result.report or {}
        artifacts += list(report.get("artifacts", []))
        tables = result.table(markdown=True) + (f"\n\n{report['markdown']}" if report.get("markdown") else "")
        tracking.finish_job_run(uri, parent, {**m, "cost": cost, **report.get("metrics", {})},
                                results_markdown=tables, artifacts=artifacts)
