"""Tests of LiteEval's Task (config checks, Eq. 7, the temperature over global steps), the
feature-cache key, and the baselines of the evaluation (methods/liteeval/__init__.py,
features.py, evaluation.py). The end-to-end job on Ray is in tests/engine/test_liteeval_job.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.methods.liteeval import LiteEvalTask, usage_loss
from dynvid.methods.liteeval.evaluation import offline_rows, online_rows
from dynvid.methods.liteeval.features import MANIFEST, ExtractFeatures, cache_key, load_split
from dynvid.methods.liteeval.presets import EMBEDDED, SMOKE
from dynvid.metrics.cost import model_cost

TINY = EMBEDDED + SMOKE + ["liteeval.coarse_hidden=8", "liteeval.fine_hidden=16"]


def _cfg(*extra: str) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), TINY + list(extra))


@pytest.mark.parametrize(("override", "match"), [
    ("data.clip_len=40", "steps × liteeval.snippet_len"),
    ("liteeval.fine_backbone=resnet1", "unknown backbone"),
    ("liteeval.coarse_backbone=mobilenet_v2", "both be 2-D"),
    ("liteeval.gamma=1.5", "gamma"),
    ("liteeval.usage_weight=-1", "usage_weight"),
    ("liteeval.features=disk", "features"),
    ("liteeval.rnn=sru", "rnn"),
    ("liteeval.fine_hidden=8", "coarse_hidden < fine_hidden"),
    ("liteeval.tau_end=9", "tau_end"),
    ("liteeval.budget=0", "budget"),
])
def test_bad_settings_are_clear_errors(override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LiteEvalTask(_cfg(override))


def test_2d_backbones_take_one_frame_per_step() -> None:
    cfg = _cfg("liteeval.fine_backbone=resnet18", "liteeval.coarse_backbone=mobilenet_v2")
    with pytest.raises(ValueError, match="snippet_len"):
        LiteEvalTask(cfg)
    LiteEvalTask(apply_overrides(cfg, ["liteeval.snippet_len=1", "data.clip_len=8"]))


def test_stages_and_their_schedules() -> None:
    task = LiteEvalTask(_cfg())
    assert [s.name for s in task.stages] == ["cnns", "lstm", "liteeval"]
    cnns = task.stage("cnns").config(_cfg())
    assert cnns.data.clip_len == 8 and task.test_dataset(cnns) is None  # one snippet per video; no video test
    rnn = task.stage("liteeval").config(_cfg())
    assert rnn.optim.optimizer == "adam" and rnn.optim.epochs == 2 and rnn.data.batch_size == 8
    assert not task.stage("cnns").init_from_previous and task.stage("liteeval").init_from_previous
    # the γ/λ knobs do not touch the shared stages, so a sweep trains them once
    assert "liteeval.gamma" in task.stage("lstm").independent_of
    assert "liteeval.gamma" not in task.stage("liteeval").independent_of


def test_usage_loss_is_eq7_second_term() -> None:
    use = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert float(usage_loss(use, 0.05)) == pytest.approx(((0.25 - 0.05) ** 2 + (0.5 - 0.05) ** 2) / 2)


def _batch(b: int = 4, t: int = 12, classes: int = 12):
    g = torch.Generator().manual_seed(0)
    task = LiteEvalTask(_cfg())
    model = task.build_model(_cfg(), classes, task.stage("liteeval"))
    coarse = torch.randn(b, t, model.coarse.net.num_features, generator=g)
    fine = torch.randn(b, t, model.fine.net.num_features, generator=g)
    return task, model, ((coarse, fine), torch.randint(0, classes, (b,), generator=g))


def test_temperature_follows_global_steps_across_epochs_and_resume() -> None:
    task, model, batch = _batch()
    task.steps_per_epoch = 3  # 2 epochs of 3 steps: the anneal spans the stage
    stage = task.stage("liteeval")
    model.train()
    taus = []
    for _epoch in range(2):
        for _ in range(3):
            loss, logs = task.training_step(model, batch, stage)
            loss.backward()
            taus.append(logs["tau"])
    assert taus[0] == pytest.approx(5.0)
    assert all(a > b for a, b in zip(taus, taus[1:]))  # monotone, and no reset at the epoch boundary
    assert int(model.global_step) == 6
    # the step is part of the checkpoint: a resumed model continues the schedule
    fresh = task.build_model(_cfg(), 12, stage)
    fresh.load_state_dict(model.state_dict())
    _, logs = task.training_step(fresh.train(), batch, stage)
    assert logs["tau"] < taus[-1]
    assert 0.0 <= logs["fine_fraction"] <= 1.0 and logs["usage_loss"] >= 0
    # the step count the Task keeps on the host follows a load into a model that already trained
    fresh.load_state_dict(task.build_model(_cfg(), 12, stage).state_dict())
    _, logs = task.training_step(fresh, batch, stage)
    assert logs["tau"] == pytest.approx(5.0)


def test_training_step_loss_is_ce_plus_weighted_usage() -> None:
    task, model, batch = _batch()
    task.steps_per_epoch = 1
    torch.manual_seed(0)
    loss, logs = task.training_step(model.train(), batch, task.stage("liteeval"))
    assert float(loss.detach()) == pytest.approx(float(logs["ce"]) + 2.0 * float(logs["usage_loss"]), rel=1e-5)
    loss.backward()
    assert model.core.gate.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.fine.parameters())  # the CNNs are frozen


def test_cache_key_depends_on_the_cnns_only() -> None:
    task, model, _ = _batch()
    key = cache_key(_cfg(), model)
    with torch.no_grad():
        model.core.gate.weight.add_(1.0)
    assert cache_key(_cfg(), model) == key  # RNN weights do not change the features
    with torch.no_grad():
        next(model.fine.parameters()).add_(1.0)
    assert cache_key(_cfg(), model) != key
    assert cache_key(_cfg("data.stride=1"), model) != cache_key(_cfg(), model)


def _fake_cache(n: int = 6, t: int = 5, classes: int = 3):
    rng = np.random.default_rng(0)
    task, model, _ = _batch(classes=classes)
    data = {"label": rng.integers(0, classes, n), "coarse": rng.normal(size=(n, t, model.coarse.net.num_features)).astype(np.float32),
            "fine": rng.normal(size=(n, t, model.fine.net.num_features)).astype(np.float32),
            "coarse_logits": rng.normal(size=(n, t, classes)).astype(np.float32),
            "fine_logits": rng.normal(size=(n, t, classes)).astype(np.float32)}
    manifest = {"coarse_macs": 10.0, "fine_macs": 1000.0, "coarse_head_macs": 1.0, "fine_head_macs": 2.0, "steps": t}
    model.core = type(model.core)(model.coarse.net.num_features, model.fine.net.num_features, classes, 8, 16)
    return data, manifest, model.eval()


def test_offline_baselines_and_costs() -> None:
    data, manifest, model = _fake_cache()
    rows, run = offline_rows(data, manifest, model)
    by = {r["method"]: r for r in rows}
    p = np.exp(data["fine_logits"]) / np.exp(data["fine_logits"]).sum(-1, keepdims=True)
    assert by["UNIFORM"]["top1"] == pytest.approx(float((p.mean(1).argmax(1) == data["label"]).mean()))
    assert by["UNIFORM"]["gflops"] == pytest.approx(5 * 1002 / 1e9)
    assert by["UNIFORM+CF"]["gflops"] == pytest.approx(5 * 1013 / 1e9)
    # LiteEval: every step's coarse CNN + its fine reads + the RNN path the meter saw
    reads = run["use"].sum(1)
    rnn = model.core.coarse_step_macs * 5 + model.core.fine_step_macs * reads + model.core.classifier_macs
    assert run["macs"] == pytest.approx(5 * 10.0 + reads * 1000.0 + rnn)


def test_online_baselines_use_k_fine_frames() -> None:
    data, manifest, model = _fake_cache()
    rows = online_rows(data, manifest, model, budgets=(1, 3))
    names = [r["method"] for r in rows]
    assert names == ["LiteEval K=1", "UNIFORM-K K=1", "SEQ-K K=1", "LiteEval K=3", "UNIFORM-K K=3", "SEQ-K K=3"]
    seq3 = rows[5]
    p = np.exp(data["fine_logits"]) / np.exp(data["fine_logits"]).sum(-1, keepdims=True)
    assert seq3["top1"] == pytest.approx(float((p[:, :3].mean(1).argmax(1) == data["label"]).mean()))
    assert seq3["gflops"] == pytest.approx(3 * 1002 / 1e9)
    # a video stops at its K-th read and decides as offline up to there: min(offline reads, K) reads
    _, offline = offline_rows(data, manifest, model)
    offline_reads = offline["use"].sum(1)
    assert offline_reads.min() < 3 < offline_reads.max()  # K = 3 cuts some videos, not all
    assert rows[0]["fine_reads"] == pytest.approx(float(np.minimum(offline_reads, 1).mean()))
    assert rows[3]["fine_reads"] == pytest.approx(float(np.minimum(offline_reads, 3).mean()))


def _step_features_macs(net: torch.nn.Module, shape: tuple[int, ...], classes: int) -> float:
    """MACs of one time step through a backbone's features, measured on the static network
    alone (its classifier, ``num_features × classes``, taken off): the by-hand unit cost."""
    return model_cost(net, shape)["macs"] - net.num_features * classes


@pytest.mark.parametrize("decide", ["gate", "always_fine", "always_coarse"])
def test_pixel_mode_evaluation_counts_what_the_gates_chose(decide: str) -> None:
    """``liteeval.features=pixels``: the stage reads videos and the frozen CNNs run inside the
    step. The evaluation's GFLOPs per video must equal the cost computed by hand — T coarse
    steps (coarse CNN + cRNN + gate) plus, per fine read, the fine CNN and the fRNN, plus
    the classifier — and its fine reads must equal the rows the fine CNN actually ran,
    which are the recorded hard gate decisions."""
    cfg = _cfg("liteeval.features=pixels")
    task = LiteEvalTask(cfg)
    task.steps_per_epoch = 1
    stage = task.stage("liteeval")
    assert task.datasets(cfg, stage) is None  # the engine's clip datasets: whole videos
    classes, b, t = 12, 4, cfg.liteeval.steps
    video, labels = torch.randn(b, 3, 64, 48, 48, generator=torch.Generator().manual_seed(1)), torch.arange(b)
    for seed in range(20):  # a gate whose decisions differ between steps and videos
        torch.manual_seed(seed)
        model = task.build_model(cfg, classes, stage)
        if decide != "gate":
            with torch.no_grad():
                model.core.gate.weight.zero_()
                model.core.gate.bias.copy_(torch.tensor([0.0, 1.0] if decide == "always_fine" else [1.0, 0.0]))
        with torch.no_grad():
            model.eval()(video)
        if decide != "gate" or 0 < model.last_use.sum() < model.last_use.numel():
            break
    # a training step first: the pixel path trains the gate through every step
    loss, logs = task.training_step(model.train(), (video[:2], labels[:2]), stage)
    loss.backward()
    assert model.core.gate.weight.grad is not None and logs["tau"] == pytest.approx(5.0)
    if decide == "gate":
        with torch.no_grad():
            model.eval()(video)
        assert 0 < model.last_use.sum() < model.last_use.numel()

    fine_rows = []
    features = model.fine.net.forward_features
    model.fine.net.forward_features = lambda x: fine_rows.append(x.shape[0]) or features(x)
    metrics = task.evaluate(model, [(video, labels)], stage)
    use = model.last_use  # the hard decisions of this evaluation, (B, T)
    reads = use.sum(1).double()
    assert torch.equal(use, use.round())
    assert sum(fine_rows) == int(use.sum())  # the fine CNN ran once per B_t = 1, never for B_t = 0
    expected_reads = {"always_fine": float(t), "always_coarse": 0.0}.get(decide, float(reads.mean()))
    assert metrics["fine_reads"] == pytest.approx(expected_reads)
    assert metrics["fine_reads"] == pytest.approx(sum(fine_rows) / b)

    le, core = cfg.liteeval, model.core
    fine_cnn = _step_features_macs(model.fine.net, (3, le.snippet_len, 48, 48), classes)
    coarse_cnn = _step_features_macs(model.coarse.net, (3, le.snippet_len, le.coarse_size, le.coarse_size), classes)
    dc, df = model.coarse.net.num_features, model.fine.net.num_features
    hc, hf = le.coarse_hidden, le.fine_hidden
    crnn, frnn = 4 * (dc + hc) * hc, 4 * (dc + df + hf) * hf  # LSTM cells: 4 gates × (input + hidden) × hidden
    gate, classifier = (dc + hf) * 2, hf * classes
    per_video = t * (coarse_cnn + crnn + gate) + reads * (fine_cnn + frnn) + classifier
    assert metrics["gflops_avg"] == pytest.approx(float(per_video.mean()) / 1e9, rel=1e-9)
    assert metrics["gflops_min"] == pytest.approx(float(per_video.min()) / 1e9, rel=1e-9)
    assert metrics["gflops_max"] == pytest.approx(float(per_video.max()) / 1e9, rel=1e-9)
    assert metrics["num_samples"] == b


def test_extraction_items_map_to_each_splits_videos_in_order() -> None:
    """One extraction runs over the splits' videos one after the other: item i is (split, index)."""
    extract = object.__new__(ExtractFeatures)  # the mapping alone: no CNNs, no data
    for sizes, cases in (((16, 6), {0: ("train", 0), 15: ("train", 15), 16: ("val", 0), 21: ("val", 5)}),
                         ((0, 6), {0: ("val", 0), 5: ("val", 5)}),
                         ((6,), {0: ("train", 0), 5: ("train", 5)})):
        extract.datasets = [(name, [None] * n) for name, n in zip(("train", "val"), sizes)]
        extract.starts = np.cumsum([0, *sizes])
        assert {i: extract.locate(i) for i in cases} == cases, sizes
        for outside in (-1, sum(sizes)):
            with pytest.raises(IndexError, match=f"outside the {sum(sizes)} videos"):
                extract.locate(outside)


def test_a_cache_of_the_older_layout_is_refused_by_name(tmp_path) -> None:
    import json

    (tmp_path / MANIFEST).write_text(json.dumps({"splits": {"train": 4, "val": 2}, "steps": 2}))  # no "format": 1
    with pytest.raises(ValueError, match=f"{tmp_path} has layout 1 .* build it again"):
        load_split(str(tmp_path), "val")
