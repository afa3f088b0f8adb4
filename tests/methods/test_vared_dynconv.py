"""VA-RED² dynamic convolution and gate (thesis Eq. 3.1–3.5, App. A.2): exactness against
the static conv, hard path = soft path, executed MACs, real slicing, per-sample paths,
gradients to the gates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynvid.methods.vared import dynconv
from dynvid.methods.vared.dynconv import DynamicConv3d, SoftModulationGate, executed_fraction, executed_index
from dynvid.metrics.cost import CostMeter

# (kernel, stride, padding, groups, bias): R(2+1)D's spatial conv, I3D's 3×3×3, X3D's
# depthwise 3×3×3 and a pointwise conv.
CONVS = {
    "spatial_1x3x3": ((1, 3, 3), (1, 2, 2), (0, 1, 1), 1, False),
    "full_3x3x3": ((3, 3, 3), (1, 1, 1), (1, 1, 1), 1, True),
    "depthwise_3x3x3": ((3, 3, 3), (2, 1, 1), (1, 1, 1), 8, False),
    "pointwise": ((1, 1, 1), (1, 1, 1), (0, 0, 0), 1, False),
}


def make(name: str, search_space: int = 2, cheap_kernel: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    kernel, stride, padding, groups, bias = CONVS[name]
    conv = nn.Conv3d(8, 8, kernel, stride, padding, groups=groups, bias=bias)
    dyn = DynamicConv3d.from_conv(conv, search_space=search_space, gate_frames=8, cheap_kernel=cheap_kernel)
    return conv, dyn


def perturb_cheap_ops(dyn: DynamicConv3d) -> None:
    """Move the cheap operations away from their identity initialisation."""
    with torch.no_grad():
        for p in [*dyn.cheap_channel.parameters(), *dyn.cheap_temporal.parameters()]:
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("search_space", [2, 3])
def test_compute_all_equals_the_static_conv(name, search_space):
    conv, dyn = make(name, search_space)
    perturb_cheap_ops(dyn)
    x = torch.randn(3, 8, 8, 10, 10)
    dyn.force("all")
    for training in (False, True):  # hard path and soft path
        dyn.train(training)
        torch.testing.assert_close(dyn(x), conv(x), atol=1e-5, rtol=0)


def test_gate_output_is_in_zero_one():
    torch.manual_seed(0)
    gate = SoftModulationGate(in_channels=6, frames=4, hidden=16, num_temporal=3, num_channel=2)
    with torch.no_grad():
        gate.fc2.weight.mul_(100)  # saturate tanh in both directions
    for mode in (True, False):
        gate.train(mode)
        v_t, v_c = gate(torch.randn(32, 6, 4, 5, 5) * 10)
        assert v_t.shape == (32, 3) and v_c.shape == (32, 2)
        v = torch.cat([v_t, v_c], 1)
        assert bool((v >= 0).all()) and bool((v < 1).all())
        assert bool((v == 0).any()), "max(tanh, 0) must produce exact zeros"


def test_gate_pools_to_c_times_t_and_accepts_other_clip_lengths():
    gate = SoftModulationGate(in_channels=6, frames=4, hidden=16, num_temporal=2, num_channel=2).eval()
    assert gate.fc1.in_features == 6 * 4
    v_t, _ = gate(torch.randn(2, 6, 8, 5, 5))  # 8 frames are pooled to the configured 4
    assert v_t.shape == (2, 2)


def random_decision(dyn: DynamicConv3d, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    st, sc = len(dyn.temporal_factors), len(dyn.channel_ratios)
    v_t = torch.rand(batch, st, generator=g) * (torch.rand(batch, st, generator=g) > 0.4)
    v_c = torch.rand(batch, sc, generator=g) * (torch.rand(batch, sc, generator=g) > 0.4)
    return v_t, v_c


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("search_space,cheap_kernel", [(2, 1), (3, 1), (3, 3)])
def test_hard_path_computes_the_soft_path_function(name, search_space, cheap_kernel):
    """Eq. A.1: the inference path (largest non-zero choice only, smaller ones sliced from it)
    equals the training mixture, for every mix of choices within one batch."""
    _, dyn = make(name, search_space, cheap_kernel)
    perturb_cheap_ops(dyn)
    x = torch.randn(8, 8, 8, 10, 10)
    for seed in range(4):
        v_t, v_c = random_decision(dyn, 8, seed)
        soft = dyn.dynamic_forward(x, v_t, v_c, hard=False)
        hard = dyn.dynamic_forward(x, v_t, v_c, hard=True)
        torch.testing.assert_close(hard, soft, atol=2e-5, rtol=0)
        with torch.no_grad():  # inference writes single-choice groups straight into the output
            torch.testing.assert_close(dyn.dynamic_forward(x, v_t, v_c, hard=True), soft, atol=2e-5, rtol=0)
    # one sample per forward, one choice each: the single-choice path for every (i, j)
    for i in range(len(dyn.channel_ratios)):
        for j in range(len(dyn.temporal_factors)):
            v_t = torch.zeros(1, len(dyn.temporal_factors))
            v_c = torch.zeros(1, len(dyn.channel_ratios))
            v_t[0, j], v_c[0, i] = 0.7, 0.4
            soft = dyn.dynamic_forward(x[:1], v_t, v_c, hard=False)
            with torch.no_grad():
                torch.testing.assert_close(dyn.dynamic_forward(x[:1], v_t, v_c, hard=True), soft, atol=2e-5, rtol=0)


def test_hard_path_is_selected_per_sample_within_a_batch():
    _, dyn = make("spatial_1x3x3", search_space=3)
    perturb_cheap_ops(dyn)
    x = torch.randn(4, 8, 8, 10, 10)
    # sample 0: all; 1: half channels; 2: quarter frames; 3: every weight 0
    v_t = torch.tensor([[0.9, 0, 0], [0.5, 0.2, 0], [0, 0, 0.7], [0, 0, 0]])
    v_c = torch.tensor([[0.8, 0, 0], [0, 0.6, 0.1], [0.3, 0, 0], [0, 0, 0]])
    with CostMeter(dyn) as meter:
        batch_out = dyn.dynamic_forward(x, v_t, v_c, hard=True)
    alone = torch.cat([dyn.dynamic_forward(x[i : i + 1], v_t[i : i + 1], v_c[i : i + 1], hard=True) for i in range(4)])
    torch.testing.assert_close(batch_out, alone, atol=1e-6, rtol=0)
    macs = meter.per_sample_macs
    assert macs[0] > macs[1] > macs[2] > macs[3] > 0
    # no silent layer (issue 19, cause 1): all weights 0 runs the cheapest choice, r = 1/4, R = 4
    cheapest = torch.tensor([[0.0, 0.0, 1.0]])
    torch.testing.assert_close(batch_out[3:], dyn.dynamic_forward(x[3:], cheapest, cheapest, hard=True), atol=1e-6, rtol=0)
    assert torch.count_nonzero(batch_out[3]) > 0.9 * batch_out[3].numel()


# Executed MACs, written out from the layer sizes (not from the code under test):
# conv 8->8, kernel 1x3x3, spatial stride 2, input (8 frames, 10x10) -> output (8, 5, 5).
# C(f) = 8 out * 8 in * 9 * (8*5*5) = 115200.
FULL = 8 * 8 * 9 * 8 * 5 * 5
HW = 5 * 5


@pytest.mark.parametrize(
    "choice,v_t,v_c,expected",
    [
        # all channels, all frames: C(f), no cheap op
        ("r=1,R=1", [1, 0], [1, 0], FULL),
        # r = 1/2: 4 channels computed (C(f)/2) + Φ^c generates 4 channels on 8 frames
        ("r=1/2,R=1", [1, 0], [0, 1], FULL // 2 + 4 * 8 * HW),
        # R = 2: 4 frames computed (C(f)/2) + Φ^t generates 1 frame per computed frame, 8 channels
        ("r=1,R=2", [0, 1], [1, 0], FULL // 2 + 8 * 1 * 4 * HW),
        # r = 1/2 and R = 2: C(f)/4 + Φ^c (4 ch on 4 frames) + Φ^t (8 ch, 4 frames)
        ("r=1/2,R=2", [0, 1], [0, 1], FULL // 4 + 4 * 4 * HW + 8 * 4 * HW),
        # both choices weighted: the largest runs, the smaller one's cheap op runs too
        ("r=1 and 1/2", [1, 0], [0.5, 0.5], FULL + 4 * 8 * HW),
        # every weight 0: the cheapest choice runs (issue 19, cause 1), r = 1/2 and R = 2
        ("all weights 0", [0, 0], [0, 0], FULL // 4 + 4 * 4 * HW + 8 * 4 * HW),
    ],
)
def test_executed_macs_are_r_over_R_of_the_conv_plus_cheap_ops(choice, v_t, v_c, expected):
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.eval()
    x = torch.randn(1, 8, 8, 10, 10)
    with CostMeter(dyn.gate) as gate_meter:  # the gate is counted separately
        dyn.gate(x)
    with CostMeter(dyn) as meter:
        dyn.dynamic_forward(x, torch.tensor([v_t], dtype=torch.float), torch.tensor([v_c], dtype=torch.float), hard=True)
    assert dyn.full_macs == FULL
    assert meter.per_sample_macs.item() == expected, choice
    # forward() adds the gate's two FCs: C_in*T*D_h + D_h*(S_t+S_c)
    assert gate_meter.per_sample_macs.item() == 8 * 8 * 32 + 32 * 4


def test_the_hard_path_runs_a_smaller_convolution(monkeypatch):
    """No masking: the conv that runs has the sliced kernel and the scaled temporal stride."""
    _, dyn = make("full_3x3x3", search_space=3)
    dyn.eval()
    calls = []
    real = dynconv.F.conv3d

    def spy(x, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(x.shape), tuple(weight.shape), tuple(stride)))
        return real(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(dynconv.F, "conv3d", spy)
    x = torch.randn(1, 8, 8, 6, 6)
    out = dyn.dynamic_forward(x, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 1.0, 0.0]]), hard=True)
    assert calls == [((1, 8, 8, 6, 6), (4, 8, 3, 3, 3), (4, 1, 1))]  # 4 of 8 filters, every 4th frame
    assert out.shape == (1, 8, 8, 6, 6)  # reconstructed to the full output


def test_depthwise_hard_path_slices_input_channels_too(monkeypatch):
    _, dyn = make("depthwise_3x3x3", search_space=2)
    dyn.eval()
    calls = []
    real = dynconv.F.conv3d
    monkeypatch.setattr(dynconv.F, "conv3d", lambda x, w, b, s, p, d, g: calls.append((x.shape[1], w.shape[0], g))
                        or real(x, w, b, s, p, d, g))
    dyn.dynamic_forward(torch.randn(1, 8, 8, 6, 6), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), hard=True)
    assert calls == [(4, 4, 4)]


def test_gradients_reach_the_gate_and_cheap_ops_in_training():
    _, dyn = make("spatial_1x3x3", search_space=3)
    with torch.no_grad():  # every choice on (they start off: see the converted-model test)
        dyn.gate.fc2.bias.fill_(0.5)
    dyn.train()
    x = torch.randn(4, 8, 8, 10, 10)
    out = dyn(x)
    (out.square().mean() + dyn.last_fraction.sum()).backward()
    for name, p in [*dyn.gate.named_parameters(), *dyn.cheap_channel.named_parameters(),
                    *dyn.cheap_temporal.named_parameters()]:
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_executed_index_and_fraction():
    v = torch.tensor([[0.3, 0.2, 0.0], [0.0, 0.5, 0.1], [0.0, 0.0, 0.2], [0.0, 0.0, 0.0]])
    assert executed_index(v).tolist() == [0, 1, 2, 2]  # all 0: the cheapest runs
    assert executed_fraction(v, [1.0, 0.5, 0.25]).tolist() == [1.0, 0.5, 0.25, 0.25]


def test_straight_through_fraction_has_exact_value_and_a_gradient():
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.train()
    v_t = torch.tensor([[0.0, 0.7]], requires_grad=True)
    v_c = torch.tensor([[0.4, 0.9]], requires_grad=True)
    dyn.dynamic_forward(torch.randn(1, 8, 8, 10, 10), v_t, v_c, hard=False)
    assert dyn.last_fraction.item() == pytest.approx(1.0 * 0.5)  # r_s = 1 (V_c[0] > 0), R_s = 2
    dyn.last_fraction.sum().backward()
    assert v_c.grad[0, 0] > 0 > v_c.grad[0, 1]  # weight moves from the expensive choice to the cheap one
    assert v_t.grad[0, 0] > 0 and v_t.grad[0, 1] == pytest.approx(0.0, abs=1e-7)  # cheap alone: at its minimum


@pytest.mark.parametrize("kwargs,match", [
    ({"search_space": 4}, "search_space"),
    ({"cheap_kernel": 2}, "cheap_kernel"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicConv3d(8, 8, 3, padding=1, gate_frames=4, **kwargs)


def test_grouped_non_depthwise_conv_is_refused_for_channel_dynamics():
    with pytest.raises(ValueError, match="groups"):
        DynamicConv3d(8, 16, 3, padding=1, groups=2, gate_frames=4)


def test_wrong_decision_shape_is_a_clear_error():
    _, dyn = make("pointwise")
    with pytest.raises(ValueError, match="decision shapes"):
        dyn.dynamic_forward(torch.randn(2, 8, 4, 4, 4), torch.ones(2, 3), torch.ones(2, 2), hard=True)


def test_a_one_frame_kernel_runs_as_conv2d_on_the_kept_frames(monkeypatch):
    """R(2+1)D's 1×3×3 convolutions: the sub-convolution is a conv2d over every R-th frame."""
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.eval()
    calls = []
    real = dynconv.F.conv2d

    def spy(x, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(x.shape), tuple(weight.shape), tuple(stride)))
        return real(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(dynconv.F, "conv2d", spy)
    x = torch.randn(2, 8, 8, 10, 10)
    with torch.no_grad():
        out = dyn.dynamic_forward(x, torch.tensor([[0.0, 1.0]] * 2), torch.tensor([[0.0, 1.0]] * 2), hard=True)
    assert calls == [((2 * 4, 8, 10, 10), (4, 8, 3, 3), (2, 2))]  # 4 frames of 8, 4 filters of 8
    assert out.shape == (2, 8, 8, 5, 5)


@pytest.mark.parametrize("channels,frames", [(7, 7), (5, 3), (6, 1)])
def test_odd_channels_and_frames_not_divisible_by_R(channels, frames):
    torch.manual_seed(3)
    conv = nn.Conv3d(channels, channels, (3, 3, 3), padding=(1, 1, 1))
    dyn = DynamicConv3d.from_conv(conv, search_space=3, gate_frames=frames)
    perturb_cheap_ops(dyn)
    x = torch.randn(6, channels, frames, 5, 5)
    v_t, v_c = random_decision(dyn, 6, seed=1)
    soft = dyn.dynamic_forward(x, v_t, v_c, hard=False)
    torch.testing.assert_close(dyn.dynamic_forward(x, v_t, v_c, hard=True), soft, atol=2e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(dyn.dynamic_forward(x, v_t, v_c, hard=True), soft, atol=2e-5, rtol=0)


def test_fractions_are_those_of_the_sub_convolution_that_runs():
    """⌈rC⌉/C and ⌈T_o/R⌉/T_o: one output frame saves nothing by R = 2 (Eq. 3.6 must not credit it)."""
    _, dyn = make("spatial_1x3x3", search_space=3)
    assert dyn.channel_fractions == [1.0, 0.5, 0.25]
    assert dyn.frame_fractions(8) == [1.0, 0.5, 0.25]
    assert dyn.frame_fractions(1) == [1.0, 1.0, 1.0]
    assert dyn.frame_fractions(3) == [1.0, 2 / 3, 1 / 3]
    dyn.train()
    x = torch.randn(2, 8, 1, 10, 10)  # one output frame
    dyn.dynamic_forward(x, torch.tensor([[0.0, 0.9, 0.0]] * 2), torch.tensor([[0.8, 0.0, 0.0]] * 2), hard=False)
    assert dyn.last_fraction.tolist() == pytest.approx([1.0, 1.0])


def test_inference_follows_cheap_op_changes_made_through_data():
    """No stale tables: an EMA-style ``p.data`` update of Φ^t is seen by the next forward."""
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.eval()
    x = torch.randn(1, 8, 8, 10, 10)
    v_t, v_c = torch.tensor([[0.0, 0.5]]), torch.tensor([[0.7, 0.0]])
    with torch.no_grad():
        dyn.dynamic_forward(x, v_t, v_c, hard=True)
        dyn.cheap_temporal[0].scale.data.mul_(3.0)
        hard = dyn.dynamic_forward(x, v_t, v_c, hard=True)
    torch.testing.assert_close(hard, dyn.dynamic_forward(x, v_t, v_c, hard=False), atol=1e-5, rtol=0)


def test_training_mode_reports_the_full_soft_path_cost():
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.train()
    with CostMeter(dyn) as meter:
        dyn(torch.randn(2, 8, 8, 10, 10))
    # full conv + Φ^c (4 ch, 8 frames) + Φ^t (8 ch, 4 computed frames) + the gate's two FCs
    expected = FULL + 4 * 8 * HW + 8 * 4 * HW + 8 * 8 * 32 + 32 * 4
    assert meter.per_sample_macs.tolist() == [expected, expected]


def test_from_conv_refuses_non_zero_padding_modes():
    conv = nn.Conv3d(4, 4, 3, padding=1, padding_mode="replicate")
    with pytest.raises(ValueError, match="padding_mode"):
        DynamicConv3d.from_conv(conv, gate_frames=4)


def test_threshold_drops_small_weights_and_keeps_the_cheapest():
    v = torch.tensor([[0.2, 0.5, 0.1], [0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.1, 0.2, 0.0]])
    out = dynconv.threshold_weights(v, 0.3)
    # row 0: 0.2 dropped, 0.1 kept (the cheapest non-zero choice)
    assert torch.equal(out[0], torch.tensor([0.0, 0.5, 0.1]))
    assert torch.equal(out[1], v[1])  # all zero stays zero
    assert torch.equal(out[2], v[2])  # the only choice is kept
    assert torch.equal(out[3], torch.tensor([0.0, 0.2, 0.0]))  # both under: the cheapest is kept
    # the mix is normalised afterwards, so the layer keeps its gain
    torch.testing.assert_close(dynconv.mixing_weights(out)[0], torch.tensor([0.0, 5 / 6, 1 / 6]))
    assert torch.equal(dynconv.threshold_weights(v, 0.0), v)  # 0 = the thesis' rule


def test_gate_threshold_makes_the_hard_path_run_cheaper_choices():
    _, dyn = make("spatial_1x3x3", search_space=3)
    dyn.eval()
    x = torch.randn(4, 8, 8, 16, 16)
    v_t = torch.tensor([[0.2, 0.6, 0.05]]).expand(4, -1)
    v_c = torch.tensor([[0.1, 0.3, 0.4]]).expand(4, -1)
    dyn.gate = _Fixed(v_t, v_c)
    with torch.no_grad(), CostMeter(dyn) as plain:
        dyn(x)
    dyn.gate_threshold = 0.25
    with torch.no_grad(), CostMeter(dyn) as thresholded:
        y = dyn(x)
    assert thresholded.per_sample_macs.max() < plain.per_sample_macs.min()
    # the thresholded output is the hard path of the thresholded weights
    ref = dyn.dynamic_forward(x, dynconv.threshold_weights(v_t, 0.25), dynconv.threshold_weights(v_c, 0.25), hard=True)
    assert torch.allclose(y, ref, atol=1e-6)
    dyn.train()  # training ignores the knob: the soft path sees the gate's weights
    trained = dyn(x)
    dyn.gate_threshold = 0.0
    assert torch.equal(dyn(x), trained)
    with pytest.raises(ValueError, match="gate_threshold"):
        DynamicConv3d(8, 8, 3, gate_threshold=1.0)


class _Fixed(nn.Module):
    def __init__(self, v_t, v_c):
        super().__init__()
        self.v = (v_t, v_c)

    def forward(self, x):
        return self.v


# ---- issue 19: the mechanism's causes, one test each -------------------------------------------

def test_mixing_weights_are_normalised_and_never_all_zero():
    v = torch.tensor([[0.6, 0.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.3, 0.3]])
    w = dynconv.mixing_weights(v)
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.5]]))
    assert torch.equal(w > 0, torch.tensor([[True, True, False], [False, False, True], [False, True, True]]))


