"""Evaluation of the interleaved detector: policies, mAP per τ, amortized cost, async latency.

Looking Fast and Slow (Liu et al., 2019) reports mAP@0.5 over every frame of every
validation video (Sec. 4), the amortized MACs per frame of an interleave policy, the
mAP-vs-τ curve of the fixed policy (Fig. 6), the learned policies' mAP against their
fraction of f0 runs (Fig. 7), and, for asynchronous inference (Sec. 3.5), worst-case
against amortized per-frame latency.

Policies decide the extractor of the *next* frame from what the detector has just done;
the first frame of a video always runs f0 (Algorithm 1, ``a_0 = 0``):

- :class:`FixedPolicy`: f0, then f1 ``τ`` times (Sec. 3.1).
- :class:`LearnedPolicy`: the DQN Q-network on ``S = (c_t, h_t, c_t − c_{t−1}, h_t − h_{t−1},
  η_t)`` (Eq. 1), greedy. ``(c_t, h_t)`` is the memory's output state for the extractor
  that ran (Algorithm 1's ``s_t = s_t^{a_t}``), before the f1 skip rule decides what is
  carried; ``η_t[k−1] = 1`` if f1 ran ``k`` steps ago, counting the frame just processed
  as one step ago.
- :class:`OraclePolicy`: not a deployable policy but the benchmark's upper reference (issue 23):
  it looks ahead at the labels. From the state the detector kept, it runs both extractors on
  the next frame, takes each one's detection loss (Eq. 2's ``L(D^i)``, as the policy's
  environment does) and picks f0 where ``L(D^1) − L(D^0) > threshold``. With
  ``threshold = γ`` it is the greedy maximiser of Eq. 2's reward; swept over thresholds it
  draws what a choice that sees each frame's true loss gap reaches at each fraction of f0
  runs on these videos. It is a reference, not a bound: it is greedy and it ranks by loss,
  not mAP, so a learned policy can beat it. With ``horizon = H > 1`` it compares the two
  branches' mean loss over the frame and the ``H − 1`` frames after it, each branch carried on
  with f1 (:func:`horizon_losses`): what a refresh buys over the next frames, the reward of
  ``lfs.reward_horizon``. Its cost counts the path it chose only (the look-ahead is the
  oracle's, not the detector's).

Synchronous and asynchronous latency (Sec. 3.5, Fig. 5) are :mod:`dynvid.methods.lfs.latency`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dynvid.detection.losses import detection_loss_batched
from dynvid.detection.ssdlite import postprocess
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, fixed_schedule, unwrap
from dynvid.methods.lfs.policy import make_observation
from dynvid.metrics.detection import coco_evaluate, gather_from_ranks, video_detection_rows

__all__ = ["FixedPolicy", "LearnedPolicy", "OraclePolicy", "evaluate_policies", "horizon_losses", "run_videos",
           "update_history"]


def update_history(eta: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Shift the action history ``(B, H)`` by one step and record ``actions`` (1 where f1 ran)."""
    return torch.cat([(actions == F1).to(eta.dtype).unsqueeze(1), eta[:, :-1]], 1)


class FixedPolicy:
    """f0, then f1 ``tau`` times, repeated (Sec. 3.1)."""

    def __init__(self, tau: int) -> None:
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.tau = tau
        self.name = f"fixed τ={tau}"

    def reset(self, batch: int) -> None:
        pass

    def next_actions(self, t: int, candidate, previous, actions: torch.Tensor) -> torch.Tensor:
        return torch.full_like(actions, int(fixed_schedule(t + 2, self.tau)[t + 1]))


