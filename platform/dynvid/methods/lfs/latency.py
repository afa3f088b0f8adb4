"""Per-frame latency of the interleaved detector, synchronous and asynchronous (Sec. 3.5, Fig. 5).

"When running an interleaved model synchronously, one feature extractor is run at each
timestep, so the maximum potential latency depends on f0 … In asynchronous mode, f1 is run
at each step and exclusively used to generate detections, while f0 continues to be run every
τ frames and updates the memory when it completes." (Sec. 3.5)

What is measured, and the choices made where the paper is silent:

- **Frames arrive at a camera's pace** (``fps``; None: back to back). A frame's latency runs
  from its arrival to its detections (post-processing included), so a frame that arrives
  while the previous one is still being processed waits, as in a real-time system. Between
  frames the CPU is idle, and that idle time is what lets async's f0 run beside f1.
- **The same compiled paths in both modes.** The model is cut into three pieces, each traced
  into one TorchScript module with its BatchNorms folded (``torch.jit.freeze``): f0 with the
  memory, f1 with the memory, and the SSDLite head. Sync and async run the same modules, so
  async's figures differ from sync's by the scheduling only. A TorchScript call runs the
  whole piece in C++ and releases the GIL for all of it, so f0 on the worker thread does not
  take the GIL from the frames being detected (eager f0 is ~150 Python-level op calls, each a
  GIL hand-over). ``script=False`` runs the same pieces eagerly.
- **One persistent f0 thread** (:class:`F0Worker`) for the whole run: starting a fresh
  thread per f0 run cost 1.5× f0's CPU time (issue 23). It takes a job only when idle: an f0
  launch due while the previous one still runs is skipped, as a real-time system would. On
  CUDA it runs on its own stream, waits for the frame's producer stream and publishes the
  state only once its kernels are done.
- **Summaries** (:func:`latency_summary`) leave out the first frame of every video run: it
  runs f0 in both modes and, in async mode, waits for it (there is no memory yet). Over
  several videos and repeats the tails (p95, p99, max) mean something; one 48-frame video has
  only ~5 f0 frames.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dynvid.detection.ssdlite import postprocess
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, fixed_schedule, unwrap

__all__ = ["F0Worker", "LatencyPaths", "latency_summary", "run_async", "run_sync"]


class _ExtractAndRemember(nn.Module):
    """Extractor ``i`` (frames at f0's size in; f1 resizes them), its projection and the
    memory: ``(frame, c, h) -> (memory output, c', h')``."""

    def __init__(self, m: InterleavedDetector, i: int) -> None:
        super().__init__()
        self.resize = m.sizes[i] if i == F1 else None
        self.extractor, self.projection, self.memory = m.extractors[i], m.projections[i], m.memory

    def forward(self, frame: torch.Tensor, c: torch.Tensor, h: torch.Tensor):
        if self.resize is not None:
            frame = F.interpolate(frame, size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                                  antialias=True)
        out, (c, h) = self.memory(self.projection(self.extractor(frame)), (c, h))
        return out, c, h


class _Head(nn.Module):
    def __init__(self, m: InterleavedDetector) -> None:
        super().__init__()
        self.head = m.head

    def forward(self, out: torch.Tensor):
        cls_logits, box_codes, _ = self.head(out)
        return cls_logits, box_codes


class LatencyPaths:
    """The detector's per-frame pieces for latency runs: ``f0(frame, c, h)``,
    ``f1(frame, c, h)`` (each ``-> (out, c', h')``), ``head(out) -> (cls, box)``, the anchors
    and the zero state, for one frame of ``example``'s shape (batch 1, f0's size).

    ``script``: trace each piece into TorchScript and freeze it (BatchNorm folded into the
    convolutions, weights as constants); the traced outputs are checked against the eager
    pieces on ``example`` (a mismatch raises). ``post``: ``postprocess`` settings. :meth:`detect`
    applies the detector's score calibration of the extractor that ran to the detections, as
    :func:`~.evaluation.run_videos` does."""

    def __init__(self, model: InterleavedDetector, example: torch.Tensor, script: bool = True,
                 post: dict | None = None) -> None:
        m = unwrap(model).eval()
        if example.dim() != 4 or example.shape[0] != 1:
            raise ValueError(f"example must be one frame (1, 3, H, W), got {tuple(example.shape)}")
        size = m.sizes[0]
        if tuple(example.shape[-2:]) != (size, size):
            raise ValueError(f"frames must arrive at f0's size {size}×{size}, got {tuple(example.shape[-2:])}")
        self.post = dict(post or {})
        self.f1_updates_memory = not m.skip_f1_update
        eager = {"f0": _ExtractAndRemember(m, F0).eval(), "f1": _ExtractAndRemember(m, F1).eval(),
                 "head": _Head(m).eval()}
        self.zero_state = m.memory.init_state(1, m.grid, m.grid, like=example)  # f0's grid is the memory's
        with torch.no_grad():
            out, c, h = eager["f0"](example, *self.zero_state)
            _, box_codes, sizes = m.head(out)
        self.anchors = m.anchors(sizes, box_codes.device)
        self.calibrate = m.calibrate_detections
        if script:
            with torch.no_grad(), warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.compile, which needs a compiler
                # toolchain and minutes to build; dynvid pins torch < 2.15, where it works
                warnings.simplefilter("ignore")
                traced = {
                    "f0": torch.jit.freeze(torch.jit.trace(eager["f0"], (example, c, h), check_trace=False)),
                    "f1": torch.jit.freeze(torch.jit.trace(eager["f1"], (example, c, h), check_trace=False)),
                    "head": torch.jit.freeze(torch.jit.trace(eager["head"], (out,), check_trace=False)),
                }
                # checked on the traced inputs and on another frame and state (a trace that baked
                # in a value would pass the first check only)
                other = (torch.rand_like(example), torch.randn_like(c), torch.randn_like(h))
                for name, args in (("f0", (example, c, h)), ("f1", (example, c, h)), ("head", (out,)),
                                   ("f0", other), ("f1", other)):
                    for a, b in zip(eager[name](*args), traced[name](*args)):
                        if not torch.allclose(a, b, rtol=1e-3, atol=1e-3):
                            raise RuntimeError(f"the traced {name} path differs from the eager one by "
                                               f"{(a - b).abs().max().item():.3g}")
            self.f0, self.f1, self.head = traced["f0"], traced["f1"], traced["head"]
        else:
            self.f0, self.f1, self.head = eager["f0"], eager["f1"], eager["head"]

    def detect(self, out: torch.Tensor, extractor: int) -> list[dict]:
        """Detections of the memory output ``out`` of a frame whose features came from
        ``extractor``, with that extractor's score calibration (as the evaluation applies it)."""
        cls_logits, box_codes = self.head(out)
        return [self.calibrate(d, extractor) for d in postprocess(cls_logits, box_codes, self.anchors, **self.post)]


