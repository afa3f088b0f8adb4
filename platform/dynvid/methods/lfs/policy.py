"""The adaptive interleaving policy of Looking Fast and Slow (Liu et al., 2019, Sec. 3.4,
Fig. 4, Algorithm 1): a tiny Q-network over the LSTM state, trained with Double DQN on RLlib.

The policy decides which feature extractor runs on the *next* frame (action ``a`` runs
``f_a``: 0 = the slow f0, 1 = the fast f1). It sees the state of Eq. 1,

    S = (c_t, h_t, c_t − c_{t−1}, h_t − h_{t−1}, η_t),

passed to RLlib as one flat ``float32`` vector (the fixed contract with the environment,
``env.py``): the four ``(S, g, g)`` maps flattened in C order, one after the other, then
the action history ``η`` (length ``H`` = 20; ``η[k-1] = 1`` if f1 ran ``k`` steps ago).
:func:`make_observation` builds it and :func:`split_observation` takes it apart.

Network (:class:`QNetwork`, Sec. 3.4 / Fig. 4), top to bottom:

1. a grouped 3×3 convolution with the four maps of ``S`` as its four groups
   (``Conv2d(4S, 4·group_channels, groups=4)``) + ReLU: each map gets its own filters;
2. a depthwise-separable convolution: depthwise 3×3 (one filter per channel, linear),
   then pointwise 1×1 to ``hidden_channels`` + ReLU;
3. global max pooling over the ``g × g`` grid ("max pooling to remove the spatial
   dimensions");
4. concatenation of ``η`` and one fully connected layer to the ``m`` Q-values (logits: no
   activation on the output).

Choices (the paper gives no widths, kernel sizes or activations):

- ``group_channels = 32`` per group (128 after the grouped conv) and ``hidden_channels = 64``
  after the pointwise conv: with the paper's 320-channel state the grouped conv then holds
  ~369k of the ~378k weights, so the policy stays "ultralightweight" next to the detector,
  and 64 features against the 20 history bits keep the state the dominant input.
- 3×3 kernels with padding 1 (any grid, 1×1 included). No normalisation layers: Q-learning
  batches come from a replay buffer and RLlib runs the network in ``eval()`` for acting and
  ``train()`` for learning, so BatchNorm would make the two disagree.
- No activation between the depthwise and the pointwise conv (a separable conv is one
  linear map factorised in two; Xception-style).

RLlib plumbing (Ray 2.60, new API stack):

- :mod:`dynvid.methods.lfs.rl_module` holds the RLModule (a ``DefaultDQNTorchRLModule``
  whose encoder is :class:`PolicyEncoder` and whose Q head is the last linear layer, so
  RLlib's double-Q and target-network machinery is untouched). It is imported lazily:
  ``import dynvid.methods.lfs.policy`` does not import ``ray.rllib``, and neither does
  :func:`load_policy`.
- :func:`dqn_config` builds the ``DQNConfig`` (Double DQN, no dueling, prioritized episode
  replay, ε-greedy), :func:`train_policy` runs it and saves a checkpoint,
  :func:`export_policy` turns the RLModule checkpoint into a plain torch file (weights +
  constructor kwargs + metadata) that :func:`load_policy` reads without Ray.
- Resources: the learner runs in the driver process (``num_learners=0``, no Ray CPU) and
  each EnvRunner asks for ``num_cpus_per_env_runner = 0.5`` CPU, so the default two
  EnvRunners take one CPU of a 2-CPU local cluster.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym
    from ray.rllib.algorithms.dqn import DQNConfig

__all__ = [
    "MODEL_CONFIG_KEYS",
    "PolicyEncoder",
    "QNetwork",
    "dqn_config",
    "export_policy",
    "greedy_action",
    "load_policy",
    "make_observation",
    "observation_size",
    "observation_space",
    "split_observation",
    "train_policy",
]

NUM_MAPS = 4
"""The four state maps of Eq. 1: c_t, h_t, c_t − c_{t−1}, h_t − h_{t−1}."""

EXPORT_FORMAT = "dynvid.lfs.qnetwork/1"
"""Tag of the files written by :func:`export_policy`."""

MODEL_CONFIG_KEYS = ("state_channels", "grid", "history", "group_channels", "hidden_channels", "kernel_size")
"""The RLModule's own ``model_config`` keys: :class:`QNetwork`'s constructor arguments except
``num_actions`` (taken from the action space). ``state_channels`` and ``grid`` are required."""


# ---- the observation (Eq. 1) -------------------------------------------------------------------

def observation_size(state_channels: int, grid: int, history: int = 20) -> int:
    """Length of the flat observation: ``4·S·g·g + H``."""
    return NUM_MAPS * state_channels * grid * grid + history


def observation_space(state_channels: int, grid: int, history: int = 20) -> gym.spaces.Box:
    """The environment's observation space: an unbounded ``float32`` Box of
    :func:`observation_size`."""
    import gymnasium as gym
    import numpy as np

    return gym.spaces.Box(-np.inf, np.inf, shape=(observation_size(state_channels, grid, history),),
                          dtype=np.float32)


def make_observation(c: torch.Tensor, h: torch.Tensor, c_prev: torch.Tensor, h_prev: torch.Tensor,
                     eta: torch.Tensor) -> torch.Tensor:
    """The flat observation of Eq. 1 from the LSTM states of two consecutive steps.

    Args:
        c, h: current state ``(B, S, g, g)``.
        c_prev, h_prev: the state one step earlier, same shape.
        eta: action history ``(B, H)``; ``eta[:, k-1] = 1`` if f1 ran ``k`` steps ago.

    Returns:
        ``(B, 4·S·g·g + H)``: ``c, h, c − c_prev, h − h_prev`` flattened in C order, then ``eta``
        (in ``c``'s dtype).
    """
    if c.dim() != 4 or not (c.shape == h.shape == c_prev.shape == h_prev.shape):
        raise ValueError("c, h, c_prev, h_prev must all be (B, S, g, g); got "
                         f"{[tuple(t.shape) for t in (c, h, c_prev, h_prev)]}")
    if eta.dim() != 2 or eta.shape[0] != c.shape[0]:
        raise ValueError(f"eta must be (B, H) with B = {c.shape[0]}; got {tuple(eta.shape)}")
    maps = torch.cat([c, h, c - c_prev, h - h_prev], dim=1)  # (B, 4S, g, g): blocks in Eq. 1 order
    return torch.cat([maps.flatten(1), eta.to(c.dtype)], dim=1)


def split_observation(obs: torch.Tensor, state_channels: int, grid: int,
                      history: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`make_observation`: ``(B, 4·S·g·g + H)`` → ``maps (B, 4S, g, g)``
    (channels ``[kS, (k+1)S)`` hold map ``k`` of Eq. 1) and ``eta (B, H)``."""
    size = observation_size(state_channels, grid, history)
    if obs.dim() != 2 or obs.shape[1] != size:
        raise ValueError(f"expected observations of shape (B, {size}) for state_channels={state_channels}, "
                         f"grid={grid}, history={history}; got {tuple(obs.shape)}")
    n = size - history
    maps = obs[:, :n].reshape(obs.shape[0], NUM_MAPS * state_channels, grid, grid)
    return maps, obs[:, n:]


# ---- the Q-network (Sec. 3.4, Fig. 4) -----------------------------------------------------------

class PolicyEncoder(nn.Module):
    """Everything of :class:`QNetwork` before the last linear layer: flat observation →
    ``(B, hidden_channels + history)`` features (pooled state features, then ``η``).

    Args: as :class:`QNetwork`.
    """

    def __init__(self, state_channels: int, grid: int, history: int = 20, group_channels: int = 32,
                 hidden_channels: int = 64, kernel_size: int = 3):
        super().__init__()
        for name, value in (("state_channels", state_channels), ("grid", grid), ("group_channels", group_channels),
                            ("hidden_channels", hidden_channels), ("kernel_size", kernel_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size padding), got {kernel_size}")
        self.state_channels, self.grid, self.history = state_channels, grid, history
        width = NUM_MAPS * group_channels
        pad = kernel_size // 2
        # groups=4: group k sees exactly the S channels of map k of Eq. 1.
        self.group_conv = nn.Conv2d(NUM_MAPS * state_channels, width, kernel_size, padding=pad, groups=NUM_MAPS)
        self.depthwise = nn.Conv2d(width, width, kernel_size, padding=pad, groups=width)
        self.pointwise = nn.Conv2d(width, hidden_channels, 1)
        self.out_features = hidden_channels + history

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        maps, eta = split_observation(obs, self.state_channels, self.grid, self.history)
        x = torch.relu(self.group_conv(maps))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        x = torch.amax(x, dim=(2, 3))  # global max pool: (B, hidden_channels)
        return torch.cat([x, eta.to(x.dtype)], dim=1)


class QNetwork(nn.Module):
    """The interleaving policy's Q-network (Sec. 3.4, Fig. 4): grouped conv over the four
    state maps, depthwise-separable conv, global max pool, concat ``η``, linear → ``m``
    Q-values. State-dict keys: ``encoder.{group_conv,depthwise,pointwise}.*``, ``head.*``.

    Args:
        state_channels: ``S``, channels of the LSTM state (320 in the paper).
        grid: ``g``, side of the (square) state grid.
        history: ``H``, length of the action history ``η`` (20 in the paper).
        num_actions: ``m``, number of feature extractors to choose from.
        group_channels: output channels of the grouped conv per map (4× in total).
        hidden_channels: output channels of the pointwise conv (features before pooling).
        kernel_size: spatial kernel of the grouped and depthwise convs (odd).
    """

    def __init__(self, state_channels: int, grid: int, history: int = 20, num_actions: int = 2,
                 group_channels: int = 32, hidden_channels: int = 64, kernel_size: int = 3):
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.encoder = PolicyEncoder(state_channels, grid, history, group_channels, hidden_channels, kernel_size)
        self.head = nn.Linear(self.encoder.out_features, num_actions)
        self.kwargs = dict(state_channels=state_channels, grid=grid, history=history, num_actions=num_actions,
                           group_channels=group_channels, hidden_channels=hidden_channels, kernel_size=kernel_size)
        """Constructor arguments, stored with the weights by :func:`export_policy`."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, 4·S·g·g + H)`` flat observations → ``(B, m)`` Q-values."""
        return self.head(self.encoder(obs))


def greedy_action(qnet: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """``argmax_a Q(obs, a)`` as a ``LongTensor (B,)``; ties go to the lower index (f0)."""
    with torch.no_grad():
        return qnet(obs).argmax(dim=-1)


# ---- RLlib: config, training, export ------------------------------------------------------------

def dqn_config(
    env: type | str,
    env_config: dict | None = None,
    *,
    state_channels: int,
    grid: int,
    history: int = 20,
    group_channels: int = 32,
    hidden_channels: int = 64,
    kernel_size: int = 3,
    num_env_runners: int = 2,
    num_cpus_per_env_runner: float = 0.5,
    num_envs_per_env_runner: int = 1,
    num_gpus_per_learner: float = 0.0,
    rollout_fragment_length: int = 4,
    lr: float = 5e-4,
    gamma: float = 0.9,
    epsilon: Sequence[tuple[int, float]] = ((0, 1.0), (10_000, 0.05)),
    replay_buffer: str = "PrioritizedEpisodeReplayBuffer",
    replay_capacity: int = 50_000,
    train_batch_size: int = 32,
    target_network_update_freq: int = 500,
    num_steps_sampled_before_learning_starts: int = 1_000,
    n_step: int = 1,
    training_intensity: float | None = None,
    min_sample_timesteps_per_iteration: int = 1_000,
    seed: int | None = 0,
) -> DQNConfig:
    """An RLlib ``DQNConfig`` for the interleaving policy: Double DQN with experience replay
    (Sec. 3.4, [34]) on :class:`QNetwork`.

    Args:
        env: a gymnasium ``Env`` class (constructed by RLlib as ``env(env_config)``) or a name
            registered with ``ray.tune.register_env``.
        env_config: passed to the environment.
        state_channels, grid, history, group_channels, hidden_channels, kernel_size:
            the :class:`QNetwork` (``model_config`` of the RLModule).
        num_env_runners: remote EnvRunner actors sampling in parallel.
        num_cpus_per_env_runner: CPUs reserved per EnvRunner; 0.5 lets two EnvRunners fit
            in one CPU of a 2-CPU local cluster (the learner runs in the driver, no reservation).
        num_envs_per_env_runner: vectorised environments per EnvRunner.
        num_gpus_per_learner: GPUs of the local learner (0: the CPU).
        rollout_fragment_length: env steps per EnvRunner per sampling round.
        lr: Adam learning rate.
        gamma: discount. 0.9 (≈10-frame horizon): an extractor choice mostly affects the
            next few frames; the paper does not give its value.
        epsilon: ε-greedy schedule ``[(timestep, ε), ...]``, linearly interpolated.
        replay_buffer: ``"PrioritizedEpisodeReplayBuffer"`` or ``"EpisodeReplayBuffer"``.
        replay_capacity: replay buffer size in env steps.
        train_batch_size: transitions per gradient step.
        target_network_update_freq: env steps sampled between target-network syncs.
        num_steps_sampled_before_learning_starts: env steps collected before the first update.
        n_step: n-step return length.
        training_intensity: replayed / sampled steps ratio (``None``: one update per sampling
            round).
        min_sample_timesteps_per_iteration: env steps per ``algo.train()`` call (at least).
        seed: seeds the EnvRunners and the learner; ``None`` for no seeding.
    """
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from dynvid.methods.lfs.rl_module import LfsDQNTorchRLModule

    replay_types = ("PrioritizedEpisodeReplayBuffer", "EpisodeReplayBuffer")
    if replay_buffer not in replay_types:
        raise ValueError(f"replay_buffer must be one of {replay_types}, got {replay_buffer!r}")
    buffer_cfg: dict[str, Any] = {"type": replay_buffer, "capacity": replay_capacity}
    if replay_buffer == "PrioritizedEpisodeReplayBuffer":
        buffer_cfg |= {"alpha": 0.6, "beta": 0.4}  # RLlib's (and Schaul et al.'s) defaults
    model_config = dict(state_channels=state_channels, grid=grid, history=history, group_channels=group_channels,
                        hidden_channels=hidden_channels, kernel_size=kernel_size)
    return (
        DQNConfig()
        .environment(env=env, env_config=dict(env_config or {}))
        .framework("torch")
        .env_runners(num_env_runners=num_env_runners, num_cpus_per_env_runner=num_cpus_per_env_runner,
                     num_envs_per_env_runner=num_envs_per_env_runner,
                     rollout_fragment_length=rollout_fragment_length)
        .learners(num_learners=0, num_gpus_per_learner=num_gpus_per_learner)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=LfsDQNTorchRLModule, model_config=model_config))
        .training(
            double_q=True,
            dueling=False,  # Sec. 3.4 uses plain DDQN; the module rejects dueling heads
            num_atoms=1,
            lr=lr,
            gamma=gamma,
            epsilon=[tuple(p) for p in epsilon],
            replay_buffer_config=buffer_cfg,
            train_batch_size_per_learner=train_batch_size,
            target_network_update_freq=target_network_update_freq,
            num_steps_sampled_before_learning_starts=num_steps_sampled_before_learning_starts,
            n_step=n_step,
            training_intensity=training_intensity,
        )
        .reporting(min_sample_timesteps_per_iteration=min_sample_timesteps_per_iteration)
        .debugging(seed=seed)
    )


def train_policy(config: DQNConfig, iterations: int, checkpoint_dir: str,
                 progress: Callable[[str], Any] = print) -> dict:
    """Build the algorithm, train ``iterations`` iterations, save, stop.

    Prints one ``progress`` line per iteration (mean episode return over RLlib's smoothing
    window, env steps sampled so far, the learner's ``qf_loss``, the iteration's wall time;
    ``nan`` until the first episode ends / the first update).

    Returns:
        ``iterations``, ``episode_return_mean`` (per iteration), ``final_return_mean``,
        ``mean_return_mean`` (over iterations with a finished episode), ``env_steps_sampled``,
        ``checkpoint`` (the algorithm checkpoint, ``Algorithm.from_checkpoint``) and
        ``module_checkpoint`` (the learner's RLModule, for :func:`export_policy`).
    """
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    checkpoint_dir = os.path.abspath(checkpoint_dir)
    returns: list[float] = []
    steps = 0
    algo = config.build_algo()
    try:
        for it in range(1, iterations + 1):
            result = algo.train()
            runners = result.get(ENV_RUNNER_RESULTS, {})
            ret = float(runners.get(EPISODE_RETURN_MEAN, math.nan))  # absent until an episode ends
            steps = int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, steps))
            loss = float(result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {}).get("qf_loss", math.nan))
            returns.append(ret)
            progress(f"[lfs-dqn] iter {it}/{iterations}  return_mean={ret:.4f}  env_steps={steps}  "
                     f"qf_loss={loss:.5f}  time={float(result.get('time_this_iter_s', math.nan)):.1f}s")
        algo.save_to_path(checkpoint_dir)
    finally:
        algo.stop()
    finite = [r for r in returns if math.isfinite(r)]
    return {
        "iterations": iterations,
        "episode_return_mean": returns,
        "final_return_mean": returns[-1],
        "mean_return_mean": sum(finite) / len(finite) if finite else math.nan,
        "env_steps_sampled": steps,
        "checkpoint": checkpoint_dir,
        "module_checkpoint": f"{checkpoint_dir}/learner_group/learner/rl_module/default_policy",
    }


