"""VA-RED² analysis: policy statistics, figures, the comparison table."""

from __future__ import annotations

import math

import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import VaredConfig
from dynvid.methods.vared import dynamic_layers, make_dynamic
from dynvid.methods.vared.analysis import (
    choice_shares,
    comparison_table,
    plot_cost_histogram,
    plot_policy_heatmap,
    policy_stats,
    policy_table,
)

def tiny_r2plus1d() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("r2plus1d_18", width_mult=0.125, num_classes=5)


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
    # ⌈C/2⌉/C computed filters (odd C at this width: e.g. 29 of 57)
    half = torch.tensor([math.ceil(m.out_channels / 2) / m.out_channels for _, m in layers[::2]])
    assert torch.allclose(stats["channel"][:, ::2], half.expand(5, -1)) and bool((half > 0.5).any())
    # the computed share of output frames, ⌈T_o/2⌉/T_o: 1/2 on even T_o, 1 where T_o = 1 (no temporal choice)
    one_frame = [k for k, (_, m) in enumerate(layers) if m.temporal_factors == (1,)]
    assert one_frame == [13, 14, 15]  # layer4 after its temporal stride: 8 input frames are 1 there
    assert torch.all(stats["temporal"][:, 0:13:2] == 0.5) and torch.all(stats["temporal"][:, 14] == 1.0)
    assert torch.all(stats["temporal"][:, 1::2] == 1.0)  # the gate starts on "compute all"
    shares = choice_shares(stats)
    assert shares[0] == {"layer": layers[0][0], "temporal": {"R=1": 0.0, "R=2": 1.0}, "channel": {"r=1": 0.0, "r=0.5": 1.0}}
    assert shares[1]["channel"] == {"r=1": 1.0, "r=0.5": 0.0} and shares[15]["temporal"] == {"R=1": 1.0}
    table = policy_table(stats)
    assert "R=2" in table and "r=0.5" in table and len(table.splitlines()) >= 16
    assert stats["macs"].shape == (5,) and torch.all(stats["macs"] > 0)
    heat = plot_policy_heatmap(stats, ["a", "b", "c"], tmp_path / "heat.png")
    hist = plot_cost_histogram(stats["macs"] / 1e9, 0.01, tmp_path / "hist.png")
    for path in (heat, hist):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_comparison_table_reports_relative_gflops():
    rows = [{"model": "static", "gflops_avg": 2.0, "gflops_max": 2.0, "gflops_min": 2.0, "clips_per_s": 10.0,
             "clips_per_s_batched": 40.0, "clip_top1": 0.5, "video_top1": 0.6, "video_top5": 0.9},
            {"model": "dynamic", "gflops_avg": 1.5, "gflops_max": 1.8, "gflops_min": 1.0, "clips_per_s": 12.0,
             "clip_top1": 0.52, "video_top1": None, "video_top5": None}]
    table = comparison_table(rows)
    assert "1.500 (-25%)" in table and "1.000 (-50%)" in table and "–" in table
    assert "clips/s batched" in table and "40.0" in table  # a missing batched speed prints "–"
    assert comparison_table(rows, markdown=True).startswith("| model |")
