"""Tests of dynvid.metrics.speed's interleaved comparison: rounds alternate the models, a
model's setup context wraps each of its measurements, and the median statistic."""

import contextlib

import pytest
import torch
from torch import nn

from dynvid.metrics import speed
from dynvid.metrics.speed import compare_throughput


class Logged(nn.Module):
    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_rounds_interleave_and_setup_wraps_each_measurement():
    log: list = []
    shared = Logged("dyn", log)

    @contextlib.contextmanager
    def forced(tag):
        log.append(f"enter {tag}")
        yield
        log.append(f"exit {tag}")

    models = {"static": Logged("static", log), "a": shared, "b": shared}
    compare_throughput(models, torch.zeros(2, 1), rounds=2, warmup=0, min_time_s=0.0,
                       setup={"a": lambda: forced("a"), "b": lambda: forced("b")})
    one_round = ["static", "static", "enter a", "dyn", "dyn", "exit a", "enter b", "dyn", "dyn", "exit b"]
    assert log == one_round * 2


def test_median_and_best_of_the_rounds(monkeypatch):
    values = iter([5.0, 1.0, 3.0, 100.0, 2.0, 4.0])  # (static, other) in each of three rounds
    monkeypatch.setattr(speed, "measure_throughput", lambda *a, **k: next(values))
    out = compare_throughput({"static": nn.Identity(), "other": nn.Identity()}, torch.zeros(1, 1), rounds=3,
                             statistic="median")
    assert out == {"static": 3.0, "other": 4.0}  # a spike (100) moves the median not at all
    values = iter([5.0, 1.0, 3.0, 100.0, 2.0, 4.0])
    assert compare_throughput({"static": nn.Identity(), "other": nn.Identity()}, torch.zeros(1, 1),
                              rounds=3) == {"static": 5.0, "other": 100.0}  # default: best, as before
    with pytest.raises(ValueError, match="statistic"):
        compare_throughput({"m": nn.Identity()}, torch.zeros(1, 1), statistic="mean")
