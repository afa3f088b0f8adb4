"""The ANT Task on tiny synthetic detection data: each stage's training step and evaluation,
the frozen stem of stage 2, BatchNorm restored after the supernet's recalibrated evaluation,
the stage cost tables, the static NAS search and the D0+ width."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from dynvid.backbones.efficientnet import RATIOS, EfficientNetSupernet, scaled_channels, supernet_macs
from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.methods.ant import ANTTask
from dynvid.methods.ant import task as task_module
from dynvid.methods.ant.model import ELASTIC, ANTDetector
from dynvid.methods.ant.modules import bn_buffers
from dynvid.methods.ant.nas import backbone_macs, nas_search, sample_within, sensitivity_within, stage_sensitivity
from dynvid.methods.ant.training import gate_step, stage_costs
from dynvid.metrics.cost import CostMeter

TINY = ["data.dataset=synthetic:detection", "data.synthetic_height=64", "data.synthetic_width=64",
        "data.synthetic_frames=6", "data.synthetic_train_videos=4", "data.synthetic_val_videos=2", "data.batch_size=2",
        "ant.image_size=64", "ant.fpn_channels=16", "ant.fpn_layers=1", "ant.head_repeats=1", "ant.recalib_batches=1",
        "ant.eval_frames=4", "ant.cost_metric=macs"]


@pytest.fixture(scope="module")
def task_and_data():
    cfg = apply_overrides(ExperimentConfig(), TINY)
    task = ANTTask(cfg)
    return cfg, task


def _batch(task, cfg, stage):
    train, val = task.datasets(cfg, stage)
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=train.collate_fn)
    val_loader = torch.utils.data.DataLoader(val, batch_size=2, collate_fn=val.collate_fn)
    return next(iter(loader)), val_loader


@pytest.mark.parametrize("stage_name", ["static", "supernet", "gates"])
def test_each_stage_trains_and_evaluates(task_and_data, stage_name):
    cfg, task = task_and_data
    stage = next(s for s in task.stages if s.name == stage_name)
    batch, val_loader = _batch(task, cfg, stage)
    assert batch[0].shape[1] == (3 if stage_name == "gates" else 1)  # clips of key_every frames in stage 2
    torch.manual_seed(0)
    model = task.build_model(cfg, 6, stage).train()
    loss, logs = task.training_step(model, batch, stage)
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(float(loss.detach()))
    said = []
    ended = task.end_epoch(model, stage, said.append)
    if stage_name == "gates":  # one step of 2 clips: no ratio reaches 7 batches' worth of samples
        assert ended == {"width_stats_refreshed": 36.0} and said[0].startswith("[dynvid] stale per-ratio")
        assert model.width_update_counts().sum() == 0
    else:  # no per-ratio statistics before stage 2
        assert ended == {} and said == []
    if stage_name == "gates":
        assert "cost" in logs and all(p.grad is None for p in model.backbone.features[0].parameters())
        assert all(g.fc2.weight.grad is not None for g in model.gates)
    saved = bn_buffers(model)
    metrics = task.evaluate(model, val_loader, stage)
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_samples"] == 2
    assert metrics["gflops_min"] <= metrics["gflops_avg"] <= metrics["gflops_max"]
    if stage_name == "supernet":  # the recalibration of each subnet is undone
        assert metrics["gflops_smallest"] < metrics["gflops_avg"]
        after = bn_buffers(model)
        assert all(torch.equal(saved[k], after[k]) for k in saved)
    if stage_name == "gates":
        assert 0.0 < metrics["key_fraction"] <= 1.0


def test_stage_two_freezes_the_stem_weights_and_statistics(task_and_data):
    cfg, task = task_and_data
    model = task.build_model(cfg, 6, task.stages[-1]).train()
    stem = model.backbone.features[0]
    assert not any(p.requires_grad for p in stem.parameters()) and not stem.training
    assert model.backbone.features[1].training
    before = stem[1].running_mean.clone()
    model.forward_static(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, stem[1].running_mean)
    assert task.num_classes_from_state(model.state_dict()) == 6


def test_task_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiple of 32"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.image_size=100"]))
    with pytest.raises(ValueError, match="key_every"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.key_every=1"]))
    with pytest.raises(ValueError, match="key_stride_max"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.key_stride_max=0"]))
    with pytest.raises(ValueError, match="cost_target"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.cost_target=1.5"]))
    with pytest.raises(ValueError, match="gate_prior"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.gate_prior=random"]))
    with pytest.raises(ValueError, match="set ant.cost_target"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.gate_prior=nas"]))
    with pytest.raises(ValueError, match="gate_prior_weight"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.gate_prior_weight=1.0"]))
    with pytest.raises(ValueError, match="nas_search"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.nas_search=grid"]))
    with pytest.raises(ValueError, match="nas_candidates"):
        ANTTask(apply_overrides(ExperimentConfig(), ["ant.nas_candidates=0"]))


def test_gate_clips_reach_back_as_far_as_key_stride_max():
    """Stage 2's clips take every s-th frame, s drawn per clip in 1 … key_stride_max: the
    non-key frames sit s and 2s frames after the key frame, as adaptive inference has them."""
    cfg = apply_overrides(ExperimentConfig(), TINY + ["data.synthetic_frames=16", "data.synthetic_train_videos=24",
                                                      "ant.key_stride_max=4"])
    task = ANTTask(cfg)
    gates = next(s for s in task.stages if s.name == "gates")
    train, _ = task.datasets(gates.config(cfg), gates)
    strides = set()
    for i in range(len(train)):
        ids = train[i][1]["image_ids"].tolist()
        steps = {b - a for a, b in zip(ids, ids[1:])}
        assert len(ids) == cfg.ant.key_every and len(steps) == 1  # evenly spaced in one video
        strides |= steps
    assert strides <= {1, 2, 3, 4} and len(strides) >= 3  # drawn per clip, not fixed
    static = next(s for s in task.stages if s.name == "static")
    assert len(task.datasets(static.config(cfg), static)[0][0][1]["image_ids"]) == 1
    # key_stride_max=1 (the default): the same clips as a plain stride of 1, no extra random draw
    from dynvid.data.detection import build_detection_dataset

    def clips(stride):
        d = build_detection_dataset("synthetic:detection", "train", size=64, clip_len=3, mode="train", num_videos=6,
                                    frame_stride=stride)
        return [d[i][1]["image_ids"].tolist() for i in range(6)]

    assert clips((1, 1)) == clips(1)


def test_stage_cost_tables():
    torch.manual_seed(0)
    m = ANTDetector(3, fpn_channels=16, fpn_layers=1, head_repeats=1)
    macs = stage_costs(m, 64, "macs")
    assert macs.shape == (6, len(RATIOS)) and float(macs[:, -1].sum()) == pytest.approx(1.0)
    # each entry is the metered cost of that stage's blocks at that ratio, normalized
    outs = m.backbone.stage_features(torch.zeros(1, 3, 64, 64), upto=ELASTIC[-1] + 1)
    metered = torch.tensor([[_stage_macs(m, outs, s, r) for r in RATIOS] for s in range(6)], dtype=torch.float64)
    assert torch.allclose(macs.double(), metered / metered[:, -1].sum(), rtol=1e-5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for layout in (True, False):  # timed on the inference copy, channels-last or not
        latency = stage_costs(m, 64, "latency", rounds=1, channels_last=layout)
        assert (latency > 0).all() and float(latency[:, -1].sum()) == pytest.approx(1.0)
    assert m.training  # the train/eval mode is restored
    # the model itself is neither folded nor laid out channels-last, and its statistics did not move
    assert m.backbone.features[ELASTIC[0]][0].__dict__.get("_folded_widths") is None
    assert m.state_dict().keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert all(v.is_contiguous() for v in m.state_dict().values())
    with pytest.raises(ValueError, match="cost_metric"):
        stage_costs(m, 64, "joules")
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        stage_costs(m, 64, "latency", rounds=0)


def _stage_macs(m, outs, s, ratio) -> float:
    with CostMeter(m, batch_size=1) as meter:
        x = outs[ELASTIC[s] - 1]
        for b in m.backbone.features[ELASTIC[s]]:
            x = b(x, b.cin * ratio)
    return float(meter.per_sample_macs[0])


def test_gate_cost_term_uses_the_table():
    torch.manual_seed(0)
    m = ANTDetector(3, fpn_channels=16, fpn_layers=1, head_repeats=1).train()
    for g in m.gates:  # every gate picks ratio 2
        with torch.no_grad():
            g.fc2.weight.zero_()
            g.fc2.bias.fill_(-30.0)
            g.fc2.bias[1] = 30.0
    costs = torch.rand(6, 6)
    box = {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6]]), "labels": torch.tensor([1])}
    _, logs = gate_step(m, torch.randn(2, 3, 3, 64, 64), [[box] * 3] * 2, tau=0.5, costs=costs)
    assert logs["cost"] == pytest.approx(float(costs[:, 1].sum()), rel=1e-5)


def test_gate_prior_starts_the_gates_at_the_best_searched_subnet_within_the_cost_target(monkeypatch):
    cfg = apply_overrides(ExperimentConfig(), TINY + ["ant.gate_prior=nas", "ant.cost_target=0.5",
                                                      "ant.nas_candidates=5", "ant.gate_prior_weight=0.7",
                                                      "ant.nms_iou=0.4", "ant.max_detections=7", "ant.nas_videos=2"])
    task = ANTTask(cfg)
    stage = task.stages[-1]
    batch, _ = _batch(task, cfg, stage)
    torch.manual_seed(0)
    model = task.build_model(cfg, 6, stage).train()
    costs = stage_costs(model, 64, "macs")
    scored = {}
    real = task_module.evaluate_modes

    def recorded(m, loader, gt, modes, **kw):  # the real evaluation on the search videos, every score kept
        out = real(m, loader, gt, modes, **kw)
        assert not any(i >= cfg.ant.nas_videos for i in loader.dataset.indices)  # training videos, never val
        assert (kw["nms_iou"], kw["max_detections"]) == (0.4, 7)  # the configured post-processing
        scored[modes[0].ratios] = out["static"]["AP"]
        return out

    monkeypatch.setattr(task_module, "evaluate_modes", recorded)
    task.training_step(model, batch, stage)  # the first step calibrates the widths, then sets the prior
    within = {r: ap for r, ap in scored.items()  # candidates within [0.9, 1] × the target of the table
              if 0.9 * 0.5 <= float(sum(costs[s, RATIOS.index(x)] for s, x in enumerate(r))) <= 0.5 + 1e-6}
    # the default search: the full network and each stage alone narrowed (31, the table), then
    # at most 5 candidates ranked by it
    assert model.width_stats_ready and 1 <= len(within) <= 5 and len(scored) <= 1 + 6 * (len(RATIOS) - 1) + 5
    assert (6,) * 6 in scored and (1, 6, 6, 6, 6, 6) in scored  # the sensitivity table ran
    best = max(within, key=within.get)
    for gate, r in zip(model.gates, best):
        probs = gate.fc2.bias.detach().softmax(0)
        assert int(probs.argmax()) == RATIOS.index(r) and float(probs.max()) == pytest.approx(0.7, abs=1e-5)
    count = len(scored)
    task.training_step(model, batch, stage)  # later steps search nothing
    assert len(scored) == count


def test_a_named_gate_prior_starts_the_gates_at_that_subnet_without_a_search(monkeypatch, capsys):
    cfg = apply_overrides(ExperimentConfig(), TINY + ["ant.gate_prior=1,6,2,1,1,1", "ant.gate_prior_weight=0.6"])
    task = ANTTask(cfg)  # no cost target needed: nothing is searched
    stage = task.stages[-1]
    batch, _ = _batch(task, cfg, stage)
    torch.manual_seed(0)
    model = task.build_model(cfg, 6, stage).train()
    monkeypatch.setattr(task_module, "evaluate_modes", lambda *a, **kw: pytest.fail("a named prior scores nothing"))
    task.training_step(model, batch, stage)
    assert model.width_stats_ready
    for gate, r in zip(model.gates, (1, 6, 2, 1, 1, 1)):
        probs = gate.fc2.bias.detach().softmax(0)
        assert int(probs.argmax()) == RATIOS.index(r) and float(probs.max()) == pytest.approx(0.6, abs=1e-5)
    cost = float(sum(task._costs[s, RATIOS.index(r)] for s, r in enumerate((1, 6, 2, 1, 1, 1))))
    assert f"subnet (1, 6, 2, 1, 1, 1) as named by ant.gate_prior (cost {cost:.3f}" in capsys.readouterr().out
    for bad in ("1,6,2,1,1", "1,6,2,1,1,7", "1;6;2;1;1;1"):
        with pytest.raises(ValueError, match=r"ant.gate_prior must be null, 'nas' or 6 comma-separated ratios"):
            ANTTask(apply_overrides(ExperimentConfig(), [f"ant.gate_prior={bad}"]))


def test_gate_prior_below_the_cheapest_subnet_searches_the_cheapest_subnets(capsys):
    # a cost table where a narrow stage costs nearly what a wide one does (a GPU's latency):
    # every subnet costs more than the 0.5 target, so [0.45, 0.5] holds none
    cfg = apply_overrides(ExperimentConfig(), TINY + ["ant.gate_prior=nas", "ant.cost_target=0.5",
                                                      "ant.nas_candidates=3", "ant.nas_videos=2"])
    task = ANTTask(cfg)
    stage = task.stages[-1]
    batch, _ = _batch(task, cfg, stage)
    torch.manual_seed(0)
    model = task.build_model(cfg, 6, stage).train()
    per_ratio = torch.tensor([0.12 + 0.01 * k for k in range(len(RATIOS))], dtype=torch.float64)
    table = per_ratio.repeat(6, 1) * torch.tensor([1.0, 0.8, 1.2, 0.9, 1.1, 1.0], dtype=torch.float64)[:, None]
    table /= table[:, -1].sum()  # the full network's stages sum to 1
    task._costs = table
    cheapest = float(table[:, 0].sum())
    assert cheapest > 0.5
    task.training_step(model, batch, stage)  # the first step sets the prior: no error
    out = capsys.readouterr().out
    assert f"the cheapest subnet costs {cheapest:.3f}" in out and "ant.cost_target=0.5" in out
    chosen = [RATIOS[int(g.fc2.bias.detach().argmax())] for g in model.gates]
    cost = float(sum(table[s, RATIOS.index(r)] for s, r in enumerate(chosen)))
    assert cheapest - 1e-9 <= cost <= cheapest / 0.9 + 1e-9
    assert "gate prior: subnet" in out


def test_nas_search_respects_budgets_and_keeps_the_best():
    macs = lambda r: backbone_macs(r, 128)  # noqa: E731
    full = macs((6,) * 6)
    rng = random.Random(0)
    for _ in range(20):
        r = sample_within(rng, macs, 0.6 * full)
        assert 0.9 * 0.6 * full <= macs(r) <= 0.6 * full
    scores = {}

    def score(r):
        scores[r] = -abs(r[0] - 3) + 0.01 * sum(r)  # any deterministic preference
        return scores[r]

    out = nas_search([0.5, 0.8], 6, macs, score, seed=1, say=lambda *a: None)
    assert [o["budget"] for o in out] == [0.5, 0.8]
    for o in out:
        assert o["backbone_gmacs"] * 1e9 <= o["budget"] * full
        within = {r: s for r, s in scores.items() if 0.9 * o["budget"] * full <= macs(r) <= o["budget"] * full}
        assert o["search_AP"] == max(within.values()) and tuple(o["ratios"]) in within
    with pytest.raises(ValueError, match="fractions"):
        nas_search([1.5], 2, macs, score)
    # backbone MACs are the metered cost of the backbone up to its last MBConv stage
    net = EfficientNetSupernet(num_classes=1)
    with CostMeter(net) as meter:
        net.stage_features(torch.zeros(1, 3, 128, 128), (2, 3, 1, 6, 4, 5), upto=ELASTIC[-1] + 1)
    assert float(meter.per_sample_macs[0]) == backbone_macs((2, 3, 1, 6, 4, 5), 128)


def test_sensitivity_search_finds_the_optimum_of_an_additive_score_and_scores_its_table_once():
    per_ratio = (3.0, 1.0, 2.5, 0.5, 1.5, 0.8)  # a cost table: each stage's cost per unit of ratio
    macs = lambda r: sum(c * x for c, x in zip(per_ratio, r))  # noqa: E731
    full = macs((6,) * 6)
    weight = (0.05, 0.001, 0.03, 0.002, 0.02, 0.004)  # per stage: AP lost per ratio step below 6
    calls = []

    def score(r):  # additive over stages, so the table's prediction is exact
        calls.append(r)
        return 0.7 - sum(w * (6 - x) for w, x in zip(weight, r))

    out = nas_search([0.5, 0.8], 1, macs, score, say=lambda *a: None, search="sensitivity")
    table = 1 + 6 * (len(RATIOS) - 1)
    assert len(calls) == table + 2 and [o["tried"] for o in out] == [1, 1]  # the table once, one candidate per budget
    for o in out:  # the one candidate scored is the exact optimum within [0.9, 1] × budget (brute force)
        within = [r for r in itertools.product(RATIOS, repeat=6)
                  if 0.9 * o["budget"] * full <= macs(r) <= o["budget"] * full]
        assert o["search_AP"] == pytest.approx(max(0.7 - sum(w * (6 - x) for w, x in zip(weight, r)) for r in within))
    # the fine step scores the ranked candidates in full: a gain the table cannot see (here on
    # the fifth-ranked subnet alone) decides the winner
    calls.clear()
    table = stage_sensitivity(score)
    sensitivity_within(table, macs, 0.5 * full, 8, score)
    ranked = calls[len(calls) - 8:]
    target = ranked[4]

    def coupled(r):
        return score(r) + (0.2 if r == target else 0.0)

    best, ap, tried = sensitivity_within(stage_sensitivity(coupled), macs, 0.5 * full, 8, coupled)
    assert best == target != ranked[0] and tried == 8 and ap == pytest.approx(score(target) + 0.2)
    # a subnet of the table that falls within the budget is not scored twice
    calls.clear()
    best, ap, tried = sensitivity_within(stage_sensitivity(score), macs, full, 5, score)
    assert best == (6,) * 6 and tried == 5 and len(calls) == len(set(calls))
    with pytest.raises(ValueError, match="nas_search"):
        nas_search([0.5], 2, macs, score, search="grid")
    calls.clear()
    with pytest.raises(ValueError, match="ant.nas_budgets"):  # an empty budget fails before any scoring
        nas_search([0.01], 2, macs, score, search="sensitivity")
    assert calls == []


def _rank0_table_worker(rank: int, init: str, out: str):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        mine = torch.full((6, len(RATIOS)), float(rank + 1))  # each worker measured its own table
        torch.save(task_module.rank0_table(mine), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_searches_on_rank_0s_cost_table(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_rank0_table_worker, args=(init, str(tmp_path / "table")), nprocs=2)
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"table.{rank}"), torch.full((6, len(RATIOS)), 1.0))
    alone = torch.rand(6, len(RATIOS))
    assert torch.equal(task_module.rank0_table(alone), alone)  # no process group: its own table


def test_d0_plus_widens_every_backbone_channel():
    assert [scaled_channels(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [32, 16, 24, 48, 88, 120, 208, 352]
    wide = EfficientNetSupernet(num_classes=1, width_mult=1.1)
    assert wide.features[7][-1].cout == 352
    with CostMeter(wide) as meter:
        wide.stage_features(torch.zeros(1, 3, 96, 96), (1, 2, 3, 4, 5, 6), upto=ELASTIC[-1] + 1)
    assert float(meter.per_sample_macs[0]) == supernet_macs((1, 2, 3, 4, 5, 6), 96, 96, width_mult=1.1, head=False)
    sub = wide.subnet((1, 2, 3, 4, 5, 6)).eval()
    wide.eval()
    x = torch.randn(1, 3, 96, 96)
    assert torch.allclose(sub(x), wide(x, (1, 2, 3, 4, 5, 6)), atol=1e-5)
    d0p = ANTDetector(3, fpn_channels=16, fpn_layers=1, head_repeats=1, width_mult=1.1).eval()
    assert d0p.forward_static(torch.zeros(1, 3, 64, 64))[0].shape[0] == 1


def test_coco_video_data_feeds_every_stage(tmp_path):
    from dynvid.data.synth_writer import write_synthetic
    from dynvid.data.synthetic import SceneConfig

    write_synthetic("detection", tmp_path, 3, cfg=SceneConfig(height=48, width=48, num_frames=6), val_fraction=0.34)
    cfg = apply_overrides(ExperimentConfig(), TINY + [f"data.dataset=coco-vid:{tmp_path}"])
    task = ANTTask(cfg)
    gates = task.stages[-1]
    batch, val_loader = _batch(task, cfg, gates)
    assert batch[0].shape[1:] == (3, 3, 64, 64)
    model = task.build_model(cfg, 6, gates)
    loss, _ = task.training_step(model, batch, gates)
    assert torch.isfinite(loss)
    metrics = task.evaluate(model, val_loader, gates)
    assert metrics["num_samples"] == 1 and 0.0 <= metrics["AP"] <= 1.0


def test_gate_lr_mult_reaches_the_gates_only_in_stage_2():
    from dynvid.config import ExperimentConfig, apply_overrides
    from dynvid.engine.optim import build_optimizer
    from dynvid.methods.ant import ANTTask
    from dynvid.methods.ant.presets import EMBEDDED, SMOKE

    cfg = apply_overrides(ExperimentConfig(), EMBEDDED + SMOKE + ["ant.gate_lr_mult=10", "ant.gate_lr=0.001"])
    task = ANTTask(cfg)
    gates = next(s for s in task.stages if s.name == "gates")
    model = task.build_model(gates.config(cfg), 3, gates)
    mults = task.lr_multipliers(model, gates)
    assert set(mults) == {id(p) for p in model.gates.parameters()} and set(mults.values()) == {10.0}
    opt = build_optimizer(model.parameters(), gates.config(cfg).optim, mults)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(next(model.gates.parameters()))] == pytest.approx(0.01)
    assert lr_of[id(next(model.fusions.parameters()))] == pytest.approx(0.001)
    assert task.lr_multipliers(model, task.stages[1]) == {}
    with pytest.raises(ValueError, match="gate_lr_mult"):
        ANTTask(apply_overrides(cfg, ["ant.gate_lr_mult=0"]))
    with pytest.raises(ValueError, match="fusion_lr_mult"):
        ANTTask(apply_overrides(cfg, ["ant.fusion_lr_mult=-1"]))


def test_fusion_lr_mult_reaches_the_fusions_only_in_stage_2():
    from dynvid.config import ExperimentConfig, apply_overrides
    from dynvid.engine.optim import build_optimizer
    from dynvid.methods.ant import ANTTask
    from dynvid.methods.ant.presets import EMBEDDED, SMOKE

    cfg = apply_overrides(ExperimentConfig(), EMBEDDED + SMOKE + ["ant.fusion_lr_mult=4", "ant.gate_lr_mult=2",
                                                                   "ant.gate_lr=0.001"])
    task = ANTTask(cfg)
    gates = next(s for s in task.stages if s.name == "gates")
    model = task.build_model(gates.config(cfg), 3, gates)
    opt = build_optimizer(model.parameters(), gates.config(cfg).optim, task.lr_multipliers(model, gates))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert [lr_of[id(p)] for p in model.fusions.parameters()] == pytest.approx([0.004] * len(list(model.fusions.parameters())))
    assert [lr_of[id(p)] for p in model.gates.parameters()] == pytest.approx([0.002] * len(list(model.gates.parameters())))
    assert lr_of[id(next(p for p in model.backbone.parameters() if p.requires_grad))] == pytest.approx(0.001)
    assert task.lr_multipliers(model, task.stages[1]) == {}
    pcfg = apply_overrides(cfg, ["ant.temporal=false"])  # no fusions: only the gates' rate
    plain = ANTTask(pcfg)
    pgates = next(s for s in plain.stages if s.name == "gates")
    nontemporal = plain.build_model(pgates.config(pcfg), 3, pgates)
    assert nontemporal.fusions is None
    assert set(plain.lr_multipliers(nontemporal, pgates).values()) == {2.0}


def test_rows_refuse_a_checkpoint_without_the_trained_gates(tmp_path):
    from dynvid.config import ExperimentConfig, apply_overrides
    from dynvid.engine.checkpoint import save_checkpoint
    from dynvid.methods.ant import ANTTask, build_detector
    from dynvid.methods.ant.presets import EMBEDDED, SMOKE
    from dynvid.methods.ant.report import load_model

    cfg = apply_overrides(ExperimentConfig(), EMBEDDED + SMOKE)
    task = ANTTask(cfg)
    temporal = build_detector(cfg, 3, temporal=True)
    nontemporal = build_detector(cfg, 3, temporal=False)
    for name, model in (("temporal", temporal), ("nontemporal", nontemporal)):
        save_checkpoint(tmp_path / name, model, {"ant": {"temporal": name == "temporal"}}, {})
    assert load_model(task, cfg, str(tmp_path / "temporal"), temporal=True, gates=True).temporal
    with pytest.raises(ValueError, match="no trained temporal"):
        load_model(task, cfg, str(tmp_path / "nontemporal"), temporal=True, gates=True)
    assert not load_model(task, cfg, str(tmp_path / "nontemporal"), temporal=False, gates=True).temporal


def test_latency_rows_take_turns_on_each_video_and_report_the_median_round(monkeypatch):
    from dynvid.methods.ant import report

    calls = []
    speed = {"A": 2.0, "B": 1.0}  # ms per frame; round k is (k + 1) times slower for every row

    def fake_latency(model, videos, mode):
        (video,) = videos
        calls.append((model, mode, len(video)))
        k = sum(1 for c in calls if c[0] == model) - 1
        per_round = 3  # videos per round
        return {"latency_ms": speed[model] * (k // per_round + 1) * (2 if len(video) == 4 else 1),
                "frames": float(len(video)), "threads": 1.0}

    monkeypatch.setattr(report, "amortized_latency", fake_latency)
    videos = [torch.zeros(2, 3, 8, 8), torch.zeros(4, 3, 8, 8), torch.zeros(2, 3, 8, 8)]
    rows = {"A": {}, "B": {}}
    report._time_rows(rows, [("A", "A", "mode-a"), ("B", "B", ["b0", "b1", "b2"])], videos, 3, lambda *_: None)
    # each video runs every row before the next video; a per-video mode list gives each video its mode
    assert [(m, mode) for m, mode, _ in calls[:6]] == [("A", "mode-a"), ("B", "b0"), ("A", "mode-a"), ("B", "b1"),
                                                        ("A", "mode-a"), ("B", "b2")]
    assert len(calls) == 3 * 3 * 2
    # a round is the frame-weighted mean over the videos: (2·s + 4·2s + 2·s) / 8 = 1.5 s for speed s
    assert rows["A"]["latency_ms_rounds"] == pytest.approx([3.0, 6.0, 9.0])
    assert rows["B"]["latency_ms_rounds"] == pytest.approx([1.5, 3.0, 4.5])
    assert rows["A"]["latency_ms"] == pytest.approx(6.0) and rows["B"]["latency_ms"] == pytest.approx(3.0)
