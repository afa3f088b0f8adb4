"""Ray Tune sweeps: accuracy–efficiency Pareto fronts of a method's knobs.

``run_sweep(spec)`` runs one sweep (a :class:`~dynvid.engine.sweep_spec.SweepSpec`, from a
``search_spaces/*.yaml`` file) on the Ray cluster this process belongs to:

- **training sweeps** (``kind: training``): each trial is a Tune function that drives the
  engine's Ray Train run (:func:`dynvid.engine.trainer.fit`) with the trial's knobs — the
  Train V2 pattern: the Tune trial is the Train driver, and Tune's ``TuneReportCallback``
  forwards every epoch's metrics, so ASHA stops trials early on the accuracy objective.
  The trial driver reserves no CPU (only a little memory): the CPUs belong to its Ray Train
  workers, and ``max_concurrent_trials`` is fitted to how many trials' workers the cluster
  holds at once.
- **policy sweeps** (``kind: policy``): each trial trains a method's learned policy (Looking
  Fast and Slow's DQN interleaving policy, with RLlib: :mod:`dynvid.engine.rl`) on one frozen
  checkpoint from the Task's ``policy_spec``, with the trial's knobs (the speed reward γ), and
  reports the policy's evaluation. The trial is a placement group: a bundle of ``cpus_per_trial`` for
  the learner and one bundle per env runner (the Task's ``policy_runner_bundles``), so
  RLlib's env-runner actors land in the trial's own reservation.
- **inference sweeps** (``kind: inference``): knobs that act only at test time (the
  method's ``inference_knobs``) are swept over one trained checkpoint — a folder, an
  ``s3://`` URI or ``models:/NAME@ALIAS`` — without retraining; each trial loads it,
  applies its knobs, evaluates, and reports. Many cheap trials run in parallel.

Search: ``grid`` (Tune's grid search; ``num_samples`` repeats the grid), ``random``, or
``optuna`` — Optuna's multi-objective NSGA-II sampler through
``OptunaSearch(metric=[…], mode=[…])``, which optimises all objectives at once.

Tracking: the sweep is an MLflow parent run (the spec as params); every trial is a child
run with its knobs as params (a training trial's stages are its own children), so MLflow's
compare view works across trials. After the trials, the Pareto front and its hypervolume
(:mod:`dynvid.metrics.pareto`) are computed and the report (:mod:`dynvid.engine.sweep_report`:
table, PNG, interactive HTML, JSON, CSV) is written to ``<storage>/sweeps/<name>/report``
and logged to the parent run. Tune's own files (``progress.csv``, ``result.json``,
TensorBoard events) stay in each trial's folder under ``<storage>/sweeps/<name>``.

Rerunning a sweep with the same name and storage resumes it (``Tuner.restore``): finished
trials are kept, unfinished and failed ones run again.

ASHA stops a trial by killing its actor, and with it the trial's Ray Train controller; Ray
Train's placement-group cleaner then frees the trial's CPUs/GPUs, which needs Ray's State
API, i.e. the dashboard (on by default with ``ray start --head``; a cluster started with
``include_dashboard=False`` keeps a stopped trial's resources until it shuts down).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, to_dict
from dynvid.data.datasets import build_clip_dataset, build_test_dataset
from dynvid.engine import tracking
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.ingest import localize_dataset
from dynvid.engine.preflight import check_inputs, resolve_local_paths
from dynvid.engine.registry import load_registered_with_config
from dynvid.engine.rl import train_policy
from dynvid.engine.storage import check_storage, fetch_checkpoint, is_remote, ray_storage, upload_dir
from dynvid.engine.sweep_report import front_table, report_data, write_report
from dynvid.engine.sweep_spec import SweepSpec, _flow
from dynvid.engine.task import get_task, presets
from dynvid.metrics.pareto import hypervolume, pareto_front

__all__ = ["SweepResult", "Trial", "run_sweep", "load_for_inference", "fitted_concurrency", "sweep_dir"]

#: what a trial driver reserves: no CPU (its Ray Train workers hold those), a little memory
#: (Tune refuses an empty resource request)
DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 1024**2}
KNOB_TAG = "dynvid.knobs"
SPEC_FILE = "dynvid_sweep_spec.json"
#: what a resumed sweep must share with the run it resumes
_RESUME_KEYS = ("method", "kind", "knobs", "objectives", "search", "budget", "stages", "preset", "overrides")
SWEEP_TAG = "dynvid.sweep"


@dataclass
class Trial:
    trial_id: str
    knobs: dict
    metrics: dict
    status: str
    """``TERMINATED`` (finished or stopped by ASHA), ``ERROR``, …"""
    error: str | None = None
    iterations: int = 0
    """Reports the trial made (epochs for a training trial)."""


@dataclass
class SweepResult:
    spec: SweepSpec
    path: str
    """The sweep's folder (Tune's experiment folder, holding ``report/``)."""
    trials: list[Trial] = field(default_factory=list)
    front: list[int] = field(default_factory=list)
    """Indices into ``trials`` of the non-dominated trials."""
    hypervolume: float = 0.0
    reference_point: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    """Paths of the report files (``png``, ``html``, ``json``, ``csv``, ``markdown``)."""
    parent_run_id: str | None = None

    def table(self) -> str:
        return front_table(report_data(self))


def sweep_dir(storage_path: str) -> str:
    """Where sweeps live under a storage path: ``<storage>/sweeps``."""
    return f"{storage_path.rstrip('/')}/sweeps"


def fitted_concurrency(spec: SweepSpec, cfg: ExperimentConfig, cluster: dict[str, float]) -> int:
    """How many trials run at once: the spec's ``max_concurrent_trials`` if set, else as many as
    the cluster's CPUs (and GPUs) hold — a training trial needs its Ray Train workers'
    resources, an inference trial ``cpus_per_trial``."""
    if spec.budget.max_concurrent_trials:
        return spec.budget.max_concurrent_trials
    cpus = cluster.get("CPU", 1.0)
    if spec.kind == "inference":
        return max(1, int(cpus // spec.budget.cpus_per_trial))
    if spec.kind == "policy":
        runners = sum(b.get("CPU", 0.0) for b in get_task(spec.method, cfg).policy_runner_bundles(cfg))
        return max(1, int(cpus // (spec.budget.cpus_per_trial + runners)))
    t = cfg.train
    fits = int(cpus // (t.num_workers * t.cpus_per_worker)) if t.cpus_per_worker > 0 else 1
    if t.use_gpu:
        fits = min(fits, int(cluster.get("GPU", 0) // t.num_workers))
    return max(1, fits)


def _param_space(spec: SweepSpec) -> dict:
    from ray import tune

    space = {}
    for key, dist in spec.knobs.items():
        (name, arg), = dist.items()
        if name == "grid":
            space[key] = tune.grid_search(list(arg))
        elif name == "choice":
            space[key] = tune.choice(list(arg))
        elif name == "uniform":
            space[key] = tune.uniform(*arg)
        elif name == "loguniform":
            space[key] = tune.loguniform(*arg)
        elif name == "randint":
            space[key] = tune.randint(int(arg[0]), int(arg[1]))
        elif name == "quniform":
            space[key] = tune.quniform(*arg)
    return {"knobs": space}


def _knob_overrides(knobs: dict) -> list[str]:
    return [f"{k}={_flow(v.item() if hasattr(v, 'item') else v)}" for k, v in knobs.items()]


# ---- trials (run in Tune's trial actors) ----------------------------------------------------

def _trial_tags(spec: SweepSpec, trial_id: str, knobs: dict) -> dict:
    """MLflow tags of a trial's run: its sweep, trial id and knobs."""
    return {SWEEP_TAG: spec.name, "dynvid.trial_id": trial_id, KNOB_TAG: json.dumps(knobs)}