@pytest.mark.parametrize("name", list(CONVS))
def test_no_sample_is_ever_silent(name):
    """Cause 1: a gate that outputs 0 everywhere still runs the cheapest choice, in training and
    inference, and is charged for it."""
    _, dyn = make(name, search_space=3)
    with torch.no_grad():
        dyn.gate.fc2.bias.fill_(-5.0)  # every V = 0
    x = torch.randn(3, 8, 8, 10, 10)
    for training in (True, False):
        dyn.train(training)
        with torch.no_grad(), CostMeter(dyn) as meter:
            y = dyn(x)
        assert bool((dyn.last_v_t[:, -1] == 1).all()) and bool((dyn.last_v_c[:, -1] == 1).all())
        assert all(torch.count_nonzero(y[i]) > 0.5 * y[i].numel() for i in range(3))
        assert bool((meter.per_sample_macs > 0).all())
    # the charged cost is the cheapest sub-convolution's (r = 1/4, R = 4) plus its cheap operations
    cheapest = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, -1)
    with torch.no_grad(), CostMeter(dyn) as forced:
        dyn.dynamic_forward(x, cheapest, cheapest, hard=True)
    torch.testing.assert_close(meter.per_sample_macs - forced.per_sample_macs,
                               torch.full((3,), float(8 * 8 * 32 + 32 * 6), dtype=torch.float64))  # + the gate


