"""Typed configs: dataclasses with a docstring per field, YAML files, dotted CLI overrides.

Precedence: dataclass defaults → YAML file (``--config FILE``) → ``--set key=value``
overrides (``data.batch_size=4``, ``optim.lr=0.1``). Every key is checked: an unknown key is
an error that names it, where it came from, and the valid keys at that level; a value of the
wrong type is an error naming the key and the expected type. Configs become plain dicts
only at the Ray boundary (:func:`to_dict`) and are rebuilt with :func:`from_dict` on the
worker's first line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dynvid.methods.ant.config import AntConfig
from dynvid.methods.lfs.config import LFSConfig
from dynvid.methods.liteeval.config import LiteEvalConfig
from dynvid.methods.resq.config import ResQConfig
from dynvid.methods.vared.config import VaredConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "VaredConfig",
    "LiteEvalConfig",
    "LFSConfig",
    "AntConfig",
    "TrainConfig",
    "ExperimentConfig",
    "NOT_IN_RUN_IDENTITY",
    "RANGES",
    "check_ranges",
    "from_dict",
    "identity_config",
    "short_digest",
    "to_dict",
    "load_config",
    "preset_job_config",
    "read_yaml",
    "apply_overrides",
    "set_arguments",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and its source."""


@dataclass
class DataConfig:
    """Which videos, and how clips are cut from them (see ``dynvid.data``)."""

    dataset: str = "synthetic:actions"
    """Dataset spec: ``synthetic:actions`` (embedded procedural scenes), ``kinetics:DIR``
    (DIR holds ``{split}.csv`` or ``{split}_list.txt`` and the videos)."""
    train_split: str = "train"
    """Split name used for training (``{split}.csv`` / ``{split}_list.txt``)."""
    val_split: str = "val"
    """Split used for evaluation."""
    clip_len: int = 8
    """Frames per clip (VA-RED² uses 8 or 16 for R(2+1)D, Table 4.1)."""
    stride: int = 4
    """Temporal stride between sampled frames."""
    target_fps: float | None = None
    """Resample videos to this frame rate before sampling; None keeps each file's rate."""
    crop_size: int = 112
    """Network input side."""
    train_short_side: int = 128
    """Short side before the TSN multi-scale crop (training)."""
    test_short_side: int = 112
    """Short side before left/centre/right crops (testing)."""
    num_test_clips: int = 10
    """K of K-LeftCenterRight (VA-RED² Sec. 4.3: 10 on Kinetics)."""
    num_test_crops: int = 3
    """Crops per test clip: 3 (left/centre/right) or 1."""
    flip_prob: float | None = None
    """Training horizontal-flip probability; None = the dataset's default (0.5 for Kinetics;
    0 for the synthetic actions, whose classes depend on direction)."""
    batch_size: int = 16
    """Clips per worker per step."""
    loader_workers: int = 0
    """DataLoader worker processes per training worker (0 = decode in the training process)."""
    ingest: str = "torch"
    """``torch``: a DataLoader per training worker; ``ray_data``: decode + augment in Ray Data
    actors on CPU nodes, streamed to the trainers (see ``dynvid.engine.ingest``)."""
    decoders: int = 1
    """Ray Data decode actors (``ingest=ray_data``)."""
    cpus_per_decoder: float = 1.0
    """CPUs reserved per decode actor."""
    max_bad_fraction: float = 0.05
    """Tolerated fraction of missing/undecodable videos before a run fails."""
    synthetic_seed: int = 0
    """Seed of the synthetic scenes (content); augmentation follows ``train.seed``."""
    synthetic_train_videos: int = 1200
    """Videos in the synthetic train split."""
    synthetic_val_videos: int = 240
    """Videos in the synthetic val split."""
    synthetic_height: int = 128
    """Synthetic frame height (pixels)."""
    synthetic_width: int = 171
    """Synthetic frame width (pixels)."""
    synthetic_frames: int = 48
    """Frames per synthetic video."""
    synthetic_max_distractors: int = 3
    """Synthetic scenes: each video has 0 to this many distractor sprites."""
    synthetic_object_scale: float = 1.0
    """Synthetic scenes: sprite sizes times this (the actor capped at half the short side);
    the detection preset of Looking Fast and Slow uses larger objects for its coarse grid."""
    synthetic_noise_std: float | None = None
    """Synthetic scenes: sensor read noise, the standard deviation of a Gaussian added to every
    pixel, channel and frame in grey levels of [0, 255], deterministic from ``synthetic_seed``.
    None: the data's default, 2.0 for ``synthetic:segmentation`` (ResQ's residuals are then not
    exactly zero wherever the renderer repeated a pixel), 0 (noise-free) for the other synthetic data."""
    synthetic_shot_noise: float | None = None
    """Synthetic scenes: sensor shot noise gain, variance ``gain · v`` (grey levels²) at pixel value
    ``v`` on top of the read noise. None: 0.03 for ``synthetic:segmentation``, 0 for the other synthetic data."""
    synthetic_speed_changes: float = 0.0
    """Synthetic scenes: expected number of times the actor changes speed within a video
    (slow and fast spells, each ×0.25–4 of the video's speed); 0: one speed per video."""
    synthetic_transients: float = 0.0
    """Synthetic scenes: expected number of objects per video that enter the view and cross it
    (in a quarter to three quarters of the video, from a uniform frame on, so about half also
    leave before the end); 0: none."""
    synthetic_cuts: float = 0.0
    """Synthetic scenes: expected number of cuts per video, each at a uniform frame, where the
    camera switches to another view (new background, objects and actor, same action); 0: none."""
    synthetic_fades: float = 0.0
    """Synthetic scenes: expected number of fade spells per object, each 2–8 frames in which the
    object is drawn at 3–15% of its opacity and still labelled (shadow, haze: what the frame
    lacks, the frames before show); 0: none."""


