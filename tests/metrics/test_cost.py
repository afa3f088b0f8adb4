"""Tests of dynvid.metrics.cost: formulas, the hook meter, the dynamic protocol, aggregation.

The independent reference for static networks is fvcore's ``FlopCountAnalysis``, which
counts one MAC as one "flop" for conv / linear / matmul. Its norm, pooling, upsample and
grid-sample handles are replaced by a handle that counts nothing (our meter counts those
at zero by design; fvcore's ``set_op_handle(name, None)`` does not override its built-in
handles), and the test asserts that what remains is only conv / linear / matmul-family counts, so the two
totals measure the same thing.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dynvid.backbones import r2plus1d_18
from dynvid.metrics.cost import (
    CostAccumulator,
    CostMeter,
    bops,
    conv_macs,
    gru_cell_macs,
    linear_macs,
    lstm_cell_macs,
    metering,
    model_cost,
    record_cost,
)

fvcore_nn = pytest.importorskip("fvcore.nn")

# fvcore handles for ops our meter counts at zero.
_FVCORE_ZERO_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)
# fvcore op kinds that are MACs of weight-carrying layers.
_FVCORE_MAC_KINDS = {"conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum"}
# ops fvcore has no handle for that are parameter-free (pooling, activations, reductions).
_PARAMETER_FREE_PREFIXES = (
    "aten::adaptive_avg_pool",
    "aten::add",
    "aten::gelu",
    "aten::hardtanh",
    "aten::mean",
    "aten::relu",
)


def _count_nothing(inputs: list, outputs: list) -> Counter:
    return Counter()


def fvcore_analysis(model: nn.Module, x: torch.Tensor):
    analysis = fvcore_nn.FlopCountAnalysis(model, x)
    analysis.set_op_handle(**{op: _count_nothing for op in _FVCORE_ZERO_OPS})
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def fvcore_macs_per_sample(model: nn.Module, x: torch.Tensor) -> float:
    analysis = fvcore_analysis(model, x)
    kinds = set(analysis.by_operator())
    assert kinds <= _FVCORE_MAC_KINDS, f"fvcore counted non-MAC ops: {kinds - _FVCORE_MAC_KINDS}"
    unsupported = set(analysis.unsupported_ops())
    assert all(op.startswith(_PARAMETER_FREE_PREFIXES) for op in unsupported), unsupported
    return analysis.total() / x.shape[0]


def meter_macs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), CostMeter(model) as meter:
        model(x)
    return meter.per_sample_macs


# ---------------------------------------------------------------------------------
# Formulas, hand-checked
# ---------------------------------------------------------------------------------


def test_conv_macs_hand_checked() -> None:
    # 3x3 conv, 16 -> 32 channels, 8x8 output: 64 positions * 32 * 16 * 9
    assert conv_macs(16, 32, (3, 3), (8, 8)) == 294_912
    # depthwise 3x3x3 on 8 channels, 4x4x4 output: 64 * 8 * 1 * 27
    assert conv_macs(8, 8, (3, 3, 3), (4, 4, 4), groups=8) == 13_824
    # grouped 1D conv: 10 outputs * 6 channels * (4/2) * 5
    assert conv_macs(4, 6, (5,), (10,), groups=2) == 600
    # an int kernel is repeated over the output dims, as in nn.Conv2d
    assert conv_macs(16, 32, 3, (8, 8)) == 294_912
    # pointwise 3D: 2*4*4 positions * 5 * 3
    assert conv_macs(3, 5, (1, 1, 1), (2, 4, 4)) == 480


def test_conv_macs_rejects_bad_groups_and_dims() -> None:
    with pytest.raises(ValueError, match="groups"):
        conv_macs(6, 8, (3, 3), (4, 4), groups=4)
    with pytest.raises(ValueError, match="kernel_size has 2 dims"):
        conv_macs(6, 8, (3, 3), (4, 4, 4))


def test_linear_and_cell_formulas_hand_checked() -> None:
    assert linear_macs(512, 400) == 204_800
    assert linear_macs(10, 20, batch_elems=7) == 1_400
    assert lstm_cell_macs(10, 20) == 4 * 30 * 20 == 2_400
    assert gru_cell_macs(10, 20) == 3 * 30 * 20 == 1_800
    # projection: gates use the 5-dim state, plus a 20x5 projection
    assert lstm_cell_macs(10, 20, proj_size=5) == 4 * 15 * 20 + 100 == 1_300


def test_bops_formula() -> None:
    assert bops(1_000) == 1_024_000  # full precision: 32 x 32
    assert bops(1_000, 4, 8) == 32_000
    assert torch.equal(bops(torch.tensor([1.0, 2.0]), 2, torch.tensor([4.0, 8.0])), torch.tensor([8.0, 32.0]))


# ---------------------------------------------------------------------------------
# The meter vs fvcore on static networks
# ---------------------------------------------------------------------------------


def _conv3d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(4, 8, (3, 3, 3), stride=(1, 2, 2), padding=(1, 2, 2), dilation=(1, 2, 2)),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 16, 3, stride=2, padding=1, groups=4, bias=False),
        nn.Conv3d(16, 16, (3, 1, 1), padding=(2, 0, 0), dilation=(2, 1, 1), groups=16),
        nn.Conv3d(16, 12, 1),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


def _conv2d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise
        nn.Conv2d(16, 24, 1, bias=False),
        nn.Conv2d(24, 24, 3, stride=2, padding=3, dilation=3, groups=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )


def _conv1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(6, 12, 7, stride=3, padding=2),
        nn.ReLU(),
        nn.Conv1d(12, 12, 3, dilation=2, groups=3, padding=2),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(12, 4),
    )


class _TokenMLP(nn.Module):
    """An MLP over a (B, T, F) sequence: Linear sees leading dims."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(1)


