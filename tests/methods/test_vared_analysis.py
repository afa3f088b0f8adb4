"""VA-RED² analysis: policy statistics, figures, the comparison table."""

from __future__ import annotations

import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import VaredConfig
from dynvid.methods.vared import dynamic_layers, make_dynamic
from dynvid.methods.vared.analysis import comparison_table, plot_cost_histogram, plot_policy_heatmap, policy_stats

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
