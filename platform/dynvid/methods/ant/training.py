"""ANT's two training stages (Sec. 3.1, 3.2, 4.1).

Stage 1 (:func:`sandwich_step`): the weight-sharing supernet trained with the sandwich rule
and in-place knowledge distillation.

One step: the largest subnet learns the detection labels (focal + smooth-L1 on
EfficientDet's anchors); the smallest and ``sandwich_random`` random subnets learn the
largest subnet's detections (:func:`~.modules.inplace_distillation_loss`); the losses are
summed, so one optimizer step updates the shared weights for all of them. Before a subnet
is evaluated its BatchNorm statistics are recalibrated (:func:`~.modules.recalibrate_bn`).

Stage 0 (:func:`static_step`): the standalone network (all ratios 6) on the labels, which
initialises the supernet (Sec. 3.1: "we first train a standalone network … as the
initialization of supernet").

Stage 2 (:func:`gate_step`): fusion modules and gates trained with the supernet on clips
with a fixed schedule of one key frame in ``key_every`` (3). Key frames run the full
network; non-key frames run fusion + Gumbel gates and learn the labels plus a KD loss
between their fused stage inputs and the golden ones (the same frame through the full
network, no gradient). Choice: a width-cost term ``cost_weight · mean_s E[ratio_s / 6]``
(over the gates' straight-through one-hots) keeps the gates from always picking the full
width; the paper does not state its cost objective. With a cost table
(:func:`stage_costs`, ``ant.cost_metric``) the term is ``Σ_s E[cost_s(ratio_s)]`` instead,
the table normalized so the full network costs 1: ``latency`` (default) is a lookup table of
each stage's single-core latency at each ratio, measured on the worker (FBNet-style); it
matters because on a CPU the first elastic stage, at the highest resolution, takes far more
than its share of MACs (measured at 192×192: stage 1 at ratio 6 instead of 1 adds 11 ms to a
15 ms subnet, each other stage ≤ 2 ms). ``macs`` takes the width formula instead.

On a GPU a step reads nothing back to the host but its logged losses (one read): the
detection losses of all images (and, in stage 2, all frames of the clips) are computed in one
batched pass (:func:`~dynvid.detection.losses.detection_loss_batched`) and the anchors
are cached per size and device.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from dynvid.backbones.efficientnet import RATIOS, mbconv_macs
from dynvid.detection.efficientdet import cached_retina_anchors
from dynvid.detection.losses import detection_loss_batched
from dynvid.methods.ant.model import ELASTIC, inference_copy
from dynvid.methods.ant.modules import inplace_distillation_loss, sandwich_configs
from dynvid.task import unwrap_model

__all__ = ["detection_loss_batch", "gate_step", "sandwich_step", "stage_costs", "static_step"]


def detection_loss_batch(cls: torch.Tensor, box: torch.Tensor, anchors: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """Focal classification + smooth-L1 localisation, averaged over the images of a batch;
    ``targets[b]`` holds normalized xyxy ``boxes`` and 0-based ``labels``."""
    c, loc = detection_loss_batched(cls, box, anchors, [t["boxes"] for t in targets],
                                    [t["labels"] for t in targets], focal=True)
    return (c + loc).mean()


def _anchors(model, frames: torch.Tensor) -> torch.Tensor:
    return cached_retina_anchors(unwrap_model(model).last_sizes, tuple(frames.shape[-2:]), frames.device)


def _logs(**values: torch.Tensor) -> dict[str, float]:
    """The step's logged values, read to the host together (one synchronisation on a GPU)."""
    return dict(zip(values, torch.stack([v.detach().float() for v in values.values()]).tolist()))


def static_step(model, frames: torch.Tensor, targets: list[dict]) -> tuple[torch.Tensor, dict[str, float]]:
    """The standalone network (the full width) on the labels."""
    cls, box = model(frames)
    loss = detection_loss_batch(cls, box, _anchors(model, frames), targets)
    return loss, _logs(loss=loss)