@dataclass
class ModelConfig:
    """The network (see ``dynvid.backbones``)."""

    backbone: str = "r2plus1d_18"
    """Backbone name from ``dynvid.backbones.list_backbones()``."""
    width_mult: float = 1.0
    """Channel width multiplier (1.0 = the published network)."""
    num_classes: int | None = None
    """Output classes; None = the dataset's class count."""
    pretrained: str | None = None
    """Weights the network starts from when its first stage starts fresh: a torchvision weights
    name (``R2Plus1D_18_Weights.KINETICS400_V1``, read from torchvision's cache
    ``$TORCH_HOME/hub/checkpoints/`` or downloaded), or a state-dict file / checkpoint folder /
    ``s3://`` URI; the classifier is left out when the class count differs. None = from
    scratch (``dynvid.backbones.pretrained``)."""


@dataclass
class OptimConfig:
    """Optimizer and schedule (VA-RED² App. A.2: SGD + Nesterov, cosine decay with warm-up)."""

    optimizer: str = "sgd"
    """``sgd`` (Nesterov momentum) or ``adam``."""
    lr: float = 0.1
    """Peak learning rate for the whole (global) batch."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum (thesis App. A.2)."""
    weight_decay: float = 5e-4
    """L2 weight decay (thesis: 5e-4 for R(2+1)D)."""
    epochs: int = 10
    """Training epochs of the stage."""
    warmup_epochs: float = 1.0
    """Linear warm-up length, in epochs (fractions allowed)."""
    warmup_start_factor: float = 0.1
    """Warm-up starts at this fraction of ``lr``."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value; None = no clipping."""


@dataclass
class TrainConfig:
    """How the run executes on Ray."""

    name: str | None = None
    """Run name (resume key); None = derived from the config."""
    storage_path: str = "./runs"
    """Where Ray Train writes checkpoints and results (local folder or ``s3://``)."""
    num_workers: int = 1
    """Ray Train workers (data-parallel replicas)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker."""
    seed: int = 0
    """Global seed; each rank adds its rank."""
    eval_every: int = 1
    """Evaluate clip-1 accuracy every N epochs and after the last; 0 = never (benchmarks)."""
    final_test: bool = True
    """Run the K-LeftCenterRight test (video-1/5) after training."""
    test_videos: int | None = None
    """Cap on videos in the final multi-view test (None = all)."""
    log_every: int = 10
    """Print progress every N steps."""
    threads: int | None = None
    """torch intra-op threads per worker; None = CPUs per worker."""
    mlflow_tracking_uri: str | None = "sqlite:///runs/mlflow.db"
    """MLflow tracking URI: a local SQLite file (default; relative to the working directory),
    or ``http://host:5000`` for a server; None = no tracking."""
    mlflow_experiment: str = "dynvid"
    """MLflow experiment name."""
    max_failures: int = 0
    """Worker-group restarts allowed (Ray ``FailureConfig``); each resumes from the last checkpoint."""
    checkpoints_to_keep: int = 2
    """Checkpoints kept per stage (the latest is always kept for resuming)."""
    checkpoint_score: str | None = None
    """Metric ranking the kept checkpoints (e.g. ``val_clip_top1``); None = keep the most recent."""
    checkpoint_score_order: str = "max"
    """``max`` or ``min``: which end of ``checkpoint_score`` is best."""
    grad_accum_steps: int = 1
    """Accumulate gradients over this many batches per optimizer step."""
    amp: bool = False
    """Mixed precision on CUDA (float16 autocast + GradScaler); ignored with a warning on CPU."""
    sync_batchnorm: bool = False
    """Convert BatchNorm to SyncBatchNorm (GPU, more than one worker)."""