STATIC_NETS = {
    "conv3d": (_conv3d_net, (2, 4, 6, 17, 19)),
    "conv2d": (_conv2d_net, (2, 3, 33, 31)),
    "conv1d": (_conv1d_net, (2, 6, 50)),
    "mlp": (lambda: nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 3)), (2, 20)),
    "token_mlp": (_TokenMLP, (2, 9, 32)),
    "tiny_r2plus1d": (lambda: r2plus1d_18(num_classes=11, width_mult=0.25), (2, 3, 8, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(STATIC_NETS))
def test_meter_matches_fvcore_on_static_nets(name: str) -> None:
    build, shape = STATIC_NETS[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    ours = meter_macs(model, x)
    reference = fvcore_macs_per_sample(model, x)
    assert ours.shape == (shape[0],)
    assert reference > 0
    assert torch.allclose(ours, torch.full_like(ours, reference), rtol=0.01), (ours, reference)


def test_meter_matches_fvcore_per_module() -> None:
    torch.manual_seed(0)
    model = _conv3d_net().eval()
    x = torch.randn(2, 4, 6, 17, 19)
    with torch.no_grad(), CostMeter(model) as meter:
        model(x)
    reference = fvcore_analysis(model, x).by_module()
    assert set(meter.by_module) == {"0", "3", "4", "5", "8"}
    for name, per_sample in meter.by_module.items():
        assert per_sample.tolist() == [reference[name] / 2] * 2, name


def test_conv_cost_follows_actual_output_shape() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(3, 4, 15, 9)  # output 8 x 5
    assert meter_macs(conv, x).tolist() == [8 * 5 * 6 * 4 * 9] * 3


def test_unbatched_conv_counts_one_sample() -> None:
    conv = nn.Conv1d(2, 3, 3)
    with CostMeter(conv, batch_size=1) as meter:
        conv(torch.randn(2, 10))  # (C, L) input, output length 8
    assert meter.per_sample_macs.tolist() == [8 * 3 * 2 * 3]


# ---------------------------------------------------------------------------------
# Recurrent layers
# ---------------------------------------------------------------------------------


def _weight_matrix_elements(module: nn.Module) -> int:
    # One step of every layer/direction multiplies each weight matrix element once.
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")
@pytest.mark.parametrize(
    "module",
    [
        nn.LSTM(10, 20),
        nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True),
        nn.LSTM(10, 20, num_layers=2, proj_size=7),
        nn.GRU(10, 20, num_layers=3, bidirectional=True),
        nn.LSTMCell(10, 20),
        nn.GRUCell(10, 20),
    ],
    ids=["lstm", "lstm_2l_bi", "lstm_proj", "gru_3l_bi", "lstm_cell", "gru_cell"],
)
def test_recurrent_step_cost_equals_weight_matrix_elements(module: nn.Module) -> None:
    batch, steps = 3, 5
    if isinstance(module, (nn.LSTMCell, nn.GRUCell)):
        x, steps = torch.randn(batch, 10), 1
    elif module.batch_first:
        x = torch.randn(batch, steps, 10)
    else:
        x = torch.randn(steps, batch, 10)
    macs = meter_macs(module, x)
    assert macs.tolist() == [steps * _weight_matrix_elements(module)] * batch


def test_lstm_hand_checked_two_layers_bidirectional() -> None:
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    # per step: layer 0: 2 dirs * 4 * (10 + 20) * 20 = 4800; layer 1 (input 40): 2 * 4 * 60 * 20 = 9600
    assert meter_macs(lstm, torch.randn(5, 2, 10)).tolist() == [5 * 14_400] * 2


def test_gru_hand_checked() -> None:
    gru = nn.GRU(8, 16, batch_first=True)
    # 3 * (8 + 16) * 16 = 1152 per step, 7 steps
    assert meter_macs(gru, torch.randn(4, 7, 8)).tolist() == [8_064] * 4


def test_packed_sequence_counts_each_sample_its_own_length() -> None:
    gru = nn.GRU(8, 16, batch_first=True)
    x = torch.randn(3, 6, 8)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4]), batch_first=True, enforce_sorted=False)
    with CostMeter(gru) as meter:
        gru(packed)
    assert meter.per_sample_macs.tolist() == [2 * 1_152, 6 * 1_152, 4 * 1_152]


