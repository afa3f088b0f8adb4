"""The declared Task contract (issue 21, first part): every method subclasses dynvid.task.Task,
the engine calls its hooks without probing for them, and the contract module depends on
neither the engine nor the methods."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.task import TASKS, get_task, presets
from dynvid.task import PolicyTask, Stage, Task

PLATFORM = Path(__file__).resolve().parents[1] / "platform" / "dynvid"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth, function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("method", sorted(TASKS))
def test_every_method_is_a_declared_task(method):
    task = get_task(method, apply_overrides(ExperimentConfig(), presets(method).get("embedded", [])))
    assert isinstance(task, Task) and task.name == method
    assert task.stages and all(isinstance(s, Stage) for s in task.stages)
    assert isinstance(task.inference_knobs, tuple)
    assert isinstance(task, PolicyTask) == (method == "lfs")  # the one method with a learned policy to train


def test_the_engine_calls_hooks_and_never_probes_for_them():
    probes = []
    for path in sorted((PLATFORM / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "task"):
                probes.append(f"{path.name}:{node.lineno}")
    assert probes == []


def test_the_contract_module_imports_neither_engine_nor_methods():
    assert not {m for m in _imports(PLATFORM / "task.py") if m.startswith(("dynvid.engine", "dynvid.methods"))}


def test_the_engine_imports_nothing_from_the_methods():
    """The engine reaches a method only through the registry's text table (dynvid.task.METHODS)."""
    users = {str(p.relative_to(PLATFORM)): sorted(m for m in _imports(p) if m.startswith("dynvid.methods"))
             for p in sorted((PLATFORM / "engine").glob("*.py"))}
    assert {k: v for k, v in users.items() if v} == {}


def test_the_registry_resolves_names_lazily_and_refuses_what_is_not_a_task():
    import importlib
    import sys

    from dynvid import task as contract

    assert contract.method_names() == sorted(TASKS) and "vared" in TASKS
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: ant, lfs, liteeval, resq, static, vared"):
        contract.task_class("nope")
    with pytest.raises(TypeError, match="is not a dynvid.task.Task"):
        contract.register_task("bad", int)
    saved = dict(contract.METHODS)
    try:
        contract.register_task("minimal", _Minimal)  # a method from outside the repository
        assert contract.task_class("minimal") is _Minimal and contract.presets("minimal") == {}
        contract.register_task("broken", "dynvid.config:ExperimentConfig")
        with pytest.raises(TypeError, match="'broken' resolves to dynvid.config:ExperimentConfig"):
            contract.task_class("broken")
    finally:
        contract.METHODS.clear()
        contract.METHODS.update(saved)
    assert presets("vared") == importlib.import_module("dynvid.methods.vared.presets").PRESETS
    assert "dynvid.methods.vared" in sys.modules  # imported on demand, by the lookup above


def test_methods_take_the_contract_from_the_neutral_module():
    users = [str(p.relative_to(PLATFORM)) for p in sorted((PLATFORM / "methods").rglob("*.py"))
             if "dynvid.engine.task" in _imports(p)]
    assert users == []


class _Minimal(Task):
    name = "minimal"
    stages = (Stage("only"),)


def test_optional_hooks_default_to_nothing_special():
    task, cfg = _Minimal(), ExperimentConfig()
    stage = task.stages[0]
    assert task.datasets(cfg, stage) is None and task.eval_dataset(cfg) is None
    assert task.prepare_stage(cfg, stage, None) == [] and task.report(cfg, [], "/nowhere") is None
    assert task.lr_multipliers(torch.nn.Linear(1, 1), stage) is None and task.ddp_kwargs is None
    assert task.backbone_label(cfg) == cfg.model.backbone
    assert task.example_input(cfg).shape == (2, 3, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    assert task.num_classes_from_state({"layer.bias": torch.zeros(4), "fc.bias": torch.zeros(7)}) == 7
    task.set_steps_per_epoch(12)
    assert task.steps_per_epoch == 12 and _Minimal().steps_per_epoch is None
    for hook, args in (("build_model", (cfg, 3)), ("training_step", (None, None, stage)),
                       ("evaluate", (None, [], stage))):
        with pytest.raises(NotImplementedError, match=f"_Minimal must define {hook}"):
            getattr(task, hook)(*args)


def test_a_task_without_a_report_leaves_no_report_folder(tmp_path):
    from dynvid.engine.trainer import FitResult, _method_report

    result = FitResult(run_name="r", storage_path=str(tmp_path))
    assert _method_report(_Minimal(), ExperimentConfig(), result, str(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []


def test_the_results_table_and_the_evaluation_line_are_the_methods_own():
    """The engine knows no paper's metrics: a Task declares its table columns, its evaluation
    line and whether a final test follows the last epoch."""
    from dynvid.engine.trainer import FitResult, StageResult
    from dynvid.engine.worker import _summary

    cfgs = {m: apply_overrides(ExperimentConfig(), presets(m).get("embedded", [])) for m in TASKS}
    lfs = get_task("lfs", cfgs["lfs"])
    result = FitResult(run_name="r", storage_path="/x", columns=lfs.summary_columns)
    result.stages.append(StageResult("interleaved", "r-interleaved", {"epoch": 2, "val_AP50": 0.5, "val_AP": 0.25,
                                                                      "val_f0_fraction": 0.125, "val_gflops_avg": 1.0,
                                                                      "stage_time_s": 3.0}, None))
    header, _, row = result.table().splitlines()[:3]
    assert "mAP@0.5" in header and "f0 runs" in header and "clip-1" not in header
    assert "0.5000" in row and "0.125" in row
    assert "clip-1" in FitResult(run_name="r", storage_path="/x").table()  # a clip classifier's columns by default
    val = {"AP50": 0.5, "AP": 0.25, "f0_fraction": 0.125, "gflops_avg": 1.0, "num_samples": 4}
    assert _summary(val, lfs) == "AP50 0.5000 AP 0.2500 f0_fraction 0.12 GFLOPs 1.000"
    assert _summary({"clip_top1": 0.5, "gflops_avg": 0.2}, get_task("static", cfgs["static"])) == \
        "clip-1 0.5000 GFLOPs 0.200"
    for method in ("lfs", "ant", "resq", "liteeval"):  # their validation metrics are their own test
        assert get_task(method, cfgs[method]).test_dataset(cfgs[method]) is None, method