def sandwich_step(model, frames: torch.Tensor, targets: list[dict], rng: random.Random,
                  num_random: int = 2, kd_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed loss of one sandwich step and its parts (see the module docstring). All
    subnets run inside one call of ``model`` (one DDP forward)."""
    configs = sandwich_configs(rng, num_random)
    outputs = model(frames, run=lambda m, x: [m.forward_static(x, c)[:2] for c in configs])
    (cls, box), students = outputs[0], outputs[1:]
    largest = detection_loss_batch(cls, box, _anchors(model, frames), targets)
    kd_total = sum(inplace_distillation_loss(s_cls, s_box, cls.detach(), box.detach()) for s_cls, s_box in students)
    loss = largest + kd_weight * kd_total
    kd_total = kd_total if isinstance(kd_total, torch.Tensor) else loss.new_tensor(float(kd_total))
    return loss, _logs(loss=loss, largest_loss=largest, kd_loss=kd_total / max(1, len(students)))


def _clip_forward(model, clips: torch.Tensor, tau: float, key_every: int) -> list[tuple]:
    """Stage 2's schedule over clips ``(B, T, …)``: per frame ``(cls, box, details, golden)``;
    key frames have ``details = golden = None``."""
    key, out = None, []
    for t in range(clips.shape[1]):
        x = clips[:, t]
        if t % key_every == 0:
            cls, box, outs = model.forward_static(x)
            key = model.key_features(outs)
            out.append((cls, box, None, None))
        else:
            cls, box, _, d = model.forward_nonkey(x, key, tau=tau, details=True)
            with torch.no_grad():  # golden features: the same frame through the whole network
                golden = model.key_features(model.forward_static(x)[2])
            out.append((cls, box, d, golden))
    return out


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def stage_costs(model, size: int, metric: str = "latency", rounds: int = 21, channels_last: bool = True) -> torch.Tensor:
    """``(6, len(RATIOS))`` cost of each elastic stage at each ratio on a ``size × size`` frame,
    normalized so that the full network's stages sum to 1: measured single-core latency with
    batch 1 on the network as it runs at inference (:func:`~.model.inference_copy`:
    BatchNorms folded, channels-last with ``channels_last``, ``ant.channels_last``), or MACs by
    the width formula. Before issue 23's change the table timed the unfolded network on NCHW
    maps while the benchmark runs channels-last frames, and the layout moves the stages'
    relative costs: at 192², stage 1 at ratio 4 measured 0.27 of the full stages that way and
    0.16 channels-last. With ``channels_last`` the timed frame is channels-last too, as the
    decoded frames are.

    Latency is timed in ``rounds`` rounds (after one warm-up round): each round times every
    (stage, ratio) cell once, in a shuffled order (seeded), and a cell's cost is its median over
    the rounds, so that a slow spell of the machine spreads over all cells instead of falling on
    the few timed in it (issue 23, stop 41: a cell's relative spread 9.3% → 2.5% over ten tables
    on a 2-core machine; the README's "Without the distillation" has the numbers). 21 rounds
    take 1.6 s at 192². Raises ``ValueError`` for an unknown ``metric`` or ``rounds < 1``."""
    model = unwrap_model(model)
    if metric not in ("latency", "macs"):
        raise ValueError(f"ant.cost_metric must be 'latency' or 'macs', got {metric!r}")
    if rounds < 1:
        raise ValueError(f"stage_costs: rounds must be at least 1, got {rounds}")
    was, before = model.training, torch.get_num_threads()
    model.eval()
    m = inference_copy(model, channels_last) if metric == "latency" else model
    torch.set_num_threads(1)
    table = torch.zeros(len(ELASTIC), len(RATIOS), dtype=torch.float64)
    try:
        device = next(m.parameters()).device
        frame = torch.zeros(1, 3, size, size, device=device)
        if channels_last and metric == "latency":  # as the frames the rows are timed on (decoded channels-last)
            frame = frame.contiguous(memory_format=torch.channels_last)
        outs = m.backbone.stage_features(frame, upto=ELASTIC[-1] + 1)
        cells = [(s, k) for s in range(len(ELASTIC)) for k in range(len(RATIOS))]
        if metric == "macs":
            for s, k in cells:
                h, cost = outs[ELASTIC[s] - 1].shape[-1], 0
                for b in m.backbone.features[ELASTIC[s]]:
                    cost += mbconv_macs(b.cin, b.cout, RATIOS[k], b.kernel, b.stride, h, h)
                    h = (h + 2 * ((b.kernel - 1) // 2) - b.kernel) // b.stride + 1
                table[s, k] = cost
        else:
            times = {cell: [] for cell in cells}
            order, shuffle = list(cells), random.Random(0).shuffle
            for _ in range(rounds + 1):  # the first round warms up
                shuffle(order)
                for s, k in order:
                    x = outs[ELASTIC[s] - 1]
                    _wait(device)
                    t0 = time.perf_counter()
                    for b in m.backbone.features[ELASTIC[s]]:
                        x = b(x, b.cin * RATIOS[k])
                    _wait(device)  # on a GPU the kernels are only queued until here
                    times[(s, k)].append(time.perf_counter() - t0)
            for (s, k), t in times.items():
                table[s, k] = statistics.median(t[1:])
    finally:
        torch.set_num_threads(before)
        model.train(was)
    return (table / table[:, -1].sum()).float()


def gate_step(model, clips: torch.Tensor, targets: Sequence[Sequence[dict]], tau: float, key_every: int = 3,
              kd_weight: float = 1.0, cost_weight: float = 0.1, costs: torch.Tensor | None = None,
              cost_target: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-2 loss over clips ``(B, T, 3, H, W)`` with ``targets[b][t]`` per frame; ``costs``
    a :func:`stage_costs` table (None: the mean ratio / 6). ``cost_target``: the cost term is
    ``relu(cost − cost_target)`` per sample (a budget), else ``cost``."""
    B, T = clips.shape[:2]
    if costs is None:
        costs = (torch.tensor(RATIOS, dtype=clips.dtype) / max(RATIOS) / 6).expand(6, len(RATIOS))
    if costs.device != clips.device or costs.dtype != clips.dtype:  # the task keeps its table on the device
        costs = costs.to(device=clips.device, dtype=clips.dtype)
    frames_out = model(clips, run=lambda m, x: _clip_forward(m, x, tau, key_every))
    anchors = _anchors(model, clips[:, 0])
    # every frame of every clip in one batched loss: the mean over frames of the per-frame means
    det = detection_loss_batch(torch.cat([o[0] for o in frames_out]), torch.cat([o[1] for o in frames_out]),
                               anchors, [targets[b][t] for t in range(T) for b in range(B)])
    kd_total, cost_total, spent, nonkey = clips.new_zeros(()), clips.new_zeros(()), clips.new_zeros(()), 0
    for t, (cls, box, d, golden) in enumerate(frames_out):
        if d is None:
            continue
        kd_total = kd_total + sum(F.mse_loss(f, g) for f, g in zip(d["fused"], golden)) / len(golden)
        per_sample = sum((oh * costs[s]).sum(1) for s, oh in enumerate(d["onehots"]))  # (B,) straight-through
        spent = spent + per_sample.detach().mean()
        cost_total = cost_total + (per_sample if cost_target is None else F.relu(per_sample - cost_target)).mean()
        nonkey += 1
    kd, cost = kd_total / max(1, nonkey), cost_total / max(1, nonkey)
    loss = det + kd_weight * kd + cost_weight * cost
    return loss, _logs(loss=loss, det_loss=det, kd_loss=kd, cost=spent / max(1, nonkey), cost_term=cost)
