"""Tests of LiteEval's gate, RNNs and pixel model (methods/liteeval/gumbel.py, model.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.backbones import mobilenet_v2, r2plus1d_18, resnet18
from dynvid.methods.liteeval.gumbel import gumbel_softmax, temperature_at
from dynvid.methods.liteeval.model import LiteEval, LiteEvalCore
from dynvid.metrics.cost import CostMeter, model_cost


def test_gumbel_straight_through_is_one_hot_with_soft_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 2, requires_grad=True)
    sample = gumbel_softmax(logits, tau=1.0, hard=True)
    hard = sample.detach()
    assert torch.allclose(hard, hard.round(), atol=1e-6)  # one-hot up to float rounding of soft - soft
    assert torch.equal(hard.round().sum(1), torch.ones(64)) and 0 < hard.round()[:, 1].sum() < 64
    (sample[:, 1] * torch.arange(64.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_samples_follow_the_logits() -> None:
    logits = torch.tensor([[0.0, 2.0]]).expand(20000, 2)
    freq = gumbel_softmax(logits, tau=1.0, generator=torch.Generator().manual_seed(0))[:, 1].mean()
    assert float(freq) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.02)  # Eq. 8


def test_temperature_anneals_from_high_to_low_and_stays() -> None:
    taus = [temperature_at(s, 5.0, 0.5, 100) for s in range(0, 200)]
    assert taus[0] == pytest.approx(5.0) and taus[100] == pytest.approx(0.5) and taus[-1] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    with pytest.raises(ValueError):
        temperature_at(0, 0.5, 5.0, 100)


def _core(rnn: str = "lstm", dc: int = 4, df: int = 10) -> LiteEvalCore:
    torch.manual_seed(0)
    return LiteEvalCore(coarse_dim=6, fine_dim=5, num_classes=3, coarse_hidden=dc, fine_hidden=df, rnn=rnn)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_synchronisation_copies_exactly_the_first_dc_dims(rnn: str) -> None:
    core = _core(rnn).eval()
    parts = 2 if rnn == "lstm" else 1
    prev_fine = tuple(torch.randn(3, 10) for _ in range(parts))
    prev_coarse = tuple(torch.randn(3, 4) for _ in range(parts))
    called = []
    out = core.step(torch.randn(3, 6), (prev_coarse, prev_fine), lambda idx: called.append(idx) or torch.randn(len(idx), 5),
                    force="coarse")
    assert called == []  # B_t = 0: no fine features
    for c, f, p in zip(out.coarse, out.fine, prev_fine):
        assert torch.equal(f[:, :4], c)  # h^c copied into dims 1..D^c
        assert torch.equal(f[:, 4:], p[:, 4:])  # the rest of h^f_{t-1} kept
    assert not torch.equal(out.coarse[0], prev_coarse[0])  # the cRNN did step


def test_always_fine_equals_a_plain_coarse_plus_fine_lstm() -> None:
    core = _core().train()
    coarse, fine = torch.randn(2, 7, 6), torch.randn(2, 7, 5)
    logits, use = core(coarse, fine, force="fine")
    lstm = nn.LSTM(11, 10, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(core.frnn.weight_ih)
        lstm.weight_hh_l0.copy_(core.frnn.weight_hh)
        lstm.bias_ih_l0.copy_(core.frnn.bias_ih)
        lstm.bias_hh_l0.copy_(core.frnn.bias_hh)
    out, _ = lstm(torch.cat([coarse, fine], 2))
    assert torch.equal(use, torch.ones(2, 7))
    assert torch.allclose(logits, core.classifier(out[:, -1]), atol=1e-6)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_inference_path_computes_the_trained_function(rnn: str) -> None:
    """``infer`` (real skipping, states updated in place, sub-batches) gives the logits and
    decisions of the sequence forward, and "always fine" equals a plain nn.LSTM/GRU."""
    core = _core(rnn).eval()
    coarse, fine = torch.randn(5, 7, 6), torch.randn(5, 7, 5)
    with torch.no_grad():
        ref_logits, ref_use = core(coarse, fine)
        logits, use, exit_step = core.infer(5, 7, lambda t, rows: coarse[rows, t], lambda t, rows: fine[rows, t])
        assert 0 < ref_use.sum() < ref_use.numel()  # mixed decisions: both branches ran
        assert torch.equal(use, ref_use) and torch.all(exit_step == 7)
        assert torch.allclose(logits, ref_logits, atol=1e-6)
        forced, _, _ = core.infer(5, 7, lambda t, rows: coarse[rows, t], lambda t, rows: fine[rows, t], force="fine")
        plain = (nn.LSTM if rnn == "lstm" else nn.GRU)(11, 10, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(plain, f"{name}_l0").copy_(getattr(core.frnn, name))
        out, _ = plain(torch.cat([coarse, fine], 2))
        assert torch.allclose(forced, core.classifier(out[:, -1]), atol=1e-5)


def test_gate_gradient_flows_through_the_hard_decisions() -> None:
    core = _core().train()
    logits, use = core(torch.randn(4, 5, 6), torch.randn(4, 5, 5), tau=1.0)
    assert torch.allclose(use.detach(), use.detach().round(), atol=1e-6)
    (logits.sum() + use.mean()).backward()
    assert core.gate.weight.grad is not None and core.gate.weight.grad.abs().sum() > 0


def test_core_rejects_a_coarse_state_as_large_as_the_fine() -> None:
    with pytest.raises(ValueError, match="D\\^c < D\\^f"):
        LiteEvalCore(6, 5, 3, coarse_hidden=10, fine_hidden=10)


def _features_macs(net: nn.Module, shape: tuple[int, ...]) -> float:
    """MACs of the backbone without its classifier (the extractors use pooled features)."""
    return model_cost(net, shape)["macs"] - net.num_features * 3


def _pixel_model(seed: int = 0, frames_2d: bool = True) -> LiteEval:
    torch.manual_seed(seed)
    if frames_2d:
        coarse, fine, snippet = mobilenet_v2(width_mult=0.25, num_classes=3), resnet18(width_mult=0.125, num_classes=3), 1
    else:
        coarse = r2plus1d_18(width_mult=0.125, num_classes=3)
        fine, snippet = r2plus1d_18(width_mult=0.25, num_classes=3), 2
    core = LiteEvalCore(coarse.num_features, fine.num_features, 3, coarse_hidden=8, fine_hidden=16)
    with torch.no_grad():
        core.gate.bias.copy_(torch.tensor([0.0, 0.0]))
    return LiteEval(coarse, fine, core, coarse_size=16, steps=6, snippet_len=snippet).eval()


def _mixed_decision_model(frames_2d: bool = True):
    """A model whose gate picks fine features for some steps and not others."""
    video_shape = (4, 3, 6 if frames_2d else 12, 32, 32)
    for seed in range(20):
        model = _pixel_model(seed, frames_2d)
        video = torch.randn(video_shape)
        with torch.no_grad():
            model(video)
        if 0 < model.last_use.sum() < model.last_use.numel():
            return model, video
    raise AssertionError("no seed gave mixed decisions")


@pytest.mark.parametrize("frames_2d", [True, False])
def test_fine_cnn_runs_only_where_the_gate_says(frames_2d: bool) -> None:
    model, video = _mixed_decision_model(frames_2d)
    rows = []
    first_layer = next(model.fine.net.children())  # ResNet conv1 / R(2+1)D stem: every call passes it
    handle = first_layer.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    with torch.no_grad(), CostMeter(model) as meter:
        model(video)
    handle.remove()
    assert sum(rows) == int(model.last_use.sum())  # one fine row per B_t = 1, none for B_t = 0
    assert sum(rows) < model.last_use.numel()
    # the meter saw exactly that: the fine CNN's MACs per sample = reads × one step's MACs
    step_shape = (3, 32, 32) if frames_2d else (3, 2, 32, 32)
    fine_macs = _features_macs(model.fine.net, step_shape)
    reads = model.last_use.sum(1).double()
    assert torch.allclose(meter.by_module["fine"], reads * fine_macs)
    coarse_shape = (3, 16, 16) if frames_2d else (3, 2, 16, 16)
    assert torch.allclose(meter.by_module["coarse"], torch.full((4,), 6 * _features_macs(model.coarse.net, coarse_shape),
                                                                 dtype=torch.float64))
    assert not meter.uncounted


def test_online_budget_is_respected() -> None:
    model, video = _mixed_decision_model()
    with torch.no_grad():
        offline = model(video)
        offline_use = model.last_use.clone()
    k = 1
    with torch.no_grad(), CostMeter(model) as meter:
        online = model(video, budget=k)
    reads = model.last_use.sum(1)
    assert torch.all(reads <= k)
    stopped = model.last_exit < model.steps
    assert torch.all(reads[stopped] == k)
    # decisions up to the exit step are the offline ones; nothing is computed after it
    for i in range(4):
        e = int(model.last_exit[i])
        assert torch.equal(model.last_use[i, :e], offline_use[i, :e])
        assert torch.all(model.last_use[i, e:] == 0)
    finished = ~stopped
    assert torch.allclose(online[finished], offline[finished], atol=1e-6)
    coarse_one = _features_macs(model.coarse.net, (3, 16, 16))
    assert torch.allclose(meter.by_module["coarse"], model.last_exit.double() * coarse_one)
    with pytest.raises(ValueError, match="budget"):
        model(video, budget=0)


def test_training_path_runs_every_step_and_backpropagates_to_the_gate() -> None:
    model = _pixel_model().train()
    for p in list(model.coarse.parameters()) + list(model.fine.parameters()):
        p.requires_grad_(False)
    logits = model(torch.randn(2, 3, 6, 32, 32), tau=2.0)
    (logits.sum() + model.last_use.sum()).backward()
    assert model.core.gate.weight.grad.abs().sum() > 0


def test_wrong_frame_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="6 steps"):
        _pixel_model()(torch.randn(1, 3, 5, 32, 32))