@dataclass
class ExperimentConfig:
    """A whole run: data, model, optimization, execution."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vared: VaredConfig = field(default_factory=VaredConfig)
    liteeval: LiteEvalConfig = field(default_factory=LiteEvalConfig)
    lfs: LFSConfig = field(default_factory=LFSConfig)
    ant: AntConfig = field(default_factory=AntConfig)
    resq: ResQConfig = field(default_factory=ResQConfig)

    def run_name(self, method: str = "static", digest: str | None = None, label: str | None = None) -> str:
        """The run's name, the key its stages resume by: ``train.name`` when set, else a name
        that encodes the run (mmaction2 style) and ends with ``_h<digest>``, a short hash of
        the run's identity, e.g. ``static_r2plus1d_18-w0.25_8x4x112_synthetic-actions_e10_s0_h1a2b3c4d``:
        the method's ``label`` (``Task.run_label``: its network and input; by default
        :meth:`clip_label`), the dataset, epochs and seed.

        The engine passes the digest of the full identity (config, dataset files, start
        checkpoint: :mod:`dynvid.engine.identity`); without one, the hash covers the config
        alone (:func:`identity_config`)."""
        if self.train.name:
            return self.train.name
        if digest is None:
            digest = short_digest({"method": method, "config": identity_config(self)})
        dataset = self.data.dataset.rstrip("/").split("/")[-1].replace(":", "-") or "data"
        label = self.clip_label(method) if label is None else label
        return f"{label}_{dataset}_e{self.optim.epochs}_s{self.train.seed}_h{digest}"

    def clip_label(self, method: str) -> str:
        """A clip network's part of a run name: method, backbone, width, ``T x stride x crop``."""
        d, m = self.data, self.model
        width = "" if m.width_mult == 1.0 else f"-w{m.width_mult:g}"
        return f"{method}_{m.backbone}{width}_{d.clip_len}x{d.stride}x{d.crop_size}"


# ---- run identity -----------------------------------------------------------------------------

#: Settings that do not change what a run computes, left out of its identity (a rerun that
#: changes only these resumes the run): its name and where results go, how much is printed,
#: retention and fault tolerance, and the CPUs that decode and compute (results do not depend
#: on them: augmentation draws from ``(seed, epoch, video)``, whatever process decodes).
#: ``optim.epochs`` is left out so that a named run (``train.name``) can be extended with more
#: epochs; a derived name carries the epochs (``_e10``), so there a new count is a new run.
#: ``liteeval.feature_cache`` is set by the driver between stages.
NOT_IN_RUN_IDENTITY = (
    "train.name",
    "train.storage_path",
    "train.mlflow_tracking_uri",
    "train.mlflow_experiment",
    "train.log_every",
    "train.max_failures",
    "train.checkpoints_to_keep",
    "train.checkpoint_score",
    "train.checkpoint_score_order",
    "train.cpus_per_worker",
    "train.threads",
    "data.loader_workers",
    "data.decoders",
    "data.cpus_per_decoder",
    "lfs.dqn_learner_gpus",
    "optim.epochs",
    "liteeval.feature_cache",
)


def identity_config(cfg: ExperimentConfig) -> dict:
    """``cfg`` as a nested dict without the ``NOT_IN_RUN_IDENTITY`` settings: what a resumed
    run must share with the run it continues."""
    data = to_dict(cfg)
    for key in NOT_IN_RUN_IDENTITY:
        section, name = key.split(".")
        data[section].pop(name)
    return data


def short_digest(obj: Any, length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted
    keys, tuples as lists): equal for equal contents, whatever the key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ---- value ranges -----------------------------------------------------------------------------

#: Allowed values of the settings every run has, checked on the driver before anything starts
#: (:func:`check_ranges`): ``">= 1"``, ``"> 0"``, intervals (``"[0, 1]"``, ``"[0, 1)"``) or a
#: tuple of choices. An optional setting left at None is not checked.
RANGES: dict[str, str | tuple[str, ...]] = {
    "data.clip_len": ">= 1",
    "data.stride": ">= 1",
    "data.target_fps": "> 0",
    "data.crop_size": ">= 1",
    "data.train_short_side": ">= 1",
    "data.test_short_side": ">= 1",
    "data.num_test_clips": ">= 1",
    "data.num_test_crops": "[1, 3]",
    "data.flip_prob": "[0, 1]",
    "data.batch_size": ">= 1",
    "data.loader_workers": ">= 0",
    "data.ingest": ("torch", "ray_data"),
    "data.decoders": ">= 1",
    "data.cpus_per_decoder": "> 0",
    "data.max_bad_fraction": "[0, 1]",
    "vared.explore": "[0, 1]",
    "data.synthetic_train_videos": ">= 1",
    "data.synthetic_val_videos": ">= 1",
    "data.synthetic_height": ">= 1",
    "data.synthetic_width": ">= 1",
    "data.synthetic_frames": ">= 1",
    "data.synthetic_max_distractors": ">= 0",
    "data.synthetic_object_scale": "> 0",
    "data.synthetic_speed_changes": ">= 0",
    "data.synthetic_transients": ">= 0",
    "data.synthetic_cuts": ">= 0",
    "data.synthetic_fades": ">= 0",
    "model.width_mult": "> 0",
    "model.num_classes": ">= 1",
    "optim.optimizer": ("sgd", "adam"),
    "optim.lr": "> 0",
    "optim.momentum": "[0, 1)",
    "optim.weight_decay": ">= 0",
    "optim.epochs": ">= 1",
    "optim.warmup_epochs": ">= 0",
    "optim.warmup_start_factor": "(0, 1]",
    "optim.label_smoothing": "[0, 1)",
    "optim.grad_clip": "> 0",
    "train.num_workers": ">= 1",
    "train.cpus_per_worker": ">= 0",
    "train.eval_every": ">= 0",
    "train.test_videos": ">= 1",
    "train.log_every": ">= 1",
    "train.threads": ">= 1",
    "train.max_failures": ">= -1",
    "train.checkpoints_to_keep": ">= 1",
    "train.checkpoint_score_order": ("max", "min"),
    "train.grad_accum_steps": ">= 1",
}


