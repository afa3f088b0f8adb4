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

Training is the engine's (:mod:`dynvid.engine.rl`, RLlib's Double DQN): the Task hands it
this module's :class:`QNetwork` by name (``"dynvid.methods.lfs.policy:QNetwork"``), whose
``encoder`` and ``head`` become the RLModule's encoder and Q head, and the engine exports the
trained network to a plain torch file (weights + constructor kwargs + metadata, tagged
:data:`EXPORT_FORMAT`) that :func:`load_policy` reads without Ray. This module imports no Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym

__all__ = [
    "EXPORT_FORMAT",
    "PolicyEncoder",
    "QNetwork",
    "greedy_action",
    "load_policy",
    "make_observation",
    "observation_size",
    "observation_space",
    "split_observation",
]

NUM_MAPS = 4
"""The four state maps of Eq. 1: c_t, h_t, c_t − c_{t−1}, h_t − h_{t−1}."""

EXPORT_FORMAT = "dynvid.lfs.qnetwork/1"
"""Tag of the exported policy files (:func:`dynvid.engine.rl.export_q_network`)."""


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
        """Constructor arguments, stored with the weights in an exported policy."""

    @property
    def observation_shape(self) -> tuple[int]:
        """The flat observation this network reads, ``(4·S·g·g + H,)`` (checked by the engine's
        RLModule against the environment's space)."""
        e = self.encoder
        return (observation_size(e.state_channels, e.grid, e.history),)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, 4·S·g·g + H)`` flat observations → ``(B, m)`` Q-values."""
        return self.head(self.encoder(obs))


def greedy_action(qnet: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """``argmax_a Q(obs, a)`` as a ``LongTensor (B,)``; ties go to the lower index (f0)."""
    with torch.no_grad():
        return qnet(obs).argmax(dim=-1)


# ---- the exported policy ------------------------------------------------------------------------

def load_policy(path: str, map_location: str | torch.device = "cpu") -> QNetwork:
    """Rebuild the :class:`QNetwork` of an exported policy file (in ``eval()`` mode); needs no Ray."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an exported LFS policy (format {found!r}, expected {EXPORT_FORMAT!r})")
    qnet = QNetwork(**payload["kwargs"])
    qnet.load_state_dict(payload["state_dict"])  # strict: a key mismatch is an error
    return qnet.eval()