def _training_trial(config: dict, context: dict) -> None:
    """One training trial: the engine's stages with this trial's knobs, metrics streamed to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from dynvid.engine.trainer import fit  # imports Ray

    spec: SweepSpec = context["spec"]
    trial_id = tune.get_context().get_trial_id()
    knobs = dict(config["knobs"])
    cfg = from_dict(ExperimentConfig, context["config"], where="sweep config")
    cfg = apply_overrides(cfg, _knob_overrides(knobs) + [f"train.name={spec.name}_{trial_id}"])
    print(f"[dynvid] sweep {spec.name} trial {trial_id}: {knobs}", flush=True)
    fit(cfg, method=spec.method, init_from=spec.init_from, register=False, stages=spec.stages,
        train_callbacks=[TuneReportCallback()], parent_run_id=context.get("parent_run_id"),
        run_tags=_trial_tags(spec, trial_id, knobs), report=False)


def _inference_trial(config: dict, context: dict) -> None:
    """One inference trial: the checkpoint with this trial's knobs, evaluated once."""
    from ray import tune


    spec: SweepSpec = context["spec"]
    trial_id = tune.get_context().get_trial_id()
    knobs = dict(config["knobs"])
    torch.set_num_threads(max(1, int(spec.budget.cpus_per_trial)))
    t0 = time.perf_counter()
    model, cfg, stage_name = load_for_inference(spec.init_from, spec.override_list() + _knob_overrides(knobs),
                                                context.get("tracking_uri"))
    task = get_task(spec.method, cfg)
    stage = next(s for s in task.stages if s.name == stage_name)
    metrics = evaluate_checkpoint(task, model, cfg, stage, need_test=any(k.startswith("test_") for k in spec.objectives))
    metrics["eval_time_s"] = time.perf_counter() - t0
    _finish_trial(spec, context, trial_id, knobs, metrics)


