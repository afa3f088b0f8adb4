"""Looking Fast and Slow's latency runs (Sec. 3.5): the summary over video runs, the compiled
paths against the eager detector, the persistent f0 worker, and frames paced at a camera's
interval. No assertion here is about how fast anything is."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from dynvid.detection.ssdlite import postprocess
from dynvid.methods.lfs.latency import F0Worker, LatencyPaths, latency_summary, run_async, run_sync
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, fixed_schedule


def small_detector() -> InterleavedDetector:
    torch.manual_seed(0)
    m = InterleavedDetector(3, f0_width=0.5, f1_width=0.35, f0_size=64, f1_size=32, memory_input=16,
                            state_channels=16, groups=2, num_levels=2)
    with torch.no_grad():  # non-trivial BatchNorm statistics: folding them is checked too
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


# ---- the summary ----------------------------------------------------------------------------

def test_summary_leaves_out_every_runs_first_frame():
    runs = [[1.0, 0.010, 0.020], [2.0, 0.030, 0.040]]  # each run's first frame waited for f0
    s = latency_summary(runs)
    assert s["worst_ms"] == pytest.approx(40.0)  # not 2000: run 2's first frame is out too
    assert s["amortized_ms"] == pytest.approx(25.0)
    assert s["p50_ms"] == pytest.approx(25.0)
    assert s["frames"] == 4 and s["runs"] == 2
    assert s["p95_ms"] <= s["p99_ms"] <= s["worst_ms"]


def test_summary_tails_come_from_all_runs():
    runs = [[0.5] + [0.001] * 99 for _ in range(9)] + [[0.5] + [0.001] * 98 + [0.100]]
    s = latency_summary(runs)
    assert s["frames"] == 990
    assert s["worst_ms"] == pytest.approx(100.0)
    assert s["p99_ms"] == pytest.approx(1.0)  # one slow frame in 990 is beyond the 99th percentile


def test_summary_refuses_a_flat_list_and_empty_runs():
    with pytest.raises(TypeError, match="list of runs"):
        latency_summary([0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="of type tuple"):  # run_async's (latencies, f0 runs), not a run
        latency_summary([([0.1, 0.2], 3)])
    with pytest.raises(ValueError, match="no frames left"):
        latency_summary([[0.1], [0.2]])


# ---- the compiled paths -----------------------------------------------------------------------

@pytest.mark.parametrize("script", [True, False])
def test_sync_detections_equal_the_detectors_own_steps(script):
    m = small_detector()
    with torch.no_grad():  # a fitted calibration, different per extractor: each frame gets its own
        m.score_calibration.copy_(torch.tensor([[[1.5, 0.8, 1.0], [-0.5, 0.2, 0.0]],
                                                [[0.7, 1.2, 2.0], [0.9, -0.3, 0.4]]]))
    frames = torch.rand(7, 3, 64, 64)
    tau = 2
    paths = LatencyPaths(m, frames[:1], script=script)
    got: list = []
    real_detect = paths.detect
    paths.detect = lambda out, extractor: got.append(real_detect(out, extractor)[0]) or got[-1]
    lat = run_sync(paths, frames, tau)
    assert len(lat) == 7 and all(x > 0 for x in lat)
    state = None
    with torch.no_grad():
        for t, a in enumerate(fixed_schedule(7, tau).tolist()):
            cls, box, anchors, state, _ = m.step(frames[t:t + 1], a, state)
            want = m.calibrate_detections(postprocess(cls, box, anchors)[0], a)
            assert torch.allclose(got[t]["scores"], want["scores"], atol=1e-4)
            assert torch.allclose(got[t]["boxes"], want["boxes"], atol=1e-3)


def test_traced_pieces_equal_the_eager_ones():
    m = small_detector()
    x = torch.rand(1, 3, 64, 64)
    traced, eager = LatencyPaths(m, x, script=True), LatencyPaths(m, x, script=False)
    assert isinstance(traced.f0, torch.jit.ScriptModule) and not isinstance(eager.f0, torch.jit.ScriptModule)
    c, h = (torch.randn_like(s) for s in traced.zero_state)
    y = torch.rand(1, 3, 64, 64)  # another frame than the one traced
    with torch.no_grad():
        for name in ("f0", "f1"):
            for a, b in zip(getattr(traced, name)(y, c, h), getattr(eager, name)(y, c, h)):
                assert torch.allclose(a, b, atol=1e-4)


def test_frames_of_another_size_are_refused():
    m = small_detector()
    with pytest.raises(ValueError, match="f0's size 64"):
        LatencyPaths(m, torch.rand(1, 3, 48, 48))


# ---- the f0 worker and async mode ---------------------------------------------------------------

class _SlowPaths:
    """Stand-in paths whose f0 blocks until released and whose f1 takes ``f1_s`` seconds."""

    def __init__(self, f1_s: float = 0.0) -> None:
        self.zero_state = (torch.zeros(1), torch.zeros(1))
        self.release = threading.Event()
        self.f0_calls = 0
        self.f1_s = f1_s
        self.f1_states: list[float] = []

    def f0(self, frame, c, h):
        self.f0_calls += 1
        self.release.wait(5)
        return frame, c + 1, h + 1

    def f1(self, frame, c, h):
        self.f1_states.append(float(c))
        if self.f1_s:
            time.sleep(self.f1_s)
        return frame, c, h

    def detect(self, out, extractor):
        return []


def test_worker_skips_launches_while_busy_and_publishes_when_done():
    paths = _SlowPaths()
    with F0Worker(paths) as worker:
        first = worker.submit(torch.zeros(1), paths.zero_state)
        second = worker.submit(torch.zeros(1), paths.zero_state)  # f0 still running
        assert first and not second
        assert float(worker.latest()[0]) == 0.0  # not published yet
        paths.release.set()
        worker.wait()
        assert float(worker.latest()[0]) == 1.0 and worker.done == 1
        assert worker.submit(torch.zeros(1), worker.latest())  # idle again: taken
        worker.wait()
        assert float(worker.latest()[0]) == 2.0
    assert not worker._thread.is_alive()  # one thread for all runs, stopped on exit
    assert paths.f0_calls == 2
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(torch.zeros(1), paths.zero_state)
    with F0Worker(paths) as other, pytest.raises(ValueError, match="other paths"):
        run_async(_SlowPaths(), torch.zeros(2, 1, 1, 1), tau=1, worker=other)


def test_worker_errors_reach_the_caller():
    class Broken(_SlowPaths):
        def f0(self, frame, c, h):
            raise RuntimeError("f0 exploded")

    with F0Worker(Broken()) as worker:
        worker.submit(torch.zeros(1), (torch.zeros(1), torch.zeros(1)))
        with pytest.raises(RuntimeError, match="f0 worker failed"):
            worker.wait()


def test_async_frame_zero_waits_for_f0_and_later_frames_do_not():
    paths = _SlowPaths()
    paths.release.set()  # f0 returns at once
    lat, done = run_async(paths, torch.zeros(5, 1, 1, 1), tau=10)
    assert len(lat) == 5 and done == 1
    assert paths.f1_states == [1.0] * 5  # frame 0's f1 read the state of frame 0's f0 run


def test_async_with_a_real_detector_uses_one_worker_across_videos():
    m = small_detector()
    frames = torch.rand(6, 3, 64, 64)
    paths = LatencyPaths(m, frames[:1])
    with F0Worker(paths) as worker:
        thread = worker._thread
        for _ in range(2):
            lat, done = run_async(paths, frames, tau=2, worker=worker)
            assert len(lat) == 6 and 1 <= done <= 2  # f0 due on frames 0 and 3; frame 0's always runs
        assert worker._thread is thread and thread.is_alive()


def test_async_detections_carry_f1s_calibration_and_sync_the_schedules():
    """Async detects every frame from f1's output (Sec. 3.5), so each frame's scores take f1's
    calibration; sync takes the calibration of the extractor its schedule ran."""
    m = small_detector()
    frames = torch.rand(6, 3, 64, 64)
    paths = LatencyPaths(m, frames[:1])
    seen: list = []
    real_detect = paths.detect
    paths.detect = lambda out, extractor: seen.append(extractor) or real_detect(out, extractor)
    run_async(paths, frames, tau=2)
    assert seen == [F1] * 6
    seen.clear()
    run_sync(paths, frames, tau=2)
    assert seen == fixed_schedule(6, 2).tolist()  # what detect does with it: the sync test above


def test_pacing_counts_the_wait_for_the_previous_frame():
    """Frames every 10 ms; frame 0 runs the (instant) f0, the others f1, which takes ≥ 30 ms:
    frame t ≥ 1 cannot finish before 10 + 30t ms and arrived at 10t ms, so its latency is at
    least 20t + 10 ms, the wait for the frames before it included (sleep never returns early)."""
    paths = _SlowPaths(f1_s=0.030)
    paths.release.set()
    lat = run_sync(paths, torch.zeros(5, 1, 1, 1), tau=100, fps=100.0)
    for t in range(1, 5):
        assert lat[t] >= (20 * t + 10) / 1000 - 1e-3
    assert lat[4] > 0.080  # without the queueing it would be ~30 ms
    with pytest.raises(ValueError, match="fps"):
        run_sync(paths, torch.zeros(2, 1, 1, 1), tau=1, fps=0.0)
