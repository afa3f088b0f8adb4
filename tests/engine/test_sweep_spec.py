"""Sweep files: the shipped ones load, and every mistake is an error naming the file and key."""

from pathlib import Path

import pytest
import yaml

from dynvid.config import ConfigError
from dynvid.engine.sweep import _default_reference, _param_space, fitted_concurrency
from dynvid.engine.sweep_spec import load_spec

REPO = Path(__file__).resolve().parents[2]
VALID = {
    "name": "t",
    "method": "vared",
    "kind": "training",
    "knobs": {"vared.efficiency_weight": {"grid": [0.0, 0.8]}},
    "objectives": {"val_clip_top1": "max", "val_gflops_avg": "min"},
}


def write(tmp_path, data, name="spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "search_spaces").glob("*.yaml")))
def test_shipped_search_spaces_load(name):
    spec = load_spec(REPO / "search_spaces" / name)
    assert spec.objectives and spec.knobs
    assert spec.source.endswith(name)


def test_a_valid_spec_and_its_defaults(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert (spec.search, spec.budget.num_samples, spec.budget.asha, spec.stages) == ("grid", 1, None, None)
    assert spec.accuracy_metric == "val_clip_top1" and spec.cost_metric == "val_gflops_avg"
    space = _param_space(spec)["knobs"]
    assert space["vared.efficiency_weight"] == {"grid_search": [0.0, 0.8]}


def test_overrides_change_spec_keys(tmp_path):
    spec = load_spec(write(tmp_path, VALID), ["budget.num_samples=3", "init_from=/tmp/ckpt"])
    assert spec.budget.num_samples == 3 and spec.init_from == "/tmp/ckpt"


@pytest.mark.parametrize("change,match", [
    ({"kind": "sometimes"}, r"spec.yaml: kind: must be one of training, inference"),
    ({"method": "nope"}, r"spec.yaml: method: unknown method 'nope'"),
    ({"colour": 1}, r"spec.yaml: unknown key 'colour'"),
    ({"name": "has space"}, r"spec.yaml: name"),
    ({"knobs": {"vared.efficiency_weight": {"gaussian": [0, 1]}}}, r"knobs.vared.efficiency_weight: unknown distribution 'gaussian'"),
    ({"knobs": {"vared.efficiency_wait": {"grid": [0.1]}}}, r"knobs.vared.efficiency_wait: .*unknown key 'efficiency_wait'"),
    ({"knobs": {"vared.search_space": {"grid": ["two"]}}}, r"knobs.vared.search_space: .*expected an integer"),
    ({"knobs": {"vared.efficiency_weight": {"uniform": [1.0, 0.0]}}, "search": "random"}, r"lower bound"),
    ({"knobs": {"vared.efficiency_weight": {"uniform": [0.0, 1.0]}}}, r"needs search: random or optuna"),
    ({"knobs": {"vared.efficiency_weight": {"grid": [0.0, 1.0]}}, "search": "optuna"}, r"use choice instead"),
    ({"objectives": {"val_clip_top1": "up"}}, r"objectives.val_clip_top1: must be 'max' or 'min'"),
    ({"budget": {"num_samples": 0}}, r"budget.num_samples: must be a positive integer"),
    ({"budget": {"asha": {"grace": 1}}}, r"budget.asha: unknown key 'grace'"),
    ({"budget": {"speed": 1}}, r"budget: unknown key 'speed'"),
    ({"stages": ["finetune", "dynamic"]}, r"stages: stages must keep the method's order"),
    ({"stages": ["warmup"]}, r"stages: vared has no stage 'warmup'"),
    ({"preset": "huge"}, r"preset: vared has no preset 'huge'"),
    ({"overrides": {"data.clip_length": 4}}, r"overrides: .*unknown key 'clip_length'"),
    ({"reference_point": {"val_clip_top1": 0.0}}, r"reference_point: needs a value for every objective"),
    ({"baselines": [{"name": "x", "val_clip_top1": 0.5}]}, r"baselines\[0\]: needs a finite number for 'val_gflops_avg'"),
])
def test_errors_name_the_file_and_key(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(write(tmp_path, {**VALID, **change}))


def test_inference_sweeps_refuse_knobs_that_need_retraining(tmp_path):
    data = {**VALID, "kind": "inference", "init_from": "/tmp/ckpt"}
    with pytest.raises(ConfigError, match=r"knobs.vared.efficiency_weight: needs retraining .*vared.gate_threshold"):
        load_spec(write(tmp_path, data))
    with pytest.raises(ConfigError, match=r"init_from: an inference sweep needs the checkpoint"):
        load_spec(write(tmp_path, {**data, "init_from": None, "knobs": {"vared.gate_threshold": {"grid": [0.1]}}}))
    ok = load_spec(write(tmp_path, {**data, "knobs": {"vared.gate_threshold": {"grid": [0.1]}}}))
    assert ok.kind == "inference"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"spec.yaml:\d+: invalid YAML"):
        load_spec(write(tmp_path, "name: x\nknobs:\n  a: [1, 2\n"))
    with pytest.raises(ConfigError, match="missing required key 'objectives'"):
        load_spec(write(tmp_path, {k: v for k, v in VALID.items() if k != "objectives"}))


def test_concurrency_is_fitted_to_the_cluster(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    cfg = spec.base_config()
    assert fitted_concurrency(spec, cfg, {"CPU": 8.0}) == 8  # 1 worker x 1 CPU
    wide = load_spec(write(tmp_path, {**VALID, "overrides": {"train.num_workers": 2, "train.cpus_per_worker": 2}}))
    assert fitted_concurrency(wide, wide.base_config(), {"CPU": 8.0}) == 2
    gpu = load_spec(write(tmp_path, {**VALID, "overrides": {"train.num_workers": 4, "train.use_gpu": True}}))
    assert fitted_concurrency(gpu, gpu.base_config(), {"CPU": 64.0, "GPU": 8.0}) == 2
    capped = load_spec(write(tmp_path, {**VALID, "budget": {"max_concurrent_trials": 3}}))
    assert fitted_concurrency(capped, cfg, {"CPU": 64.0}) == 3
    inference = load_spec(write(tmp_path, {**VALID, "kind": "inference", "init_from": "x",
                                           "knobs": {"vared.gate_threshold": {"grid": [0.1]}},
                                           "budget": {"cpus_per_trial": 0.5}}))
    assert fitted_concurrency(inference, cfg, {"CPU": 2.0}) == 4


def test_default_reference_point_is_beyond_the_worst_values(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    ref = _default_reference(spec, [[0.5, 1.0], [0.7, 2.0]])
    assert ref["val_clip_top1"] == pytest.approx(0.48) and ref["val_gflops_avg"] == pytest.approx(2.1)


def test_optuna_search_is_multi_objective_nsga2(tmp_path):
    """``search: optuna`` builds Tune's OptunaSearch over every objective with NSGA-II."""
    from optuna.samplers import NSGAIISampler
    from ray.tune.search.optuna import OptunaSearch

    from dynvid.engine.sweep import _tuner

    spec = load_spec(write(tmp_path, {**VALID, "search": "optuna", "budget": {"num_samples": 6},
                                      "knobs": {"vared.efficiency_weight": {"uniform": [0.0, 2.0]},
                                                "vared.search_space": {"choice": [2, 3]}}}))
    tuner = _tuner(spec, lambda config: None, str(tmp_path / "sweeps"), None, 2, spec.base_config(), seed=0)
    tune_config = tuner._local_tuner._tune_config
    search = tune_config.search_alg
    searcher = getattr(search, "searcher", search)
    assert isinstance(searcher, OptunaSearch)
    assert searcher._metric == ["val_clip_top1", "val_gflops_avg"] and searcher._mode == ["max", "min"]
    assert isinstance(searcher._sampler, NSGAIISampler)
    assert tune_config.num_samples == 6 and tune_config.max_concurrent_trials == 2


@pytest.mark.parametrize("change,match", [
    ({"knobs": {"vared.search_space": {"grid": [2, 5]}}}, r"knobs.vared.search_space: value 5: .*must be 2 or 3"),
    ({"knobs": {"vared.efficiency_weight": {"grid": [0.8, -1.0]}}}, r"knobs.vared.efficiency_weight: value -1.0"),
    ({"kind": "inference", "init_from": "x", "knobs": {"vared.gate_threshold": {"grid": [0.5, 1.5]}}},
     r"knobs.vared.gate_threshold: value 1.5: .*\[0, 1\)"),
    ({"overrides": {"vared.cheap_kernel": 2}}, r"overrides: .*cheap_kernel"),
    ({"init_from": 12}, r"init_from: must be a path or URI string"),
    ({"search": "optuna", "knobs": {"vared.efficiency_weight": {"choice": [0.1]}},
      "objectives": {"test_video_top1": "max", "val_gflops_avg": "min"}}, r"objectives.test_video_top1: is measured"),
    ({"baselines": [{"name": "x", "val_clip_top1": float("inf"), "val_gflops_avg": 1.0}]}, r"finite number"),
])
def test_every_knob_value_is_checked_against_the_method(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(write(tmp_path, {**VALID, **change}))


def test_a_rerun_with_a_changed_spec_is_refused(tmp_path):
    """Rerunning a sweep resumes it, and Tune restores the stored search space: a changed
    spec under the same name would be ignored silently, so it is an error naming the keys."""
    from dynvid.engine.sweep import _check_same_spec

    spec = load_spec(write(tmp_path, VALID))
    _check_same_spec(spec, str(tmp_path / "sweeps" / "t"))
    _check_same_spec(spec, str(tmp_path / "sweeps" / "t"))  # the same spec resumes
    changed = load_spec(write(tmp_path, {**VALID, "knobs": {"vared.efficiency_weight": {"grid": [0.0, 1.6]}}}),
                        ["budget.num_samples=2"])
    with pytest.raises(ConfigError, match=r"already ran .* with other budget, knobs; .*new name"):
        _check_same_spec(changed, str(tmp_path / "sweeps" / "t"))


def test_a_shared_stage_must_not_depend_on_the_knobs(tmp_path):
    """VA-RED²'s static base ignores ``vared.*`` knobs and is shared; a width knob changes it."""
    from dynvid.engine.sweep import _shared_prefix

    spec = load_spec(write(tmp_path, {**VALID, "stages": ["dynamic", "finetune"],
                                      "knobs": {"model.width_mult": {"grid": [0.25, 0.5]}}}))
    with pytest.raises(ConfigError, match=r"knob model.width_mult may change stage 'base'"):
        _shared_prefix(spec, spec.base_config())


def test_a_missing_checkpoint_fails_before_any_trial(tmp_path):
    from dynvid.engine.storage import StorageError
    from dynvid.engine.sweep import run_sweep

    spec = load_spec(write(tmp_path, {**VALID, "kind": "inference", "init_from": str(tmp_path / "no-ckpt"),
                                      "knobs": {"vared.gate_threshold": {"grid": [0.1]}}}))
    with pytest.raises(StorageError, match="checkpoint not found: .*no-ckpt"):
        run_sweep(spec, storage_path=str(tmp_path / "runs"), tracking_uri=None)
    assert not (tmp_path / "runs" / "sweeps" / "t").exists()  # nothing started
