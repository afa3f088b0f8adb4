"""VA-RED² efficiency loss (Eq. 3.6), backbone conversion, the three-stage Task and the
analysis report pieces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import ExperimentConfig, VaredConfig, apply_overrides
from dynvid.engine.task import get_task
from dynvid.methods.vared import DynamicConv3d, dynamic_layers, efficiency_loss, force_policy, make_dynamic
from dynvid.methods.vared.analysis import comparison_table, plot_cost_histogram, plot_policy_heatmap, policy_stats
from dynvid.metrics.cost import CostMeter, model_cost

# ---------------------------------------------------------------------------------------
# Efficiency loss
# ---------------------------------------------------------------------------------------


def test_efficiency_loss_weights_layers_by_cost_and_masks_wrong_samples():
    fractions = torch.tensor([[1.0, 0.5], [0.25, 0.25], [1.0, 1.0]])
    costs = torch.tensor([300.0, 100.0])  # shares 0.75 and 0.25
    correct = torch.tensor([True, True, False])
    # sample 0: (0.75*1 + 0.25*0.5)^2 = 0.875^2; sample 1: 0.25^2; sample 2: μ0 = 0
    expected = (0.875**2 + 0.25**2 + 0.0) / 3
    assert efficiency_loss(fractions, costs, correct).item() == pytest.approx(expected)


def test_efficiency_loss_gradient_and_shape_errors():
    fractions = torch.tensor([[0.5, 0.5]], requires_grad=True)
    efficiency_loss(fractions, torch.tensor([1.0, 3.0]), torch.tensor([True])).backward()
    assert fractions.grad[0, 1] == pytest.approx(3 * fractions.grad[0, 0].item())  # ∝ the layer's share
    with pytest.raises(ValueError, match="shapes"):
        efficiency_loss(torch.ones(2, 3), torch.ones(2), torch.ones(2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------
# Conversion of the backbones
# ---------------------------------------------------------------------------------------


def tiny_r2plus1d() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("r2plus1d_18", width_mult=0.125, num_classes=5)


def test_r2plus1d_spatial_convs_become_dynamic_and_keep_their_keys():
    static = tiny_r2plus1d()
    keys = set(static.state_dict())
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(), (3, 8, 32, 32))
    names = [n for n, _ in dynamic_layers(dynamic)]
    assert len(names) == 16  # 4 stages × 2 blocks × 2 (2+1)D convs, their spatial halves
    assert all(n.startswith("layer") and n.endswith(".0.0") for n in names)
    assert all(m.kernel_size[0] == 1 for _, m in dynamic_layers(dynamic))
    result = dynamic.load_state_dict(static.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all((".gate." in k or ".cheap_" in k) for k in result.missing_keys)
    assert keys <= set(dynamic.state_dict())


@pytest.mark.parametrize("backbone", ["r2plus1d_18", "i3d", "x3d_m"])
def test_dynamic_backbone_with_compute_all_equals_the_static_one(backbone):
    from dynvid.backbones import list_backbones

    if backbone not in list_backbones():
        pytest.skip(f"{backbone} is not registered")
    torch.manual_seed(0)
    static = build_backbone(backbone, width_mult=0.125, num_classes=5).eval()
    dynamic = make_dynamic(build_backbone(backbone, width_mult=0.125, num_classes=5), backbone, VaredConfig(),
                           (3, 8, 32, 32))
    dynamic.load_state_dict(static.state_dict(), strict=False)
    dynamic.eval()
    assert dynamic_layers(dynamic)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad(), force_policy(dynamic, "all"):
        torch.testing.assert_close(dynamic(x), static(x), atol=1e-5, rtol=1e-4)
        with CostMeter(dynamic) as meter:
            dynamic(x)
    # compute-all costs the static network plus the gates (forced policy: gates do not run)
    assert meter.per_sample_macs[0].item() == model_cost(static, (3, 8, 32, 32))["macs"]
    assert all(m.policy is None for _, m in dynamic_layers(dynamic))  # the context restored the gates


def test_forcing_cheaper_choices_lowers_measured_cost():
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(search_space=3), (3, 8, 32, 32)).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    costs = []
    for policy in ("all", 1, 2):
        with torch.no_grad(), force_policy(dynamic, policy), CostMeter(dynamic) as meter:
            dynamic(x)
        costs.append(meter.per_sample_macs.item())
    assert costs[0] > costs[1] > costs[2]


def test_unknown_backbone_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        make_dynamic(tiny_r2plus1d(), "resnet50", VaredConfig(), (3, 8, 32, 32))


# ---------------------------------------------------------------------------------------
# The Task: stages, schedule, losses
# ---------------------------------------------------------------------------------------

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
    assert logs_ft["loss"] == pytest.approx(logs_ft["acc_loss"] + 0.8 * logs_ft["eff_loss"], rel=1e-5)
    loss_ft.backward()
    gate_grads = [m.gate.fc2.bias.grad for _, m in dynamic_layers(model)]
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in gate_grads)


# ---------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------


def test_policy_stats_and_figures(tmp_path):
    dynamic = make_dynamic(tiny_r2plus1d(), "r2plus1d_18", VaredConfig(), (3, 8, 32, 32)).eval()
    # half the layers forced to (r=1/2, R=2): their fractions must read 0.5
    layers = dynamic_layers(dynamic)
    for _, m in layers[::2]:
        m.force(1)
    torch.manual_seed(0)
    loader = [(torch.randn(3, 3, 8, 32, 32), torch.tensor([0, 1, 2])), (torch.randn(2, 3, 8, 32, 32), torch.tensor([1, 1]))]
    stats = policy_stats(dynamic, loader)
    assert stats["temporal"].shape == (5, 16) and stats["channel"].shape == (5, 16)
    assert torch.all(stats["temporal"][:, ::2] == 0.5) and torch.all(stats["channel"][:, ::2] == 0.5)
    assert stats["macs"].shape == (5,) and torch.all(stats["macs"] > 0)
    heat = plot_policy_heatmap(stats, ["a", "b", "c"], tmp_path / "heat.png")
    hist = plot_cost_histogram(stats["macs"] / 1e9, 0.01, tmp_path / "hist.png")
    for path in (heat, hist):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_comparison_table_reports_relative_gflops():
    rows = [{"model": "static", "gflops_avg": 2.0, "gflops_max": 2.0, "gflops_min": 2.0, "clips_per_s": 10.0,
             "clip_top1": 0.5, "video_top1": 0.6, "video_top5": 0.9},
            {"model": "dynamic", "gflops_avg": 1.5, "gflops_max": 1.8, "gflops_min": 1.0, "clips_per_s": 12.0,
             "clip_top1": 0.52, "video_top1": None, "video_top5": None}]
    table = comparison_table(rows)
    assert "1.500 (-25%)" in table and "1.000 (-50%)" in table and "–" in table
    assert comparison_table(rows, markdown=True).startswith("| model |")


def test_efficiency_loss_is_finite_with_float16_fractions():
    """Under CUDA autocast the fractions are float16; real MAC counts overflow float16."""
    fractions = torch.tensor([[0.5, 1.0]], dtype=torch.float16)
    loss = efficiency_loss(fractions, torch.tensor([3e8, 1e8]), torch.tensor([True]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx((0.75 * 0.5 + 0.25) ** 2)


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
