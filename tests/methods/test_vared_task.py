"""The VA-RED² Task: three stages, the thesis schedule, the losses of each stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.task import get_task
from dynvid.methods.vared import dynamic_layers

SMALL = ["model.width_mult=0.125", "data.clip_len=8", "data.crop_size=32", "optim.lr=0.18", "optim.epochs=9"]


def test_three_stages_with_the_thesis_schedule():
    cfg = apply_overrides(ExperimentConfig(), SMALL)
    task = get_task("vared", cfg)
    assert [s.name for s in task.stages] == ["base", "dynamic", "finetune"]
    assert [s.init_from_previous for s in task.stages] == [False, True, True]
    finetune = task.stages[2].config(cfg)
    assert finetune.optim.lr == pytest.approx(0.01)  # 0.18 -> 0.01 for R(2+1)D (Sec. 4.3)
    assert finetune.optim.epochs == 3  # 40 of 120
    assert task.stages[1].config(cfg).optim.epochs == 9
    assert isinstance(task.build_model(cfg, 5, task.stages[0]), nn.Module)
    assert not dynamic_layers(task.build_model(cfg, 5, task.stages[0]))
    assert dynamic_layers(task.build_model(cfg, 5, task.stages[1]))
    assert dynamic_layers(task.build_model(cfg, 5))  # None = the final (registered) model


def test_finetune_step_adds_the_efficiency_loss_and_the_dynamic_step_does_not():
    cfg = apply_overrides(ExperimentConfig(), SMALL)
    task = get_task("vared", cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg, 5, task.stages[1])
    x, y = torch.randn(4, 3, 8, 32, 32), torch.randint(0, 5, (4,))
    # make every prediction correct so μ0 = 1 and L_e > 0
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[y[0]] = 10.0
    y = torch.full((4,), int(y[0]))
    loss_dyn, logs_dyn = task.training_step(model, (x, y), task.stages[1])
    assert "eff_loss" not in logs_dyn
    loss_ft, logs_ft = task.training_step(model, (x, y), task.stages[2])
    assert logs_ft["eff_loss"] > 0
    logs_ft = {k: float(v) for k, v in logs_ft.items()}  # 0-dim tensors: the engine reads them per log line
    assert logs_ft["loss"] == pytest.approx(logs_ft["acc_loss"] + 0.8 * logs_ft["eff_loss"], rel=1e-5)
    loss_ft.backward()
    gate_grads = [m.gate.fc2.bias.grad for _, m in dynamic_layers(model)]
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in gate_grads)



@pytest.mark.parametrize("override,match", [("vared.search_space=4", "search_space"),
                                            ("vared.cheap_kernel=2", "cheap_kernel"),
                                            ("vared.gate_hidden=0", "gate_hidden"),
                                            ("model.backbone=resnet50", "resnet50")])
def test_bad_vared_config_fails_before_the_static_stage(override, match):
    with pytest.raises(ValueError, match=match):
        get_task("vared", apply_overrides(ExperimentConfig(), [override]))


def test_stage_overrides_survive_small_learning_rates():
    cfg = apply_overrides(ExperimentConfig(), ["optim.lr=0.0009", "vared.finetune_lr=0.00005"])
    task = get_task("vared", cfg)
    assert task.stages[2].config(cfg).optim.lr == pytest.approx(5e-5)  # "5e-05" is a YAML string


def test_gate_lr_multiplier_applies_to_the_finetune_only():
    cfg = apply_overrides(ExperimentConfig(), SMALL + ["vared.gate_lr_mult=50"])
    task = get_task("vared", cfg)
    model = task.build_model(cfg, 5, task.stages[2])
    assert task.lr_multipliers(model, task.stages[1]) == {}
    mults = task.lr_multipliers(model, task.stages[2])
    gate_params = {id(p) for _, m in dynamic_layers(model) for p in m.gate.parameters()}
    assert set(mults) == gate_params and set(mults.values()) == {50.0}


def test_exploration_is_on_in_the_dynamic_stage_only():
    cfg = apply_overrides(ExperimentConfig(), [*SMALL, "vared.explore=0.25"])
    task = get_task("vared", cfg)
    explore = {s.name: {m.explore for _, m in dynamic_layers(task.build_model(s.config(cfg), 5, s))}
               for s in task.stages[1:]}
    assert explore == {"dynamic": {0.25}, "finetune": {0.0}}
    with pytest.raises(ValueError, match="vared.explore"):
        from dynvid.config import check_ranges

        check_ranges(apply_overrides(ExperimentConfig(), ["vared.explore=1.5"]))
