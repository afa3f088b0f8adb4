"""Sweep specifications: the YAML files of ``search_spaces/``, validated on load.

A spec names one method's accuracy–efficiency knobs, their ranges, the objectives whose
Pareto front the sweep reports, and the budget. Every error names the file and the key::

    name: vared_efficiency            # sweep name: run folder, MLflow parent run
    method: vared                     # a dynvid method (dynvid.engine.task.TASKS)
    kind: training                    # training (each trial trains) | inference (one checkpoint)
                                      # | policy (each trial trains a learned policy on one checkpoint)
    preset: embedded                  # optional: the method's named base config (training)
    overrides:                        # optional: dotted config keys for every trial
      data.synthetic_val_videos: 240
    stages: [dynamic, finetune]       # training: the stages a trial runs (default: all)
    init_from: runs/…-base/checkpoint_…   # training: checkpoint the first stage starts from;
                                      # inference: required, local / s3:// / models:/NAME@ALIAS
    knobs:                            # config keys -> Tune distributions
      vared.efficiency_weight: {grid: [0.0, 0.4, 0.8, 1.6]}
      vared.search_space: {choice: [2, 3]}
      # also {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]} (hi exclusive),
      # {quniform: [lo, hi, q]}
    objectives:                       # metric -> direction; the first "max" one is the
      val_clip_top1: max              # accuracy that ASHA stops on, the first "min" one the
      val_gflops_avg: min             # cost on the plot's x axis
    search: grid                      # grid | random | optuna (multi-objective NSGA-II)
    budget:
      num_samples: 1                  # grid: repeats of the grid; random/optuna: trials
      max_concurrent_trials: null     # null = as many as the cluster's CPUs/GPUs fit
      cpus_per_trial: 1               # inference trials
      asha: {grace_period: 1, reduction_factor: 2}   # training; null = no early stopping
    reference_point: {val_clip_top1: 0.0, val_gflops_avg: 0.3}   # hypervolume bound (optional)
    baselines:                        # marked on the plot (e.g. a paper's numbers)
      - {name: "static R(2+1)D-18", val_clip_top1: 0.41, val_gflops_avg: 0.238}

Whether knobs need retraining is the ``kind``: an inference sweep may only sweep knobs that
leave the checkpoint's weights valid, which the method declares
(``Task.inference_knobs``); anything else is refused with the list of valid ones. A policy
sweep (Looking Fast and Slow's DQN interleaving policy) trains, per trial, a policy on top
of one frozen checkpoint (``init_from``) with the engine's RLlib runner (``dynvid.engine.rl``), and may
only sweep the method's ``policy_knobs`` (e.g. the speed reward γ).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, read_yaml
from dynvid.engine.task import TASKS, get_task, presets
from dynvid.task import PolicyTask

__all__ = ["SweepSpec", "Budget", "load_spec", "spec_from_dict", "knob_values", "DISTRIBUTIONS"]

KINDS = ("training", "inference", "policy")
SEARCHES = ("grid", "random", "optuna")
DISTRIBUTIONS = {"grid": None, "choice": None, "uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3}
_TOP_KEYS = ("name", "method", "kind", "preset", "overrides", "stages", "init_from", "knobs", "objectives", "search",
             "budget", "reference_point", "baselines", "description")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass
class Budget:
    num_samples: int = 1
    """Grid: repeats of the whole grid; random / optuna: the number of trials."""
    max_concurrent_trials: int | None = None
    """None = as many as the cluster fits (CPUs and GPUs over the resources of one trial)."""
    cpus_per_trial: float = 1.0
    """CPUs of one inference trial (a training trial reserves its Ray Train workers instead)."""
    asha: dict | None = None
    """``{grace_period, reduction_factor, max_t}`` of ASHA on the accuracy objective (training
    sweeps); None = every trial runs to the end."""


@dataclass
class SweepSpec:
    """A validated sweep (see the module docstring for the file format)."""

    name: str
    method: str
    kind: str
    knobs: dict[str, dict]
    objectives: dict[str, str]
    source: str = "<dict>"
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None
    init_from: str | None = None
    search: str = "grid"
    budget: Budget = field(default_factory=Budget)
    reference_point: dict[str, float] | None = None
    baselines: list[dict] = field(default_factory=list)
    description: str = ""

    @property
    def accuracy_metric(self) -> str:
        """The first objective to maximise (ASHA's metric, the plot's y axis)."""
        return next((k for k, d in self.objectives.items() if d == "max"), next(iter(self.objectives)))

    @property
    def cost_metric(self) -> str:
        """The first objective to minimise (the plot's x axis)."""
        return next((k for k, d in self.objectives.items() if d == "min"), list(self.objectives)[-1])

    def override_list(self) -> list[str]:
        """``overrides`` as ``key=value`` strings (values dumped as YAML flow)."""
        return [f"{k}={_flow(v)}" for k, v in self.overrides.items()]

    def base_config(self) -> ExperimentConfig:
        """Defaults → the method's preset → ``overrides`` (training sweeps)."""

        base = presets(self.method).get(self.preset, []) if self.preset else []
        return apply_overrides(ExperimentConfig(), [*base, *self.override_list()])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file; ``overrides`` (``key=value``) change top-level or
    nested spec keys first (``budget.num_samples=2``, ``init_from=s3://…``)."""
    path = Path(path)
    data = read_yaml(path, "sweep file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with keys {', '.join(_TOP_KEYS)}")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"spec override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"spec override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return spec_from_dict(data, str(path))


def spec_from_dict(data: dict, source: str = "<dict>") -> SweepSpec:
    """Validate a spec mapping; errors are prefixed with ``source`` and the key."""

    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise _err(source, f"unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_KEYS)}")
    for key in ("name", "method", "kind", "knobs", "objectives"):
        if key not in data:
            raise _err(source, f"missing required key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name or set(name) - _NAME_CHARS:
        raise _err(f"{source}: name", f"must be letters, digits, '_', '.', '-', got {name!r}")
    method = data["method"]
    if method not in TASKS:
        raise _err(f"{source}: method", f"unknown method {method!r}; valid: {', '.join(sorted(TASKS))}")
    kind = data["kind"]
    if kind not in KINDS:
        raise _err(f"{source}: kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    search = data.get("search", "grid")
    if search not in SEARCHES:
        raise _err(f"{source}: search", f"must be one of {', '.join(SEARCHES)}, got {search!r}")

    preset = data.get("preset")
    if preset is not None and preset not in presets(method):
        raise _err(f"{source}: preset", f"{method} has no preset {preset!r}; valid: "
                   f"{', '.join(sorted(presets(method))) or 'none'}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _err(f"{source}: overrides", "must be a mapping of dotted config keys to values")
    knobs = data["knobs"]
    if not isinstance(knobs, dict) or not knobs:
        raise _err(f"{source}: knobs", "must be a non-empty mapping of dotted config keys to distributions")
    for key, dist in knobs.items():
        _check_distribution(f"{source}: knobs.{key}", dist, search)
    objectives = data["objectives"]
    if not isinstance(objectives, dict) or not objectives:
        raise _err(f"{source}: objectives", "must map metric names to 'max' or 'min'")
    for key, direction in objectives.items():
        if direction not in ("max", "min"):
            raise _err(f"{source}: objectives.{key}", f"must be 'max' or 'min', got {direction!r}")
    budget = _budget(f"{source}: budget", data.get("budget") or {})
    spec = SweepSpec(name=name, method=method, kind=kind, knobs={k: dict(v) for k, v in knobs.items()},
                     objectives=dict(objectives), source=source, preset=preset, overrides=dict(overrides),
                     stages=data.get("stages"), init_from=data.get("init_from"), search=search, budget=budget,
                     reference_point=data.get("reference_point"), baselines=list(data.get("baselines") or []),
                     description=str(data.get("description") or ""))

    # every config key must exist and every value be one the method accepts: build the base
    # config, then each listed knob value (the bounds of a range) into a config and a Task
    try:
        cfg = spec.base_config()
        task = get_task(method, cfg)
    except (ConfigError, ValueError) as exc:
        raise _err(f"{source}: overrides", str(exc)) from None
    for key, dist in spec.knobs.items():
        for value in knob_values(dist):
            try:
                get_task(method, apply_overrides(cfg, [f"{key}={_flow(value)}"]))
            except (ConfigError, ValueError) as exc:
                raise _err(f"{source}: knobs.{key}", f"value {value!r}: {exc}") from None
    if spec.init_from is not None and not isinstance(spec.init_from, str):
        raise _err(f"{source}: init_from", f"must be a path or URI string, got {spec.init_from!r}")
    if kind == "training" and (search == "optuna" or budget.asha is not None):
        late = [k for k in spec.objectives if k.startswith("test_")]
        if late:  # Tune checks that every epoch's report has the searcher's / scheduler's metrics
            raise _err(f"{source}: objectives.{late[0]}", "is measured after the last epoch only; optuna and ASHA "
                       "need an objective every epoch reports (val_*)")
    stage_names = [s.name for s in task.stages]
    if spec.stages is not None:
        if kind == "inference":
            raise _err(f"{source}: stages", "an inference sweep trains nothing; remove 'stages'")
        if kind == "policy":
            raise _err(f"{source}: stages", "a policy sweep trains no model stage; remove 'stages'")
        if not isinstance(spec.stages, list) or not spec.stages:
            raise _err(f"{source}: stages", f"must be a non-empty list of {', '.join(stage_names)}")
        for s in spec.stages:
            if s not in stage_names:
                raise _err(f"{source}: stages", f"{method} has no stage {s!r}; valid: {', '.join(stage_names)}")
        if spec.stages != [s for s in stage_names if s in spec.stages]:
            raise _err(f"{source}: stages", f"stages must keep the method's order: {', '.join(stage_names)}")
    if kind == "policy":
        if not isinstance(task, PolicyTask):
            raise _err(f"{source}: kind", f"{method} has no learned policy to train; valid kinds for it: "
                       "training, inference")
        if not spec.init_from:
            raise _err(f"{source}: init_from", "a policy sweep trains on a frozen checkpoint: give it "
                       "(a folder, s3://… or models:/NAME@ALIAS)")
        allowed = task.policy_knobs
        for key in spec.knobs:
            if key not in allowed:
                raise _err(f"{source}: knobs.{key}", f"is not a policy knob of {method}; valid: {', '.join(allowed)}")
        if budget.asha is not None:
            raise _err(f"{source}: budget.asha", "a policy sweep reports once per trial; ASHA has nothing to stop")
    if kind == "inference":
        if not spec.init_from:
            raise _err(f"{source}: init_from", "an inference sweep needs the checkpoint to evaluate "
                       "(a folder, s3://… or models:/NAME@ALIAS)")
        allowed = task.inference_knobs
        for key in spec.knobs:
            if key not in allowed:
                raise _err(f"{source}: knobs.{key}", f"needs retraining (kind: training); the inference-time "
                           f"knobs of {method} are: {', '.join(allowed) or 'none'}")
        if budget.asha is not None:
            raise _err(f"{source}: budget.asha", "ASHA stops training trials; an inference sweep has nothing to stop")
    for what, mapping in (("reference_point", spec.reference_point or {}),):
        if not isinstance(mapping, dict):
            raise _err(f"{source}: {what}", "must map each objective to a number")
        for key, value in mapping.items():
            if key not in spec.objectives:
                raise _err(f"{source}: {what}.{key}", f"not an objective; objectives: {', '.join(spec.objectives)}")
            if not _finite(value):
                raise _err(f"{source}: {what}.{key}", f"must be a finite number, got {value!r}")
        if mapping and set(mapping) != set(spec.objectives):
            missing = sorted(set(spec.objectives) - set(mapping))
            raise _err(f"{source}: {what}", f"needs a value for every objective; missing: {', '.join(missing)}")
    for i, baseline in enumerate(spec.baselines):
        where = f"{source}: baselines[{i}]"
        if not isinstance(baseline, dict) or "name" not in baseline:
            raise _err(where, "must be a mapping with a 'name' and objective values")
        for key in (spec.accuracy_metric, spec.cost_metric):
            if not _finite(baseline.get(key)):
                raise _err(where, f"needs a finite number for {key!r} (the plotted objectives)")
    return spec


def knob_values(dist: dict) -> list:
    """The values to check a knob with: every listed value of a grid / choice, the bounds of
    a range (``randint``'s upper bound is exclusive)."""
    (name, arg), = dist.items()
    if name in ("grid", "choice"):
        return list(arg)
    if name == "randint":
        return [int(arg[0]), int(arg[1]) - 1]
    return [float(arg[0]), float(arg[1])]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_distribution(where: str, dist: Any, search: str) -> None:
    if not isinstance(dist, dict) or len(dist) != 1:
        raise _err(where, f"must be one of {{{', '.join(f'{k}: …' for k in DISTRIBUTIONS)}}}, got {dist!r}")
    (name, arg), = dist.items()
    if name not in DISTRIBUTIONS:
        raise _err(where, f"unknown distribution {name!r}; valid: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(arg, list) or not arg:
        raise _err(where, f"{name} takes a non-empty list, got {arg!r}")
    size = DISTRIBUTIONS[name]
    if size is not None:
        if len(arg) != size or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg):
            raise _err(where, f"{name} takes {size} numbers, got {arg!r}")
        if arg[0] >= arg[1]:
            raise _err(where, f"{name}: the lower bound must be below the upper one, got {arg!r}")
        if name == "loguniform" and arg[0] <= 0:
            raise _err(where, f"loguniform needs a positive lower bound, got {arg!r}")
    if name == "grid" and search != "grid":
        raise _err(where, f"grid values need search: grid (this sweep uses {search}); use choice instead")
    if search == "grid" and name != "grid" and name != "choice":
        raise _err(where, f"search: grid enumerates grid/choice knobs only; {name} needs search: random or optuna")


def _budget(where: str, data: dict) -> Budget:
    if not isinstance(data, dict):
        raise _err(where, "must be a mapping")
    valid = [f.name for f in dataclasses.fields(Budget)]
    for key in data:
        if key not in valid:
            raise _err(where, f"unknown key {key!r}; valid keys: {', '.join(valid)}")
    budget = Budget(**data)
    if not isinstance(budget.num_samples, int) or budget.num_samples < 1:
        raise _err(f"{where}.num_samples", f"must be a positive integer, got {budget.num_samples!r}")
    if budget.max_concurrent_trials is not None and (not isinstance(budget.max_concurrent_trials, int)
                                                     or budget.max_concurrent_trials < 1):
        raise _err(f"{where}.max_concurrent_trials", f"must be a positive integer or null, got "
                   f"{budget.max_concurrent_trials!r}")
    if not isinstance(budget.cpus_per_trial, (int, float)) or budget.cpus_per_trial <= 0:
        raise _err(f"{where}.cpus_per_trial", f"must be > 0, got {budget.cpus_per_trial!r}")
    if budget.asha is not None:
        if not isinstance(budget.asha, dict):
            raise _err(f"{where}.asha", "must be a mapping {grace_period, reduction_factor, max_t} or null")
        for key, value in budget.asha.items():
            if key not in ("grace_period", "reduction_factor", "max_t"):
                raise _err(f"{where}.asha", f"unknown key {key!r}; valid keys: grace_period, reduction_factor, max_t")
            if not isinstance(value, (int, float)) or value <= 0:
                raise _err(f"{where}.asha.{key}", f"must be a positive number, got {value!r}")
    return budget