# ---------------------------------------------------------------------------------
# Per-sample dynamic cost: the counts_own_cost / record_cost protocol
# ---------------------------------------------------------------------------------

# conv 3 -> 4, 3x3, on 8x8 with padding: 64 * 4 * 3 * 9
_SKIP_CONV_MACS = 6_912
# head: Linear(4 * 8 * 8 -> 2)
_HEAD_MACS = 512


class SkipConv(nn.Module):
    """Toy dynamic layer: runs its conv only on the samples whose gate is on."""

    counts_own_cost = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], 4, *x.shape[2:])
        idx = keep.nonzero().flatten()
        if idx.numel():
            out[idx] = self.conv(x[idx])
        record_cost(self, keep.double() * _SKIP_CONV_MACS)
        return out


class ToyDynamicNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.skip = SkipConv()
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.head(self.skip(x, keep).flatten(1))


def test_dynamic_layer_records_per_sample_cost() -> None:
    model = ToyDynamicNet()
    keep = torch.tensor([True, False, True, False])
    with CostMeter(model) as meter:
        model(torch.randn(4, 3, 8, 8), keep)
    expected_skip = [_SKIP_CONV_MACS, 0, _SKIP_CONV_MACS, 0]
    assert meter.by_module["skip"].tolist() == expected_skip
    # the child conv is skipped by the hooks: no double counting
    assert "skip.conv" not in meter.by_module
    assert meter.by_module["head"].tolist() == [_HEAD_MACS] * 4
    assert meter.per_sample_macs.tolist() == [m + _HEAD_MACS for m in expected_skip]


def test_static_module_on_a_subset_of_the_batch_is_an_error() -> None:
    class SubsetNoProtocol(SkipConv):
        counts_own_cost = False

    model = SubsetNoProtocol()
    with pytest.raises(RuntimeError, match="counts_own_cost"), CostMeter(model):
        model(torch.randn(3, 3, 8, 8), torch.tensor([True, True, False]))


def test_record_cost_is_a_noop_without_a_meter() -> None:
    model = ToyDynamicNet()
    record_cost(model, 123)  # must not raise
    with CostMeter(model) as meter:
        pass
    assert meter.per_sample_macs.numel() == 0
    model(torch.randn(2, 3, 8, 8), torch.tensor([True, False]))  # after exit: nothing recorded
    assert meter.per_sample_macs.numel() == 0