class LearnedPolicy:
    """Greedy actions of a Q-network (``policy.QNetwork``) on Eq. 1's observation. With
    ``min_gap = m > 1`` (``lfs.min_f0_gap``) an f0 it chooses fewer than ``m`` frames after
    the last f0 run is refused: f1 runs there."""

    def __init__(self, qnet: torch.nn.Module, history: int | None = None, name: str = "learned",
                 min_gap: int = 1) -> None:
        trained = getattr(qnet, "kwargs", {}).get("history")
        if history is not None and trained is not None and history != trained:
            raise ValueError(f"the policy was trained with an action history of {trained} steps, not {history} "
                             "(lfs.history)")
        if min_gap < 1:
            raise ValueError(f"min_gap must be >= 1 frame (lfs.min_f0_gap), got {min_gap}")
        self.qnet, self.history, self.name, self.min_gap = qnet.eval(), history or trained or 20, name, int(min_gap)
        self.eta: torch.Tensor | None = None
        self.since: torch.Tensor | None = None  # per video: frames since the last f0 run, at the frame that ran

    def reset(self, batch: int) -> None:
        self.eta = torch.zeros(batch, self.history)
        self.since = torch.zeros(batch, dtype=torch.long)

    @torch.no_grad()
    def next_actions(self, t: int, candidate, previous, actions: torch.Tensor) -> torch.Tensor:
        c, h = candidate
        self.eta = update_history(self.eta.to(c.device), actions.to(c.device))
        c_prev, h_prev = previous if previous is not None else (torch.zeros_like(c), torch.zeros_like(h))
        obs = make_observation(c, h, c_prev, h_prev, self.eta.to(c.dtype))
        chosen = self.qnet.to(c.device)(obs).argmax(1).to(actions.device)
        self.since = torch.where(actions == F0, 0, self.since.to(actions.device) + 1)
        return torch.where(self.since + 1 < self.min_gap, torch.full_like(chosen, F1), chosen)


