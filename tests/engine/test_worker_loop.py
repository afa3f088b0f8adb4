"""The epoch loop's bookkeeping (``dynvid.engine.worker``): logs that stay on the device, the
data-wait / step split of the progress line, and the deferred non-finite loss check."""

from __future__ import annotations

import time

import pytest
import torch

from dynvid.engine.worker import _host_means, _StepMeter


def test_host_means_reads_tensor_and_float_sums_alike() -> None:
    sums = {"loss": torch.tensor(6.0), "acc": 3.0, "tau": torch.tensor(1.5, dtype=torch.float64)}
    means = _host_means(sums, 3)
    assert list(means) == ["loss", "acc", "tau"]  # the Task's order, for the progress line
    assert means == pytest.approx({"loss": 2.0, "acc": 1.0, "tau": 0.5})
    assert all(type(v) is float for v in means.values())


def test_host_means_reads_all_tensors_in_one_transfer(monkeypatch) -> None:
    """One host read per log line, however many tensor logs a Task returns (on CUDA each read
    is a synchronisation)."""
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or original(self))
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("read per key"))
    _host_means({f"k{i}": torch.tensor(float(i)) for i in range(5)}, 1)
    assert reads == [torch.Size([5])]


def test_nonfinite_loss_stops_the_run_at_its_log_window() -> None:
    meter = _StepMeter(time.perf_counter())
    for _ in range(3):
        meter.check_loss(torch.tensor(1.0))
    meter.raise_if_nonfinite(epoch=0, step=2)  # finite: nothing raised, the window moves on
    meter.check_loss(torch.tensor(2.0))
    meter.check_loss(torch.tensor(float("nan")))
    meter.check_loss(torch.tensor(float("inf")))
    with pytest.raises(FloatingPointError, match=r"2 of steps 4–6 of epoch 2"):
        meter.raise_if_nonfinite(epoch=1, step=5)


def test_step_meter_splits_wall_time_into_data_wait_and_step(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # the worker's clock, driven here
    meter = _StepMeter(clock[0])
    for wait, step in ((0.050, 0.020), (0.010, 0.040)):
        clock[0] += wait  # blocked on the loader
        meter.batch_ready()
        clock[0] += step  # forward, backward, optimizer
        meter.step_done()
    assert meter.waited == pytest.approx(0.060)
    assert meter.split(2) == "data 30 ms step 30 ms"
    clock[0] += 0.100  # a third batch waited for, its step not done: the wait counts, the rest is step
    meter.batch_ready()
    assert meter.split(3) == "data 53 ms step 20 ms"