def test_record_cost_scalar_and_bits() -> None:
    class Quantized(nn.Module):
        counts_own_cost = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            record_cost(self, 100, weight_bits=4, act_bits=8)  # every sample
            record_cost(self, torch.tensor([10.0, 20.0]), weight_bits=2, act_bits=torch.tensor([2.0, 4.0]))
            return x

    model = nn.Sequential(Quantized())
    with CostMeter(model) as meter:
        model(torch.zeros(2, 3))
    assert meter.per_sample_macs.tolist() == [110, 120]
    assert meter.per_sample_bops.tolist() == [100 * 32 + 10 * 4, 100 * 32 + 20 * 8]


def test_record_cost_wrong_batch_is_an_error() -> None:
    class Bad(nn.Module):
        counts_own_cost = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            record_cost(self, torch.ones(3))
            return x

    model = Bad()
    with pytest.raises(ValueError, match=r"expected \(2,\)"), CostMeter(model):
        model(torch.zeros(2, 5))


def test_nested_meters_both_see_record_cost() -> None:
    model = ToyDynamicNet()
    keep = torch.tensor([False, True])
    with CostMeter(model) as outer, CostMeter(model.skip) as inner:
        model(torch.randn(2, 3, 8, 8), keep)
    assert inner.per_sample_macs.tolist() == [0, _SKIP_CONV_MACS]
    assert outer.per_sample_macs.tolist() == [_HEAD_MACS, _SKIP_CONV_MACS + _HEAD_MACS]


# ---------------------------------------------------------------------------------
# Meter behaviour: bits, accumulation, reset, per-frame batches, uncounted modules
# ---------------------------------------------------------------------------------


def test_module_bit_attributes_drive_bops() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    model[1].weight_bits, model[1].act_bits = 4, 8
    with CostMeter(model) as meter:
        model(torch.zeros(3, 10))
    assert meter.per_sample_macs.tolist() == [200] * 3
    assert meter.by_module_bops["0"].tolist() == [100 * 32 * 32] * 3
    assert meter.per_sample_bops.tolist() == [100 * 1024 + 100 * 32] * 3


def test_forwards_accumulate_and_reset_clears() -> None:
    model = nn.Linear(4, 5)
    with CostMeter(model) as meter:
        model(torch.zeros(2, 4))
        model(torch.zeros(2, 4))  # e.g. a second view of the same clips
        assert meter.per_sample_macs.tolist() == [40, 40]
        meter.reset()
        model(torch.zeros(3, 4))
    assert meter.per_sample_macs.tolist() == [20, 20, 20]


def test_batch_size_change_without_reset_is_an_error() -> None:
    model = nn.Linear(4, 5)
    with pytest.raises(ValueError, match="reset"), CostMeter(model):
        model(torch.zeros(2, 4))
        model(torch.zeros(3, 4))