@torch.no_grad()
def horizon_losses(model: InterleavedDetector, x0: torch.Tensor, x1: torch.Tensor, state, boxes: list[list],
                   labels: list[list], *, focal: bool) -> tuple[torch.Tensor, tuple]:
    """Both extractors' detection losses (Eq. 2's ``L(D^i)``) on frame ``t`` and, carried on with
    f1, on the frames after it: what each choice at ``t`` leaves for the next frames (issue 23;
    ``lfs.reward_horizon``, ours).

    Branch ``i`` runs extractor ``i`` on frame ``t`` from ``state`` (the kept state before
    ``t``), then f1 on frames ``t + 1 … t + K − 1`` from what the detector keeps after it
    (under ``skip_f1_update`` f1 does not write the state, so f0's branch reads the refreshed
    state and f1's the old one throughout). The f1 continuation is a counterfactual: the
    policy may run f0 again inside the horizon. Under ``skip_f1_update`` the frames after
    ``t`` share their branch's state, so they run as one batch: two memory and head passes
    whatever ``K`` (the ablation runs the ``K`` passes in order).

    Args:
        x0: ``(B, …)`` f0's features of frame ``t`` (``model.extract``; they do not depend on the state).
        x1: ``(B, K, …)`` f1's features of frames ``t … t + K − 1`` (``K ≥ 1``).
        state: the kept ``(c, h)`` before frame ``t``, ``B`` rows.
        boxes, labels: ``[b][k]``: the targets of video ``b``'s frame ``t + k``.

    Returns ``(losses (B, 2, K), candidate)``: ``losses[b, i, k]`` of branch ``i`` on frame
    ``t + k``; ``candidate`` the memory's new ``(c, h)`` on frame ``t``, ``2B`` rows (f0's
    ``B``, then f1's), Algorithm 1's ``s_t^i``. With ``K = 1`` it is Eq. 2's two losses."""
    B, K = x1.shape[:2]
    if K < 1 or len(x0) != B:
        raise ValueError(f"horizon_losses needs f0 features of the B={B} videos' frame and f1 features of K >= 1 "
                         f"frames, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    losses = torch.zeros(B, 2, K, dtype=torch.float64)
    out, candidate = model.memory(torch.cat([x0, x1[:, 0]]), tuple(torch.cat([s, s]) for s in state))
    losses[:, :, 0] = _row_losses(model, out, [boxes[b][0] for b in range(B)] * 2,
                                  [labels[b][0] for b in range(B)] * 2, focal).view(2, B).t()
    if K == 1:
        return losses, candidate
    if model.skip_f1_update:
        # f1 does not write the state: after frame t each branch reads one state throughout (f0's
        # branch the state f0 wrote, f1's the state before t), so the K − 1 frames after t are
        # independent and run as one batch. Rows: frame t + k (k ≥ 1), then branch, then video.
        kept = tuple(torch.cat([n[:B], s]) for n, s in zip(candidate, state))
        x = x1[:, 1:].transpose(0, 1)
        x = torch.cat([x, x], 1).flatten(0, 1)
        out, _ = model.memory(x, tuple(s.repeat(K - 1, *[1] * (s.dim() - 1)) for s in kept))
        frames = [(b, k) for k in range(1, K) for _ in range(2) for b in range(B)]
        rows = _row_losses(model, out, [boxes[b][k] for b, k in frames], [labels[b][k] for b, k in frames], focal)
        losses[:, :, 1:] = rows.view(K - 1, 2, B).permute(2, 1, 0)
        return losses, candidate
    both = candidate  # the ablation: f1 writes the state too, so the frames after t run in order
    for k in range(1, K):
        out, both = model.memory(torch.cat([x1[:, k], x1[:, k]]), both)
        losses[:, :, k] = _row_losses(model, out, [boxes[b][k] for b in range(B)] * 2,
                                      [labels[b][k] for b in range(B)] * 2, focal).view(2, B).t()
    return losses, candidate


def _row_losses(model: InterleavedDetector, out: torch.Tensor, boxes: list, labels: list, focal: bool) -> torch.Tensor:
    """Each row's detection loss (classification + box, as Eq. 2's ``L``) of the memory output
    ``out`` against row ``r``'s ``boxes[r]``, ``labels[r]``, on the host in float64."""
    cls_logits, box_codes, sizes = model.head(out)
    anchors = model.anchors(sizes, cls_logits.device)
    cls, loc = detection_loss_batched(cls_logits, box_codes, anchors, boxes, labels, focal=focal)
    return (cls + loc).double().cpu()


class OraclePolicy:
    """f0 on a frame where its detection loss is more than ``threshold`` below f1's, both run
    from the kept state (see the module docstring); with ``horizon > 1`` the mean loss over
    that frame and the ``horizon − 1`` after it, each branch carried on with f1. It needs the
    labels: :func:`run_videos` serves it the targets (``look_ahead``). ``focal``: the
    detector's classification loss (``lfs.focal``), as the policy's environment rewards it."""

    look_ahead = True

    def __init__(self, threshold: float, *, focal: bool, horizon: int = 1, name: str | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"the oracle's horizon must be >= 1 frame, got {horizon}")
        self.threshold, self.focal, self.horizon = float(threshold), focal, int(horizon)
        self.name = name or f"oracle θ={threshold:g}" + (f" H={horizon}" if horizon > 1 else "")
        self._f1: dict[int, torch.Tensor] = {}  # f1's features of the videos' frames inside the horizon

    def reset(self, batch: int) -> None:
        self._f1 = {}

    @torch.no_grad()
    def choose(self, model: InterleavedDetector, frames: torch.Tensor, state, targets: list[dict],
               t: int) -> torch.Tensor:
        """The actions of frame ``t`` of videos ``frames (B, T, 3, S, S)`` from ``state``. A
        video shorter than the batch (its padding frames not ``valid``) is looked at up to its
        own end, as the policy's environment does."""
        B, T = frames.shape[:2]
        end = min(T, t + self.horizon)
        ones = torch.ones(B, dtype=torch.long, device=frames.device)
        for k in range(t, end):  # f1's features do not depend on the state: once per frame, kept while in view
            if k not in self._f1:
                self._f1[k] = model.extract(frames[:, k], ones * F1)
        for k in [k for k in self._f1 if k < t]:
            del self._f1[k]
        x1 = torch.stack([self._f1[k] for k in range(t, end)], 1)
        losses, _ = horizon_losses(model, model.extract(frames[:, t], ones * F0), x1, state,
                                   [[tg["boxes"][k] for k in range(t, end)] for tg in targets],
                                   [[tg["labels"][k] for k in range(t, end)] for tg in targets], focal=self.focal)
        # each video's own frames only: past a shorter video's end the batch repeats its last frame
        inside = torch.stack([tg["valid"][t:end].cpu() for tg in targets]).to(losses.dtype)
        means = (losses * inside[:, None]).sum(2) / inside.sum(1).clamp_min(1)[:, None]
        return torch.where(means[:, F1] - means[:, F0] > self.threshold, F0, F1).long()


@torch.no_grad()
def run_videos(model: InterleavedDetector, frames: torch.Tensor, policy, *, score_threshold: float = 0.05,
               nms_iou: float = 0.6, max_detections: int = 100, targets: list[dict] | None = None):
    """Run ``policy`` over videos ``frames (B, T, 3, S, S)``. Returns ``(detections [B][T]
    dicts of normalized xyxy ``boxes``, ``scores`` (calibrated: ``model.calibrate_detections``), ``labels``;
    actions (B, T))``. A
    ``look_ahead`` policy (:class:`OraclePolicy`) needs the videos' ``targets``."""
    if getattr(policy, "look_ahead", False) and targets is None:
        raise ValueError(f"policy {policy.name!r} looks ahead at the labels: run_videos needs targets")
    m = unwrap(model)
    device = next(m.parameters()).device
    if frames.device != device:  # a plain DataLoader (reports, benchmarks) delivers host tensors
        frames = frames.to(device, non_blocking=True)
    B, T = frames.shape[:2]
    policy.reset(B)
    actions = torch.zeros(B, T, dtype=torch.long)
    a = torch.full((B,), F0, dtype=torch.long)
    state, previous = None, None
    dets: list[list[dict]] = [[] for _ in range(B)]
    for t in range(T):
        actions[:, t] = a
        cls_logits, box_codes, anchors, state, candidate = m.step(frames[:, t], a.to(frames.device), state)
        for b, d in enumerate(postprocess(cls_logits, box_codes, anchors, score_threshold, nms_iou, max_detections)):
            dets[b].append(m.calibrate_detections(d, int(a[b])))  # scores on the scale of the extractor that ran
        if t + 1 < T and getattr(policy, "look_ahead", False):
            a = policy.choose(m, frames, state, targets, t + 1).cpu()
        elif t + 1 < T:
            a = policy.next_actions(t, candidate, previous, a).cpu()
        previous = candidate
    return dets, actions


@torch.no_grad()
def evaluate_policies(model: InterleavedDetector, loader: Iterable, gt: dict, policies: list, *,
                      costs: dict[str, float] | None = None, per_video: dict | None = None,
                      **post) -> dict[str, dict[str, float]]:
    """mAP@0.5, AP@[.5:.95], fraction of f0 runs and amortized GMACs per frame of each policy
    over every valid frame of ``loader``'s videos (items ``(frames, targets)``). Under
    ``torch.distributed`` the ranks' detections are gathered and scored together, so every
    rank returns the metrics of all videos (``videos`` stays this rank's count).

    ``per_video`` (a dict, single process): filled with what a bootstrap over videos needs,
    ``{"image_ids": [[ids of video v's valid frames]], policy name: {"rows": COCO rows,
    "f0": [f0 runs of video v], "frames": [valid frames of video v]}}``."""
    if per_video is not None and per_video:
        raise ValueError("per_video must be an empty dict: it is filled with this evaluation's records")
    dist = torch.distributed
    if per_video is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError("per_video records one process's videos: run the evaluation in a single process")
    m = unwrap(model)
    was = m.training
    m.eval()
    costs = costs or m.component_macs()
    rows = {p.name: [] for p in policies}
    runs = {p.name: [0.0, 0.0, 0.0] for p in policies}  # f0 runs, frames, MACs
    videos = 0
    try:
        for frames, targets in loader:
            videos += len(targets)
            for p in policies:
                dets, actions = run_videos(m, frames, p, targets=targets, **post)
                for b, target in enumerate(targets):
                    video_rows = video_detection_rows(dets[b], target)
                    rows[p.name].extend(video_rows)
                    valid = target["valid"].cpu()
                    acts = actions[b][valid]
                    runs[p.name][0] += float((acts == F0).sum())
                    runs[p.name][1] += float(valid.sum())
                    runs[p.name][2] += float(m.frame_macs(acts, costs).sum())
                    if per_video is not None:
                        mine = per_video.setdefault(p.name, {"rows": [], "f0": [], "frames": []})
                        mine["rows"].extend(video_rows)
                        mine["f0"].append(int((acts == F0).sum()))
                        mine["frames"].append(int(valid.sum()))
            if per_video is not None:
                per_video.setdefault("image_ids", []).extend(
                    [int(i) for i in tg["image_ids"][tg["valid"].cpu()]] for tg in targets)
    finally:
        m.train(was)
    gathered = gather_from_ranks((rows, runs))
    if gathered is not None:
        rows = {k: [r for g in gathered for r in g[0][k]] for k in rows}
        runs = {k: [sum(g[1][k][i] for g in gathered) for i in range(3)] for k in runs}
    out = {}
    for p in policies:
        ap = coco_evaluate(gt, rows[p.name])
        f0, frames_n, macs = runs[p.name]
        out[p.name] = {"AP50": ap["AP50"], "AP": ap["AP"], "f0_fraction": f0 / max(frames_n, 1),
                       "gmacs_per_frame": macs / max(frames_n, 1) / 1e9, "frames": frames_n, "videos": float(videos)}
    return out