def _finish_trial(spec: SweepSpec, context: dict, trial_id: str, knobs: dict, metrics: dict) -> None:
    """Log a one-report trial (inference, policy) as a child run of the sweep, then report its
    numeric metrics to Tune."""
    from ray import tune


    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    uri = context.get("tracking_uri")
    if uri:
        experiment = context["config"]["train"]["mlflow_experiment"]  # the sweep's, not the checkpoint's
        run_id = tracking.open_trial_run(uri, experiment, f"{spec.name}_{trial_id}",
                                         {**knobs, "checkpoint": spec.init_from},
                                         _trial_tags(spec, trial_id, knobs), context["parent_run_id"])
        tracking.finish_job_run(uri, run_id, numeric)
    tune.report(numeric)


def _policy_trial(config: dict, context: dict) -> None:
    """One policy trial: a learned policy trained on the frozen checkpoint with this trial's
    knobs (:func:`dynvid.engine.rl.train_policy` with the Task's ``policy_spec`` and
    ``evaluate_policy``), evaluated once, reported."""
    from ray import tune


    spec: SweepSpec = context["spec"]
    trial_id = tune.get_context().get_trial_id()
    knobs = dict(config["knobs"])
    torch.set_num_threads(max(1, int(spec.budget.cpus_per_trial)))
    cfg = from_dict(ExperimentConfig, context["config"], where="sweep config")
    cfg = apply_overrides(cfg, _knob_overrides(knobs))
    print(f"[dynvid] sweep {spec.name} trial {trial_id}: {knobs}", flush=True)
    t0 = time.perf_counter()
    out_dir = f"{context['path']}/policies/{trial_id}"
    metrics = train_policy(get_task(spec.method, cfg), cfg, spec.init_from, out_dir, context.get("tracking_uri"))
    metrics["train_time_s"] = time.perf_counter() - t0
    _finish_trial(spec, context, trial_id, knobs, metrics)


