import math

import pytest
import torch

from dynvid.config import OptimConfig
from dynvid.engine.optim import build_optimizer, build_scheduler, lr_at


def test_lr_warmup_then_cosine():
    assert lr_at(0, 100, 1.0, warmup_steps=10, warmup_start_factor=0.1) == pytest.approx(0.1)
    assert lr_at(5, 100, 1.0, warmup_steps=10, warmup_start_factor=0.1) == pytest.approx(0.55)
    assert lr_at(10, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(50, 100, 2.0) == pytest.approx(1.0 + math.cos(math.pi * 0.5))


def test_scheduler_follows_lr_at():
    model = torch.nn.Linear(3, 2)
    cfg = OptimConfig(lr=0.4, epochs=2, warmup_epochs=0.5)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, 20, 0.4, 5, cfg.warmup_start_factor) for s in range(20)])


def test_optimizer_groups_and_errors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = build_optimizer(model.parameters(), OptimConfig(weight_decay=1e-4))
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    decays = sorted(len(g["params"]) for g in opt.param_groups if g["weight_decay"] > 0)
    assert decays == [1]  # only the Linear weight
    assert isinstance(build_optimizer(model.parameters(), OptimConfig(optimizer="adam")), torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(model.parameters(), OptimConfig(optimizer="rmsprop"))


def test_lr_multipliers_make_their_own_groups_and_follow_the_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    cfg = OptimConfig(lr=0.1, epochs=1, warmup_epochs=0)
    mults = {id(p): 10.0 for p in model[1].parameters()}
    opt = build_optimizer(model.parameters(), cfg, mults)
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model[0].weight)] == pytest.approx(0.1) and by_param[id(model[1].weight)] == pytest.approx(1.0)
    assert by_param[id(model[1].bias)] == pytest.approx(1.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    opt.step()
    sched.step()
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model[1].weight)] == pytest.approx(10 * lrs[id(model[0].weight)])