def test_per_frame_2d_net_shares_cost_over_samples() -> None:
    class PerFrame(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
            b, t = x.shape[:2]
            return self.conv(x.flatten(0, 1)).view(b, t, -1)

    model = PerFrame()
    macs = meter_macs(model, torch.zeros(2, 5, 3, 4, 4))
    assert macs.tolist() == [5 * 16 * 2 * 3] * 2


def test_time_major_rnn_root_infers_batch_from_dim_1() -> None:
    lstm = nn.LSTM(4, 4)
    macs = meter_macs(lstm, torch.zeros(9, 2, 4))
    assert macs.shape == (2,)


def test_uncounted_parametric_module_warns() -> None:
    class RawMatmul(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    model = nn.Sequential(nn.Linear(4, 4), RawMatmul(), nn.BatchNorm1d(4))
    with pytest.warns(UserWarning, match=r"\['1'\]"), CostMeter(model) as meter:
        model(torch.zeros(2, 4))
    assert meter.uncounted == {"1"}
    assert meter.per_sample_macs.tolist() == [16, 16]


# ---------------------------------------------------------------------------------
# Aggregation and convenience
# ---------------------------------------------------------------------------------


def test_accumulator_avg_min_max() -> None:
    acc = CostAccumulator()
    acc.update(torch.tensor([1e9, 3e9]))
    acc.update([2e9, 6e9])
    summary = acc.summary()
    assert summary["num_samples"] == 4
    assert summary["gflops_avg"] == pytest.approx(3.0)
    assert summary["gflops_min"] == pytest.approx(1.0)
    assert summary["gflops_max"] == pytest.approx(6.0)
    assert "gbops_avg" not in summary


def test_accumulator_bops_and_merge() -> None:
    a, b = CostAccumulator(), CostAccumulator()
    a.update([1e9], per_sample_bops=[4e9])
    b.update([3e9, 5e9], per_sample_bops=[2e9, 30e9])
    a.merge(b)
    summary = a.summary()
    assert summary["num_samples"] == 3
    assert summary["gflops_avg"] == pytest.approx(3.0)
    assert (summary["gbops_avg"], summary["gbops_min"], summary["gbops_max"]) == pytest.approx((12.0, 2.0, 30.0))


def test_accumulator_errors() -> None:
    with pytest.raises(ValueError, match="no samples"):
        CostAccumulator().summary()
    acc = CostAccumulator()
    acc.update([1.0])
    with pytest.raises(ValueError, match="every update"):
        acc.update([1.0], per_sample_bops=[2.0])
    with pytest.raises(ValueError, match="finite"):
        acc.update([-1.0])


def test_accumulator_takes_meter_output() -> None:
    model = ToyDynamicNet()
    acc = CostAccumulator()
    for keep in (torch.tensor([True, False]), torch.tensor([True, True])):
        with CostMeter(model) as meter:
            model(torch.randn(2, 3, 8, 8), keep)
        acc.update(meter.per_sample_macs, meter.per_sample_bops)
    summary = acc.summary()
    assert summary["gflops_min"] == pytest.approx(_HEAD_MACS / 1e9)
    assert summary["gflops_max"] == pytest.approx((_HEAD_MACS + _SKIP_CONV_MACS) / 1e9)
    assert summary["gflops_avg"] == pytest.approx((_HEAD_MACS + 0.75 * _SKIP_CONV_MACS) / 1e9)
    assert summary["gbops_avg"] == pytest.approx(summary["gflops_avg"] * 1024)


def test_model_cost_restores_modes_and_counts_params() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    model.train()
    model[1].eval()  # e.g. a frozen BN must stay frozen
    cost = model_cost(model, (3, 8, 8), batch_size=2)
    assert cost["macs"] == 36 * 8 * 3 * 9 + 288 * 10
    assert cost["gflops"] == pytest.approx(cost["macs"] / 1e9)
    assert cost["bops"] == cost["macs"] * 1024
    assert cost["params"] == (8 * 27 + 8) + 16 + (2880 + 10)
    assert [m.training for m in model] == [True, False, True, True]


def test_metering_is_true_only_inside_a_meter():
    model = nn.Linear(2, 2)
    assert not metering()
    with CostMeter(model):
        assert metering()
        with CostMeter(model):
            assert metering()
        assert metering()
    assert not metering()


def test_per_sample_costs_recorded_on_a_device_are_summed_there_and_read_once():
    """A dynamic layer's per-sample cost computed on a GPU is kept there until the totals are
    read (one copy per device), not copied to the host at every recording. Stood in for by
    ``meta`` here, where a copy to the host raises: recording must not try."""
    from dynvid.metrics.cost import CostMeter, record_cost

    layer = nn.Linear(2, 2)
    with CostMeter(layer, batch_size=3) as meter:
        for _ in range(4):
            record_cost(layer, torch.ones(3, dtype=torch.float64, device="meta"), act_bits=8)
    with pytest.raises(NotImplementedError):
        meter.per_sample_macs  # noqa: B018 - the one read, impossible on meta
    with CostMeter(layer, batch_size=3):  # a number's MACs with per-sample bits from the device
        record_cost(layer, 100.0, act_bits=torch.full((3,), 8.0, device="meta"))
    with CostMeter(layer, batch_size=3) as host:  # the same on the host: the totals add up
        for k in range(4):
            record_cost(layer, torch.tensor([1.0, 2.0, 3.0]) * k, act_bits=torch.tensor([8.0, 8.0, 4.0]))
    assert host.per_sample_macs.tolist() == [6.0, 12.0, 18.0]
    assert host.per_sample_bops.tolist() == [6.0 * 32 * 8, 12.0 * 32 * 8, 18.0 * 32 * 4]