def _wait_for(x: torch.Tensor) -> None:
    """Wait for the kernels this thread queued on ``x``'s CUDA device: a frame's latency ends
    when its detections exist, not when its kernels were queued (a no-op on the CPU). Only
    the current stream is waited for, so the f0 worker's stream is not charged to the frame."""
    if x.is_cuda:
        torch.cuda.current_stream(x.device).synchronize()


class _Clock:
    """Frame ``t`` arrives at ``start + t / fps``; :meth:`arrival` sleeps until then (None:
    frames arrive back to back, each when the previous one is done)."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number or None, got {fps}")
        self.interval = None if fps is None else 1.0 / fps
        self.start = time.perf_counter()

    def arrival(self, t: int) -> float:
        now = time.perf_counter()
        if self.interval is None:
            return now
        due = self.start + t * self.interval
        if due > now:
            time.sleep(due - now)
        return due


@torch.no_grad()
def run_sync(paths: LatencyPaths, frames: torch.Tensor, tau: int, fps: float | None = None) -> list[float]:
    """Per-frame latency (s) of the synchronous detector on one video ``(T, 3, S, S)``: f0 on
    frames ``0, τ+1, …`` (its memory state kept), f1 on the others (the state kept only if
    the detector's ``skip_f1_update`` is off), each frame's detections from the extractor
    that ran."""
    if frames.dim() != 4:
        raise ValueError(f"expected frames (T, 3, S, S), got {tuple(frames.shape)}")
    actions = fixed_schedule(len(frames), tau).tolist()
    state, out, clock = paths.zero_state, [], _Clock(fps)
    for t in range(len(frames)):
        arrived = clock.arrival(t)
        if actions[t] == F0:
            features, c, h = paths.f0(frames[t:t + 1], *state)
            state = (c, h)
        else:
            features, c, h = paths.f1(frames[t:t + 1], *state)
            if getattr(paths, "f1_updates_memory", False):  # the detector's skip_f1_update off
                state = (c, h)
        paths.detect(features, actions[t])
        _wait_for(frames)
        out.append(time.perf_counter() - arrived)
    return out


class F0Worker:
    """One persistent thread that runs f0 and the memory update (the slow path of Sec. 3.5)
    and publishes the new memory state. Use as a context manager; :meth:`submit` hands it a
    frame and the state to update, if it is idle."""

    def __init__(self, paths: LatencyPaths) -> None:
        self.paths = paths
        self._cv = threading.Condition()
        self._job: tuple | None = None
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self.state = paths.zero_state
        self.done = 0
        self._stream = None
        device = paths.zero_state[0].device
        if device.type == "cuda":
            self._stream = torch.cuda.Stream(device)
        self._thread = threading.Thread(target=self._loop, name="lfs-f0", daemon=True)
        self._thread.start()

    def __enter__(self) -> F0Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        torch.set_grad_enabled(False)  # grad mode is per thread
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._job is None:
                    return
                frame, state, ready, consumer = self._job
                self._job = None
            try:
                if self._stream is not None:
                    with torch.cuda.stream(self._stream):
                        self._stream.wait_event(ready)  # the frame and state exist on the producer's stream
                        _, c, h = self.paths.f0(frame, *state)
                    self._stream.synchronize()  # published only when its kernels are done
                    for x in (c, h):  # the caller's stream reads them: no reuse of their memory before
                        x.record_stream(consumer)
                else:
                    _, c, h = self.paths.f0(frame, *state)
            except BaseException as exc:  # re-raised on the caller's thread
                with self._cv:
                    self._error, self._busy = exc, False
                    self._cv.notify_all()
                return
            with self._cv:
                self.state = (c, h)
                self.done += 1
                self._busy = False
                self._cv.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError("the f0 worker failed") from self._error

    def submit(self, frame: torch.Tensor, state) -> bool:
        """Start f0 on ``frame`` from ``state`` unless a run is still going (then False)."""
        with self._cv:
            self._raise()
            if self._closed:
                raise RuntimeError("the f0 worker is closed")
            if self._busy:
                return False
            ready = consumer = None
            if self._stream is not None:
                consumer = torch.cuda.current_stream(frame.device)
                ready = torch.cuda.Event()
                ready.record(consumer)  # the frame and the state are ready on the caller's stream
            self._job, self._busy = (frame, state, ready, consumer), True
            self._cv.notify_all()
            return True

    def reset(self, state) -> None:
        """Wait for the running job, then make ``state`` the published one (a new video)."""
        self.wait()
        with self._cv:
            self.state = state

    def latest(self):
        with self._cv:
            self._raise()
            return self.state

    def wait(self) -> None:
        """Block until the running f0 job (if any) has published its state."""
        with self._cv:
            while self._busy and self._error is None:
                self._cv.wait()
            self._raise()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()


@torch.no_grad()
def run_async(paths: LatencyPaths, frames: torch.Tensor, tau: int, fps: float | None = None,
              worker: F0Worker | None = None) -> tuple[list[float], int]:
    """Asynchronous mode on one video ``(T, 3, S, S)``: per-frame latency (s) and the number of
    f0 runs that completed. Every frame's detections come from f1 and the latest memory state;
    f0 is launched on frames ``0, τ+1, …`` on the worker thread if it is idle, and its state
    replaces the memory when it is done (f1 never writes the memory, Sec. 3.2). Frame 0 waits
    for its f0 run: there is no memory yet. ``worker``: a running :class:`F0Worker` to reuse
    (one is started and stopped otherwise)."""
    if frames.dim() != 4:
        raise ValueError(f"expected frames (T, 3, S, S), got {tuple(frames.shape)}")
    own = worker is None
    worker = worker or F0Worker(paths)
    if worker.paths is not paths:
        raise ValueError("the f0 worker runs other paths than the ones given")
    try:
        worker.reset(paths.zero_state)
        done0 = worker.done
        latencies, clock = [], _Clock(fps)
        for t in range(len(frames)):
            arrived = clock.arrival(t)
            if t % (tau + 1) == 0:
                worker.submit(frames[t:t + 1], worker.latest())
                if t == 0:
                    worker.wait()
            features, _, _ = paths.f1(frames[t:t + 1], *worker.latest())
            paths.detect(features, F1)
            _wait_for(frames)
            latencies.append(time.perf_counter() - arrived)
        worker.wait()
        return latencies, worker.done - done0
    finally:
        if own:
            worker.close()


def latency_summary(runs: Sequence[Sequence[float]], skip: int = 1) -> dict[str, float]:
    """Per-frame latency in ms over several video runs (each a list of seconds), leaving out
    the first ``skip`` frames of **every** run (the warm-up frame; in async mode frame 0 also
    waits for f0): ``amortized_ms`` (mean), ``p50_ms``, ``p95_ms``, ``p99_ms``, ``worst_ms``
    (max), and how many ``frames`` and ``runs`` they cover."""
    for run in runs:
        if not isinstance(run, (list, tuple)) or not all(isinstance(x, float) for x in run):
            raise TypeError("latency_summary takes a list of runs, each a list of per-frame seconds (floats); "
                            f"got a run of type {type(run).__name__}: {str(run)[:60]}")
    kept = [x for run in runs for x in run[skip:]]
    if not kept:
        raise ValueError(f"no frames left after skipping {skip} per run ({len(runs)} runs)")
    xs = torch.tensor(kept, dtype=torch.float64) * 1000
    q = torch.quantile(xs, torch.tensor([0.5, 0.95, 0.99], dtype=torch.float64)).tolist()
    return {"amortized_ms": float(xs.mean()), "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
            "worst_ms": float(xs.max()), "frames": float(len(kept)), "runs": float(len(runs))}
