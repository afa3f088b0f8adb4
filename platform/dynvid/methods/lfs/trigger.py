"""A label-free interleaving policy for Looking Fast and Slow: f0 after an abrupt change of the
memory output (ours, not the paper's; issue 23).

The paper's adaptive policy (Sec. 3.4) is a DQN trained on Eq. 2's per-frame reward. On the
embedded scenes no reading of that reward placed f0 runs better than even spacing, its own
label-reading oracle included (README, "Looking Fast and Slow"). Yet on scenes with cuts
(``data.synthetic_cuts``) the policy's observation does show when a refresh pays: after a cut
the memory output jumps. :class:`ChangeTriggerPolicy` acts on that alone:

- the *change* of frame ``t`` is ``‖h_t − h_{t−1}‖ / ‖h_{t−1}‖``, the relative change of the
  memory's output ``h`` (Eq. 1's ``h_t − h_{t−1}`` over ``h_{t−1}``, one number per video),
  taken only where frames ``t−1`` and ``t`` both ran f1: across an extractor switch the output
  moves because the extractor did, not the scene;
- f0 runs on frame ``t + 1`` when that change exceeds ``threshold``, and, with ``tau`` set, at
  the latest ``tau + 1`` frames after the last f0 (the fixed schedule as a floor; ``tau=None``:
  no schedule, f0 only on the first frame and after a change).

It reads no labels and learns nothing but its threshold, which :func:`fit_threshold` takes as a
quantile of the change over videos the evaluation does not score (``lfs.policy_split``: the
held-out ``test`` split in the embedded preset): on the fitting run (f0 on frame 0, f1 after
it, no floor) a quantile ``q`` fires after the top ``1 − q`` of the f1-to-f1 steps. Where it
acts the rate differs: each f0 it runs refreshes the state the next f1 frames start from (f1
does not update it, ``skip_f1_update``), and a floor adds its own f0 runs; ``bench_lfs``
reports the fraction of f0 runs each quantile gave. Choices: the whole ``(S, g, g)`` output in
one norm (a cut changes the whole view; a per-cell norm would fire on one object entering);
``h`` rather than ``c`` (``h`` is what the detection head reads). A real video's unreadable
frame (zeroed by the loader) is left out of the fit by its ``valid`` mask but can fire the
policy once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, unwrap

__all__ = ["ChangeTriggerPolicy", "fit_threshold", "memory_changes", "relative_change"]


def relative_change(h: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
    """``‖h − h_prev‖ / ‖h_prev‖`` per row of ``(B, …)`` tensors (the norm over everything but
    the batch dimension; a zero ``h_prev`` counts as norm 1e-6)."""
    if h.shape != h_prev.shape:
        raise ValueError(f"h and h_prev must have one shape, got {tuple(h.shape)} and {tuple(h_prev.shape)}")
    return (h - h_prev).flatten(1).norm(dim=1) / h_prev.flatten(1).norm(dim=1).clamp_min(1e-6)


class ChangeTriggerPolicy:
    """f0 on the frame after the memory output changed by more than ``threshold`` between two
    consecutive f1 frames, and (``tau`` set) at the latest ``tau + 1`` frames after the last f0
    (see the module docstring). The policy protocol of :func:`~.evaluation.run_videos`."""

    def __init__(self, threshold: float, tau: int | None = None, name: str | None = None) -> None:
        if tau is not None and tau < 0:
            raise ValueError(f"tau must be >= 0 or None, got {tau}")
        if np.isnan(threshold):
            raise ValueError("threshold must be a number, got nan")
        self.threshold, self.tau = float(threshold), tau
        self.name = name or f"trigger >{self.threshold:.4g}" + (f" τ={tau}" if tau is not None else "")
        self._since = self._last = torch.zeros(0, dtype=torch.long)

    def reset(self, batch: int) -> None:
        self._since = torch.zeros(batch, dtype=torch.long)  # frames since the last f0 run
        self._last = torch.full((batch,), F0, dtype=torch.long)  # the action of the frame before

    @torch.no_grad()
    def next_actions(self, t: int, candidate, previous, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.cpu()
        steady = (actions == F1) & (self._last == F1)
        if previous is not None and bool(steady.any()):
            fire = steady & (relative_change(candidate[1], previous[1]).cpu() > self.threshold)
        else:
            fire = torch.zeros_like(steady)
        self._since = torch.where(actions == F0, torch.zeros_like(self._since), self._since + 1)
        if self.tau is not None:
            fire |= self._since >= self.tau
        self._last = actions.clone()
        return torch.where(fire, F0, F1).long()


@torch.no_grad()
def memory_changes(model: InterleavedDetector, loader: Iterable) -> np.ndarray:
    """The change :class:`ChangeTriggerPolicy` compares with its threshold, at every frame
    ``t ≥ 2`` of ``loader``'s videos (items ``(frames (B, T, 3, S, S), targets)`` with
    ``valid`` masks) run with f0 on frame 0 and f1 after it: the change of every f1-to-f1 step
    the trigger could fire on, before any fires."""
    m = unwrap(model)
    was = m.training
    m.eval()
    device = next(m.parameters()).device
    out = []
    try:
        for frames, targets in loader:
            frames = frames.to(device)
            valid = torch.stack([tg["valid"].cpu() for tg in targets])  # (B, T)
            state, previous = None, None
            for t in range(frames.shape[1]):
                _, _, _, state, candidate = m.step(frames[:, t], F0 if t == 0 else F1, state)
                if t >= 2:
                    keep = valid[:, t] & valid[:, t - 1]
                    out.append(relative_change(candidate[1], previous[1]).cpu()[keep])
                previous = candidate
    finally:
        m.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0)


def fit_threshold(changes: np.ndarray, quantile: float, where: str = "the fitting videos") -> float:
    """The ``quantile`` of :func:`memory_changes`' output: the threshold that fires after about
    the top ``1 − quantile`` of the f1-to-f1 steps."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"a trigger quantile must lie in (0, 1), got {quantile}")
    if len(changes) == 0:
        raise ValueError(f"no f1-to-f1 steps in {where} to fit the trigger threshold on (videos of 3+ frames needed)")
    return float(np.quantile(changes, quantile))