def test_efficiency_surrogate_moves_weight_to_the_cheap_choice():
    """Cause 2: descending the Eq. 3.6 surrogate over the gate ends at "the cheapest choice alone",
    not at "every gate 0" (which the surrogate over raw V, Σ f_i V[i], would reach)."""
    torch.manual_seed(0)
    gate = SoftModulationGate(in_channels=4, frames=2, hidden=8, num_temporal=1, num_channel=3).train()
    x = torch.randn(16, 4, 2, 3, 3)
    factors = [1.0, 0.5, 0.25]
    opt = torch.optim.SGD([gate.fc2.bias], lr=1.0)
    start = dynconv.mixing_weights(gate(x)[1]).detach()
    assert bool((start[:, 0] == 1).all())  # starts on "compute all" alone
    for _ in range(300):
        opt.zero_grad()
        dynconv.soft_fraction(dynconv.mixing_weights(gate(x)[1]), factors).mean().backward()
        opt.step()
    _, v_c = gate(x)
    assert bool((v_c[:, 2] > 0).all()), "the cheap choice must be on, not every gate off"
    assert bool((dynconv.executed_index(v_c) == 2).all())
    assert bool((v_c[:, 0] == 0).all())


def test_gate_starts_on_compute_all_alone_and_off_choices_still_learn():
    """Cause 3/4: every cheaper choice starts at exactly 0 for any input (so the converted model
    is the static one), and the straight-through max still gives their logits a gradient."""
    torch.manual_seed(1)
    gate = SoftModulationGate(in_channels=6, frames=4, hidden=32, num_temporal=3, num_channel=3).train()
    x = torch.randn(64, 6, 4, 5, 5) * 50  # saturates the hidden tanh: the worst case
    v_t, v_c = gate(x)
    for v in (v_t, v_c):
        assert bool((v[:, 0] > 0).all()) and bool((v[:, 1:] == 0).all())
    (v_t[:, 1:].sum() + v_c[:, 1:].sum()).backward()
    grad = gate.fc2.bias.grad
    assert bool((grad[[1, 2, 4, 5]] > 0).all())  # the off choices' logits are pushed up by the loss