def evaluate_checkpoint(task, model, cfg: ExperimentConfig, stage, need_test: bool = False) -> dict:
    """``val_*`` metrics (clip-1, GFLOPs avg/min/max from the cost meter) of ``model`` on the
    config's val split, and ``test_*`` (K-LeftCenterRight video-1/5) when ``need_test``."""

    d = localize_dataset(cfg.data)  # an s3:// dataset reads from this node's mirror
    val = task.eval_dataset(dataclasses.replace(cfg, data=d))  # the method's own (e.g. detection videos)
    if val is None:
        val = build_clip_dataset(d, d.val_split, "val", seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(val, batch_size=d.batch_size, collate_fn=getattr(val, "collate_fn", None))
    metrics = {f"val_{k}": v for k, v in task.evaluate(model, loader, stage).items()}
    if need_test:
        test = build_test_dataset(d, cfg.train.test_videos, seed=cfg.train.seed)
        loader = torch.utils.data.DataLoader(test, batch_size=max(1, d.batch_size // 4))
        metrics.update({f"test_{k}": v for k, v in task.evaluate(model, loader, stage).items()})
    return metrics


def load_for_inference(uri: str, overrides: list[str], tracking_uri: str | None = None):
    """The model of a checkpoint, rebuilt with its own config plus ``overrides`` (inference
    knobs, evaluation settings), in eval mode. Returns ``(model, cfg, stage_name)``.

    Args:
        uri: a checkpoint folder, an ``s3://`` checkpoint, or ``models:/NAME@ALIAS`` /
            ``models:/NAME/VERSION`` from the registry (read at ``tracking_uri``).
    """

    if uri.startswith("models:/"):
        module, saved = load_registered_with_config(tracking_uri, uri)
        state, config, method, stage_name = module.state_dict(), saved["config"], saved["method"], saved["stage"]
        num_classes = None
    else:
        ckpt = load_checkpoint(fetch_checkpoint(uri))
        state, config = ckpt["model"], ckpt["config"]
        method, stage_name = ckpt["metadata"]["method"], ckpt["metadata"]["stage"]
        num_classes = ckpt["metadata"].get("metrics", {}).get("num_classes")
    cfg = apply_overrides(from_dict(ExperimentConfig, config, where=f"{uri} config"), overrides)
    task = get_task(method, cfg)
    stage = next((s for s in task.stages if s.name == stage_name), task.stages[-1])
    if not num_classes:
        num_classes = task.num_classes_from_state(state)
    model = task.build_model(cfg, num_classes, stage)
    model.load_state_dict(state)
    return model.eval(), cfg, stage.name


# ---- the driver -------------------------------------------------------------------------------

def run_sweep(spec: SweepSpec, storage_path: str | None = None, tracking_uri: str | None = "default",
              smoke_test: bool = False, seed: int = 0) -> SweepResult:
    """Run ``spec`` with Ray Tune, compute its Pareto front, write and log its report.

    Args:
        spec: the sweep.
        storage_path: where sweeps are written (``<storage>/sweeps/<name>``; local or ``s3://``);
            default: the config's ``train.storage_path``.
        tracking_uri: MLflow tracking URI; ``"default"`` = the config's; None = no tracking.
        smoke_test: the method's ``smoke`` preset on top of the spec's config (tiny budget).
        seed: seed of the random / Optuna search.
    """
    import ray
    from ray import tune

    from dynvid.engine.trainer import init_ray  # imports Ray

    cfg = spec.base_config()
    if smoke_test and "smoke" in presets(spec.method):  # last: a tiny budget whatever the spec says
        cfg = apply_overrides(cfg, presets(spec.method)["smoke"])
    storage = storage_path or cfg.train.storage_path
    if not is_remote(storage):
        storage = os.path.abspath(os.path.expanduser(storage))  # absolute: trial actors run in their own folders
    if spec.init_from and not is_remote(spec.init_from) and not spec.init_from.startswith("models:/"):
        spec = dataclasses.replace(spec, init_from=os.path.abspath(os.path.expanduser(spec.init_from)))
    check_storage(storage)
    if spec.init_from and not spec.init_from.startswith("models:/"):
        fetch_checkpoint(spec.init_from)  # a missing checkpoint fails here, not once per trial
    cfg = apply_overrides(cfg, [f"train.storage_path={storage}"])
    uri = cfg.train.mlflow_tracking_uri if tracking_uri == "default" else tracking_uri
    if uri:
        uri = tracking.resolve_tracking_uri(uri)
        tracking.check_tracking_uri(uri)
    elif spec.init_from and spec.init_from.startswith("models:/"):
        raise ConfigError(f"{spec.source}: init_from {spec.init_from} is in the MLflow registry; give a tracking URI")
    cfg = apply_overrides(cfg, [f"train.mlflow_tracking_uri={_flow(uri)}"])
    # before Ray: absolute local paths (trial actors run in their own folders); a training
    # sweep's config and datasets are checked once here rather than failing in every trial
    cfg = check_inputs(cfg, spec.method)[0] if spec.kind == "training" else resolve_local_paths(cfg)[0]
    init_ray()
    cluster = ray.cluster_resources()
    if spec.kind == "training" and cfg.train.use_gpu and cluster.get("GPU", 0) < cfg.train.num_workers:
        raise ConfigError(f"{spec.source}: train.use_gpu with {cfg.train.num_workers} worker(s) per trial, but the "
                          f"cluster has {cluster.get('GPU', 0):g} GPU(s)")

    root, filesystem = ray_storage(sweep_dir(storage))
    path = f"{sweep_dir(storage)}/{spec.name}"
    _check_same_spec(spec, path)
    parent = tracking.start_sweep_run(uri, cfg.train.mlflow_experiment, spec.name,
                                      {"sweep": spec.to_dict(), "base": to_dict(cfg)}) if uri else None
    try:
        if spec.kind == "training" and not spec.init_from:
            spec = _shared_prefix(spec, cfg)
        concurrency = fitted_concurrency(spec, cfg, cluster)
        # the validated spec itself (a plain dataclass, pickled once by with_parameters)
        context = {"spec": spec, "config": to_dict(cfg), "tracking_uri": uri, "parent_run_id": parent, "path": path}
        if spec.kind == "training":
            trainable = tune.with_resources(tune.with_parameters(_training_trial, context=context), DRIVER_RESOURCES)
        elif spec.kind == "policy":  # one placement group per trial: the learner's bundle, then each env runner's
            runners = get_task(spec.method, cfg).policy_runner_bundles(cfg)
            trainable = tune.with_resources(tune.with_parameters(_policy_trial, context=context),
                                            tune.PlacementGroupFactory([{"CPU": spec.budget.cpus_per_trial}] + runners))
        else:
            trainable = tune.with_resources(tune.with_parameters(_inference_trial, context=context),
                                            {"CPU": spec.budget.cpus_per_trial})
        print(f"[dynvid] sweep {spec.name}: {spec.kind}, {spec.search} search over {', '.join(spec.knobs)}; "
              f"objectives {', '.join(f'{k} ({d})' for k, d in spec.objectives.items())}; "
              f"{concurrency} trial(s) at a time -> {path}", flush=True)
        tuner = _tuner(spec, trainable, root, filesystem, concurrency, cfg, seed)
        grid = tuner.fit()
        result = _collect(spec, grid, path, _total_epochs(spec, cfg) if spec.kind == "training" else None)
        result.parent_run_id = parent
        if parent:
            _close_stopped_runs(uri, parent)
        _finish(result, storage, uri, parent)
    except BaseException:
        if parent:
            tracking.finish_job_run(uri, parent, {}, status="FAILED")
        raise
    return result


def _check_same_spec(spec: SweepSpec, path: str) -> None:
    """A rerun resumes the sweep in ``path``; Tune restores the stored search space, so a
    changed spec would be ignored silently: refuse it, naming the keys that differ."""

    if is_remote(path):
        return  # the spec is stored with the report; Tune's own state guards the S3 case
    stored = Path(path) / SPEC_FILE
    current = {k: v for k, v in spec.to_dict().items() if k in _RESUME_KEYS}
    if stored.is_file():
        before = json.loads(stored.read_text())
        changed = sorted(k for k in _RESUME_KEYS if before.get(k) != json.loads(json.dumps(current.get(k))))
        if changed:
            raise ConfigError(f"{spec.source}: sweep {spec.name!r} already ran in {path} with other "
                              f"{', '.join(changed)}; rerunning it resumes it, so give the changed sweep a new name")
    else:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(current, indent=2, default=str))


def _close_stopped_runs(uri: str, parent: str) -> None:
    """Trials that ASHA stopped were killed with their Ray Train run: mark their MLflow runs
    (and their stages') KILLED instead of leaving them RUNNING."""

    client = tracking.mlflow_client(uri)
    experiment = client.get_run(parent).info.experiment_id
    pending = [parent]
    while pending:
        runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{pending.pop()}'")
        for run in runs:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
            pending.append(run.info.run_id)


def _shared_prefix(spec: SweepSpec, cfg: ExperimentConfig) -> SweepSpec:
    """A training sweep whose ``stages`` start after the method's first stage, with no
    ``init_from``: the earlier stages do not depend on the knobs, so they are trained once,
    under a deterministic name (a rerun finds them done), and every trial starts from their
    checkpoint. Returns the spec with that ``init_from``."""
    from dynvid.engine.trainer import fit  # imports Ray

    stages = get_task(spec.method, cfg).stages
    names = [s.name for s in stages]
    if not spec.stages or spec.stages[0] == names[0]:
        return spec
    prefix = names[: names.index(spec.stages[0])]
    for stage in stages[: len(prefix)]:
        for key in spec.knobs:
            if not any(key == k or key.startswith(f"{k}.") for k in stage.independent_of):
                raise ConfigError(f"{spec.source}: stages: knob {key} may change stage {stage.name!r}, which "
                                  f"would be shared by every trial; list {stage.name!r} in stages, or give init_from")
    print(f"[dynvid] sweep {spec.name}: stages {', '.join(prefix)} do not depend on the knobs; trained once "
          "and shared by every trial", flush=True)
    shared = fit(apply_overrides(cfg, [f"train.name={spec.name}-shared"]), method=spec.method, stages=prefix,
                 register=False, report=False)
    ckpt = shared.stages[-1].checkpoint_path
    if ckpt is None:
        raise RuntimeError(f"sweep {spec.name}: the shared stages {prefix} left no checkpoint")
    return dataclasses.replace(spec, init_from=ckpt)


def _tuner(spec: SweepSpec, trainable, root: str, filesystem, concurrency: int, cfg: ExperimentConfig, seed: int):
    from ray import tune

    storage_path = root
    experiment = f"{root.rstrip('/')}/{spec.name}"
    exists = tune.Tuner.can_restore(experiment, storage_filesystem=filesystem) if filesystem is not None \
        else tune.Tuner.can_restore(experiment)
    if exists:
        print(f"[dynvid] resuming sweep {spec.name} from {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=False, restart_errored=True,
                                  storage_filesystem=filesystem)
    search_alg, scheduler = None, None
    metrics, modes = list(spec.objectives), list(spec.objectives.values())
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        from dynvid.engine._optuna import PicklableNSGAIISampler  # imports Optuna

        search_alg = OptunaSearch(metric=metrics, mode=modes, sampler=PicklableNSGAIISampler(seed=seed))
    elif spec.search == "random":
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=seed)
    if spec.kind == "training" and spec.budget.asha is not None:
        from ray.tune.schedulers import ASHAScheduler

        asha = dict(spec.budget.asha)
        asha.setdefault("max_t", _total_epochs(spec, cfg))
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=spec.accuracy_metric, mode="max",
                                  max_t=int(asha["max_t"]), grace_period=int(asha.get("grace_period", 1)),
                                  reduction_factor=float(asha.get("reduction_factor", 2)))
    return tune.Tuner(
        trainable,
        param_space=_param_space(spec),
        tune_config=tune.TuneConfig(num_samples=spec.budget.num_samples, max_concurrent_trials=concurrency,
                                    search_alg=search_alg, scheduler=scheduler),
        run_config=tune.RunConfig(name=spec.name, storage_path=storage_path, storage_filesystem=filesystem,
                                  verbose=1, failure_config=tune.FailureConfig(max_failures=0)),
    )


