"""The interleaving environment of Looking Fast and Slow's adaptive policy (Sec. 3.4, Algorithm 1).

A gymnasium environment around a frozen interleaved detector on videos:

- **Action** ``a ∈ {0, 1}``: the extractor to run on the next frame (``Discrete(2)``).
- **Observation** ``S_t = (c_t, h_t, c_t − c_{t−1}, h_t − h_{t−1}, η_t)`` (Eq. 1), flat, in
  the layout of :func:`~dynvid.methods.lfs.policy.make_observation`. ``(c_t, h_t)`` is the
  memory's output state for the extractor that ran (Algorithm 1, ``s_t ← s_t^{a_t}``);
  ``η_t[k−1] = 1`` if f1 ran ``k`` steps ago (length 20).
- **Reward** (Eq. 2): ``R(a) = min_i L(D^i) − L(D^a) + γ·[a = 1]`` where ``L(D^i)`` is the
  detection loss (the training loss: classification + localisation) of the detections
  from extractor ``i`` on the current frame. As in Algorithm 1 every extractor runs on
  every frame during policy training, from the same previous state. ``reward="absolute"``
  drops ``min_i L(D^i)`` (``lfs.reward``, our variant). ``horizon = H > 1`` (``lfs.reward_horizon``,
  ours) replaces each ``L(D^i)`` by branch ``i``'s mean loss over the frame and the ``H − 1``
  frames after it, each branch carried on with f1 from the state it leaves
  (:func:`~dynvid.methods.lfs.evaluation.horizon_losses`; within the video, past the
  episode's end too): a refresh is then credited with what it buys on the frames after it,
  which Eq. 2, scoring one frame, does not see. ``H = 1`` is Eq. 2.

An episode is ``episode_len`` consecutive frames of a random video; frame 0 runs f0
(``a_0 = 0``) inside :meth:`reset`; the episode ends truncated (a time limit: the video goes
on), so the Q-target still bootstraps from its last state. The carried memory follows the detector's rule (no
state update under f1). Each extractor's features of a video's frames are computed once
(they do not depend on the state) and cached, so a step costs two memory and head
evaluations (``H`` of them, on ``2`` rows, with a horizon).

Choices: ``c_t − c_{t−1}`` is the change between consecutive memory outputs (the states
the policy observed), also when f1 left the carried state unchanged; rewards use the
per-frame SSD loss (summed classification and localisation, normalized by the positives),
the same quantity the detector was trained on; the env runs with one intra-op thread so
several env runners share a machine.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dynvid.config import ExperimentConfig, from_dict
from dynvid.methods.lfs.evaluation import horizon_losses, update_history
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector
from dynvid.methods.lfs.policy import make_observation
from dynvid.methods.lfs.report import load_detector_model, policy_videos

__all__ = ["REWARDS", "InterleavingEnv", "absolute_reward", "eq2_reward"]


def eq2_reward(losses: torch.Tensor | list[float], action: int, gamma: float) -> float:
    """Eq. 2: ``min_i L(D^i) − L(D^a)``, plus ``γ`` when ``a = 1`` (f1, the fast extractor)."""
    losses = torch.as_tensor(losses, dtype=torch.float64)
    return float(losses.min() - losses[action]) + (gamma if action == F1 else 0.0)


def absolute_reward(losses: torch.Tensor | list[float], action: int, gamma: float) -> float:
    """``−L(D^a)``, plus ``γ`` when ``a = 1``: Eq. 2 without its ``min_i L(D^i)`` (``lfs.reward``)."""
    losses = torch.as_tensor(losses, dtype=torch.float64)
    return float(-losses[action]) + (gamma if action == F1 else 0.0)


REWARDS = {"eq2": eq2_reward, "absolute": absolute_reward}
"""``lfs.reward`` → the reward function."""


def _load_from_config(env_config: dict):
    """Detector and videos from a checkpoint and an experiment config dict (what env runners
    on other nodes receive)."""
    from dynvid.methods.lfs import LFSTask  # import circle: task -> adaptive -> env

    cfg = from_dict(ExperimentConfig, env_config["experiment"], where="env_config.experiment")
    task = LFSTask(cfg)
    model = load_detector_model(task, cfg, env_config["checkpoint"])  # the env builds its own videos
    videos = policy_videos(cfg, env_config.get("split"), env_config.get("num_videos"))
    return model, videos, cfg.lfs.focal


class InterleavingEnv(gym.Env):
    """Environment of Algorithm 1 (see the module docstring).

    ``env_config`` keys:
        detector + videos: an :class:`InterleavedDetector` and a dataset of whole videos
            (items ``(frames (T, 3, S, S), target)`` as ``data.DetectionClips`` in eval mode);
            or ``checkpoint`` + ``experiment`` (a detector checkpoint and its config dict)
            to load them, as remote env runners do.
        gamma: the speed reward γ (default 0.2).
        reward: ``eq2`` (default) or ``absolute`` (see ``lfs.reward``).
        horizon: frames each reward's losses cover, this one and the ``horizon − 1`` after it
            (default 1: Eq. 2; ``lfs.reward_horizon``).
        min_f0_gap: an f0 chosen fewer than this many frames after the last f0 run is refused:
            the step runs, and is rewarded, as f1 (``info["refused"]``; default 1: none;
            ``lfs.min_f0_gap``).
        episode_len: frames per episode (default 24; capped by the video length).
        history: length of η (default 20).
        focal: the classification loss of the rewards (default the detector's config).
        seed: base seed of the episode sampler (RLlib also calls ``reset(seed=…)``).
        cache_size: videos whose extractor features are kept between episodes (default 64).
        split, num_videos: with ``checkpoint``: the split's first ``num_videos`` videos (default
            the experiment's ``lfs.policy_split`` and ``lfs.policy_videos``: ``report.policy_videos``).
    """

    metadata: dict[str, Any] = {}

    def __init__(self, env_config: dict | None = None) -> None:
        super().__init__()
        env_config = dict(env_config or {})
        torch.set_num_threads(int(env_config.get("threads", 1)))
        if "detector" in env_config:
            self.model, self.videos = env_config["detector"], env_config["videos"]
            self.focal = bool(env_config.get("focal", False))
        elif "checkpoint" in env_config and "experiment" in env_config:
            self.model, self.videos, focal = _load_from_config(env_config)
            self.focal = bool(env_config.get("focal", focal))
        else:
            raise ValueError("InterleavingEnv needs env_config with 'detector' and 'videos', or 'checkpoint' and "
                             f"'experiment'; got keys {sorted(env_config)}")
        if not isinstance(self.model, InterleavedDetector):
            raise TypeError(f"env_config['detector'] must be an InterleavedDetector, got {type(self.model).__name__}")
        self.model.eval().requires_grad_(False)
        self.gamma = float(env_config.get("gamma", 0.2))
        reward = env_config.get("reward", "eq2")
        if reward not in REWARDS:
            raise ValueError(f"env_config['reward'] must be one of {sorted(REWARDS)}, got {reward!r}")
        self.reward = REWARDS[reward]
        self.horizon = int(env_config.get("horizon", 1))
        if self.horizon < 1:
            raise ValueError(f"env_config['horizon'] must be >= 1 frame, got {self.horizon}")
        self.min_f0_gap = int(env_config.get("min_f0_gap", 1))
        if self.min_f0_gap < 1:
            raise ValueError(f"env_config['min_f0_gap'] must be >= 1 frame, got {self.min_f0_gap}")
        self.episode_len = int(env_config.get("episode_len", 24))
        self.history = int(env_config.get("history", 20))
        if self.episode_len < 2:
            raise ValueError(f"episode_len must be >= 2 (frame 0 runs f0 in reset), got {self.episode_len}")
        S, g = self.model.memory.state_channels, self.model.grid
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4 * S * g * g + self.history,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._rng = np.random.default_rng(env_config.get("seed"))
        self.cache_size = int(env_config.get("cache_size", 64))
        self._cache: dict[int, tuple] = {}

    # ---- episode ------------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        index = int((options or {}).get("video", self._rng.integers(len(self.videos))))
        x0, x1, boxes, labels = self._video(index)
        T = len(x0)
        k = min(self.episode_len, T)
        start = int((options or {}).get("start", self._rng.integers(T - k + 1)))
        self._x = (x0[start:], x1[start:])  # the episode's frames and the video after them (horizon losses)
        self._boxes, self._labels = boxes[start:], labels[start:]
        self._len, self._t, self._last_f0 = k, 0, 0
        self._eta = torch.zeros(1, self.history)
        out, state = self.model.memory(self._x[F0][:1], self.model.memory.init_state(1, *self._x[F0].shape[-2:]))
        self._kept, self._prev = state, tuple(torch.zeros_like(s) for s in state)
        self._candidate = state
        self._eta = update_history(self._eta, torch.tensor([F0]))
        self.actions = [F0]
        return self._observation(), {"video": index, "start": start}

    def _video(self, index: int):
        """Both extractors' features of every frame of video ``index`` (they do not depend on
        the state), and its targets; kept for ``cache_size`` videos."""
        if index in self._cache:
            return self._cache[index]
        frames, target = self.videos[index]
        ones = torch.ones(len(frames), dtype=torch.long)
        item = (self.model.extract(frames, ones * F0), self.model.extract(frames, ones * F1),
                target["boxes"], target["labels"])
        if len(self._cache) < self.cache_size:
            self._cache[index] = item
        return item

    def _observation(self) -> np.ndarray:
        c, h = self._candidate
        obs = make_observation(c, h, *self._prev, self._eta)
        return obs[0].numpy().astype(np.float32)

    @torch.no_grad()
    def frame_losses(self, t: int, state) -> tuple[torch.Tensor, tuple]:
        """``L(D^i)`` of both extractors on frame ``t`` from ``state`` (with a horizon: each one's
        mean over frame ``t`` and the ``horizon − 1`` after it that the video has, carried on
        with f1), and their candidate states on frame ``t`` ``((c^0, c^1), (h^0, h^1))``
        stacked on dim 0."""
        end = min(len(self._x[F1]), t + self.horizon)
        losses, candidate = horizon_losses(self.model, self._x[F0][t:t + 1], self._x[F1][t:end][None], state,
                                           [self._boxes[t:end]], [self._labels[t:end]], focal=self.focal)
        return losses[0].mean(1), candidate

    @torch.no_grad()
    def step(self, action):
        a = int(action)
        if a not in (F0, F1):
            raise ValueError(f"action must be 0 (f0) or 1 (f1), got {action!r}")
        if self._t + 1 >= self._len:
            raise RuntimeError(f"the episode ended (truncated after {self._len} frames): call reset()")
        self._t += 1
        refused = a == F0 and self._t - self._last_f0 < self.min_f0_gap
        if refused:  # inside the gap after the last f0 run (lfs.min_f0_gap): f1 runs
            a = F1
        elif a == F0:
            self._last_f0 = self._t
        losses, candidate = self.frame_losses(self._t, self._kept)
        reward = self.reward(losses, a, self.gamma)
        chosen = tuple(s[a:a + 1] for s in candidate)
        self._prev, self._candidate = self._candidate, chosen
        if a == F0 or not self.model.skip_f1_update:
            self._kept = chosen
        self._eta = update_history(self._eta, torch.tensor([a]))
        self.actions.append(a)
        # an episode is a window of a longer video: its end is a time limit, not a terminal state
        truncated = self._t + 1 >= self._len
        info = {"loss_f0": float(losses[F0]), "loss_f1": float(losses[F1]), "f0": a == F0, "refused": refused}
        return self._observation(), reward, False, truncated, info