def test_forced_all_skips_every_mixing_multiply(monkeypatch):
    """A forced "all" in inference is the static conv's output tensor itself: no copy, no scale."""
    _, dyn = make("spatial_1x3x3", search_space=2)
    dyn.eval()
    dyn.force("all")
    produced = []
    real = dynconv.frame_conv3d
    monkeypatch.setattr(dynconv, "frame_conv3d", lambda *a: produced.append(real(*a)) or produced[-1])
    with torch.no_grad():
        y = dyn(torch.randn(2, 8, 8, 10, 10))
    assert len(produced) == 1 and y.data_ptr() == produced[0].data_ptr()


@pytest.mark.parametrize("frames", [7, 8])
def test_temporal_cheap_op_is_charged_for_the_kept_frames_only(frames):
    """Cause 5: with R = 4 on T_o = 7, frames 0 and 4 are computed and 5 are generated (not 6)."""
    _, dyn = make("pointwise", search_space=3)
    dyn.eval()
    x = torch.randn(1, 8, frames, 4, 4)
    with torch.no_grad(), CostMeter(dyn) as meter:
        dyn.dynamic_forward(x, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]), hard=True)
    computed = -(-frames // 4)
    expected = 8 * 8 * computed * 16 + 8 * (frames - computed) * 16  # conv on 2 frames + Φ^t on the rest
    assert meter.per_sample_macs.item() == expected


def test_exploration_replaces_a_share_of_decisions_by_uniform_one_hot_choices():
    torch.manual_seed(0)
    v = torch.tensor([[0.7, 0.0, 0.0]]).expand(4000, -1)
    out = dynconv.explore_choices(v, 0.5)
    replaced = (out != v).any(1)
    assert 0.46 < replaced.float().mean() < 0.54  # a drawn choice has weight 1, the gate's 0.7
    assert torch.equal(out[replaced].sum(1), torch.ones(int(replaced.sum())))  # one-hot, weight 1
    counts = out[replaced].argmax(1).bincount(minlength=3).float()
    assert counts.min() / counts.max() > 0.85  # uniform over the choices
    assert torch.equal(dynconv.explore_choices(v, 0.0), v)


def test_exploration_acts_in_training_only():
    _, dyn = make("spatial_1x3x3", search_space=3)
    dyn.explore = 1.0
    x = torch.randn(64, 8, 8, 10, 10)
    dyn.train()
    dyn(x)
    assert (dyn.last_v_c[:, 1:] > 0).any()  # the gate alone starts on "compute all"
    dyn.eval()
    with torch.no_grad():
        dyn(x)
    assert bool((dyn.last_v_c[:, 0] == 1).all())


def test_fraction_tables_made_during_evaluation_serve_training() -> None:
    """The per-choice fraction tables are built once per (values, dtype, device) and reused;
    one first built under ``torch.inference_mode`` (an evaluation) must still take part in a
    training step's autograd."""
    factors = (1.0, 0.5, 0.3125)  # a set no other test builds first
    with torch.inference_mode():
        dynconv.soft_fraction(torch.rand(2, 3), factors)
    w = torch.rand(4, 3, requires_grad=True)
    dynconv.soft_fraction(w, factors).sum().backward()
    assert torch.allclose(w.grad, torch.tensor(factors).expand(4, 3))
    assert executed_fraction(torch.tensor([[0.0, 0.2, 0.1]]), factors).tolist() == [0.5]