def _total_epochs(spec: SweepSpec, cfg: ExperimentConfig) -> int:
    """Reports a training trial makes: the epochs of the stages it runs."""

    stages = [s for s in get_task(spec.method, cfg).stages if spec.stages is None or s.name in spec.stages]
    return max(1, sum(s.config(cfg).optim.epochs for s in stages))


def _collect(spec: SweepSpec, grid, path: str, full_iterations: int | None = None) -> SweepResult:
    """Trials, front and hypervolume from Tune's results. A training trial that ASHA stopped
    before its last epoch is ``STOPPED_EARLY`` and kept off the front: its metrics are those
    of an unfinished model."""
    statuses = {t.trial_id: t.status for t in getattr(grid, "_experiment_analysis").trials}
    trials = []
    for res in grid:
        m = dict(res.metrics or {})
        trial_id = m.get("trial_id") or os.path.basename(str(res.path)).split("_")[-1]
        knobs = {k: (v.item() if hasattr(v, "item") else v) for k, v in ((res.config or {}).get("knobs") or {}).items()}
        metrics = {k: float(v) for k, v in m.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        trials.append(Trial(trial_id=trial_id, knobs=knobs, metrics=metrics,
                            status="ERROR" if res.error else statuses.get(trial_id, "TERMINATED"),
                            error=str(res.error).splitlines()[0][:300] if res.error else None,
                            iterations=int(m.get("training_iteration", 0))))
        if full_iterations and trials[-1].error is None and trials[-1].iterations < full_iterations:
            trials[-1].status = "STOPPED_EARLY"
    trials.sort(key=lambda t: t.trial_id)
    result = SweepResult(spec=spec, path=path, trials=trials)
    complete = [i for i, t in enumerate(trials) if t.error is None and t.status != "STOPPED_EARLY"
                and all(k in t.metrics for k in spec.objectives)]
    points = [[trials[i].metrics[k] for k in spec.objectives] for i in complete]
    directions = list(spec.objectives.values())
    result.front = [complete[j] for j in pareto_front(points, directions)]
    result.reference_point = dict(spec.reference_point) if spec.reference_point else _default_reference(spec, points)
    if points:
        ref = [result.reference_point[k] for k in spec.objectives]
        result.hypervolume = hypervolume(points, directions, ref)
    return result


def _default_reference(spec: SweepSpec, points: list[list[float]]) -> dict:
    """The worst observed value of each objective, pushed 10% of its range (or 10% of its
    value when all trials agree) further, so that every point bounds some volume."""
    ref = {}
    for j, (key, direction) in enumerate(spec.objectives.items()):
        values = [p[j] for p in points] or [0.0]
        lo, hi = min(values), max(values)
        margin = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1.0
        ref[key] = lo - margin if direction == "max" else hi + margin
    return ref


def _finish(result: SweepResult, storage: str, uri: str | None, parent: str | None) -> None:
    local = not is_remote(storage)
    tmp = None if local else tempfile.mkdtemp(prefix="dynvid-sweep-")
    out_dir = os.path.join(result.path if local else tmp, "report")  # logged to MLflow as report/
    result.report = write_report(result, out_dir)
    if not local:
        upload_dir(out_dir, f"{result.path}/report")
    print(f"\n[dynvid] sweep {result.spec.name}: {len(result.trials)} trials, {len(result.front)} on the Pareto "
          f"front, hypervolume {result.hypervolume:.4g}\n{result.table()}\n[dynvid] report: "
          f"{result.report['html']} (interactive), {result.report['png']}", flush=True)
    if parent:
        metrics = {"num_trials": len(result.trials), "front_size": len(result.front),
                   "hypervolume": result.hypervolume,
                   "num_errors": sum(t.error is not None for t in result.trials)}
        tracking.finish_job_run(uri, parent, metrics, results_markdown=result.report["markdown_text"],
                                artifacts=[out_dir])
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