def _allowed(value: Any, rule: str | tuple[str, ...]) -> bool:
    if isinstance(rule, tuple):
        return value in rule
    if rule.startswith(">="):
        return value >= float(rule[2:])
    if rule.startswith(">"):
        return value > float(rule[1:])
    low, high = (float(v) for v in rule[1:-1].split(","))
    above = value >= low if rule[0] == "[" else value > low
    below = value <= high if rule[-1] == "]" else value < high
    return above and below


def check_ranges(cfg: ExperimentConfig) -> None:
    """Raise a :class:`ConfigError` naming the first setting outside its ``RANGES`` rule, with
    the rule and the value (e.g. ``data.max_bad_fraction must be in [0, 1], got 1.5``)."""
    data = to_dict(cfg)
    for key, rule in RANGES.items():
        section, name = key.split(".")
        value = data[section][name]
        if value is not None and not _allowed(value, rule):
            wanted = f"one of {', '.join(rule)}" if isinstance(rule, tuple) else (
                f"in {rule}" if rule[0] in "[(" else rule)
            raise ConfigError(f"{key} must be {wanted}, got {value!r}")


# ---- conversion -----------------------------------------------------------------------------

def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists), safe to pass to Ray and to dump as YAML."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict, checking every key and value type."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not match {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `name: 123` in YAML or on the command line means the text
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


# ---- files and overrides ------------------------------------------------------------------

def read_yaml(path: Path, what: str = "file") -> Any:
    """The YAML document of ``path``; a missing file or invalid YAML is a ConfigError naming
    the file (and the line, where the parser knows it)."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc}") from None


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, base: T | None = None
) -> T:
    """``base`` (default: the dataclass defaults) → YAML file → ``key=value`` overrides."""
    cfg = base if base is not None else cls()
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        from_dict(cls, loaded or {}, where=str(path))  # names unknown keys relative to the file
        cfg = from_dict(cls, _deep_merge(to_dict(cfg), loaded or {}), where=str(path))
    return apply_overrides(cfg, overrides or [])


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_arguments(overrides: list[str]) -> list[str]:
    """The command-line arguments of a job that apply ``overrides`` (``a.b.c=value`` strings,
    :func:`apply_overrides`): ``["--set", item]`` for each, in order."""
    return [arg for item in overrides for arg in ("--set", item)]


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b.c=value`` strings (value parsed as YAML: ``4``, ``0.1``, ``true``, ``null``,
    ``[1, 2]``); returns a new config, ``cfg`` is not modified."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                prefix = ".".join(parts[:depth]) or "top level"
                raise ConfigError(f"override {item!r}: {part!r} is not a section at {prefix}; "
                                  f"valid: {', '.join(sorted(k for k, v in node.items() if isinstance(v, dict)))}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; valid keys: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data, where="override")


def preset_job_config(embedded: list[str], paper: list[str], smoke: list[str], data: str | None, smoke_test: bool,
                      config_file: str | None, overrides: list[str], extra: list[str] = ()) -> ExperimentConfig:
    """A job's config from a method's presets: ``embedded`` (plus ``paper`` and
    ``data.dataset=data`` when a real dataset is given), ``extra``, ``smoke`` under
    ``--smoke-test``, then the YAML file and the ``--set`` overrides."""
    defaults = list(embedded) + (list(paper) + [f"data.dataset={data}"] if data else []) + list(extra)
    defaults += list(smoke) if smoke_test else []
    return load_config(ExperimentConfig, config_file, overrides, base=apply_overrides(ExperimentConfig(), defaults))