def export_policy(module_checkpoint_path: str, out_file: str) -> str:
    """Write the RLModule checkpoint's Q-network as a plain torch file and return its path.

    The file holds ``format``, ``kwargs`` (:class:`QNetwork`'s constructor arguments),
    ``state_dict`` (QNetwork keys, target network left out) and ``metadata``; it is written
    to a temporary file in the same folder and moved into place (``os.replace``), so a
    reader never sees half a file.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    from dynvid.methods.lfs.rl_module import LfsDQNTorchRLModule

    module = RLModule.from_checkpoint(module_checkpoint_path)
    if not isinstance(module, LfsDQNTorchRLModule):
        raise TypeError(f"{module_checkpoint_path} holds a {type(module).__name__}, "
                        f"not an {LfsDQNTorchRLModule.__name__}")
    qnet = module.to_qnetwork()
    payload = {
        "format": EXPORT_FORMAT,
        "kwargs": dict(qnet.kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in qnet.state_dict().items()},
        "metadata": {"source": os.path.abspath(module_checkpoint_path), "method": "lfs",
                     "paper": "Looking Fast and Slow (Liu et al., 2019), Sec. 3.4"},
    }
    out_file = os.path.abspath(out_file)
    folder = os.path.dirname(out_file)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, out_file)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out_file


def load_policy(path: str, map_location: str | torch.device = "cpu") -> QNetwork:
    """Rebuild the :class:`QNetwork` written by :func:`export_policy` (in ``eval()`` mode);
    needs no Ray."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an exported LFS policy (format {found!r}, expected {EXPORT_FORMAT!r})")
    qnet = QNetwork(**payload["kwargs"])
    qnet.load_state_dict(payload["state_dict"])  # strict: a key mismatch is an error
    return qnet.eval()
