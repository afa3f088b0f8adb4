"""RLlib RLModule for the Looking Fast and Slow interleaving policy (Liu et al., 2019, Sec. 3.4).

:class:`LfsDQNTorchRLModule` is RLlib's ``DefaultDQNTorchRLModule`` with its catalog-built
MLP replaced by :class:`~dynvid.methods.lfs.policy.QNetwork`: ``setup()`` sets

- ``self.encoder`` = the QNetwork's :class:`~dynvid.methods.lfs.policy.PolicyEncoder`
  (grouped conv, depthwise-separable conv, max pool, concat η), wrapped to take RLlib's
  batch dict and return ``{ENCODER_OUT: features}``;
- ``self.af`` = the QNetwork's last linear layer (the Q head; ``af`` is RLlib's name).

Everything else is the parent's: ``compute_q_values``, the double-Q ``forward_train``
(online net on ``obs`` and ``new_obs`` in one pass), ε-greedy ``forward_exploration``, and
the target networks, which RLlib's DQN learner creates with ``make_target_networks()``
(deep copies of ``encoder`` and ``af``) and syncs through ``get_target_network_pairs()``.

Supported: ``double_q`` True or False, ``dueling=False``, ``num_atoms=1`` (the paper's plain
DDQN); dueling or distributional heads raise a ``ValueError`` in ``setup()``.

``model_config`` keys: :data:`~dynvid.methods.lfs.policy.MODEL_CONFIG_KEYS`
(``state_channels`` and ``grid`` required), plus the keys RLlib's ``DQNConfig`` injects
(``double_q``, ``dueling``, ``epsilon``, ...); any other key is an error. Built outside a
``DQNConfig`` (``RLModuleSpec(...).build()``), the DQN keys default to :data:`DQN_DEFAULTS`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from dynvid.methods.lfs.policy import MODEL_CONFIG_KEYS, QNetwork, observation_size

__all__ = ["DQN_DEFAULTS", "LfsDQNTorchRLModule", "qnetwork_kwargs"]

DQN_DEFAULTS: dict[str, Any] = {"double_q": True, "dueling": False, "num_atoms": 1,
                                "epsilon": [(0, 1.0), (10_000, 0.05)]}
"""DQN settings used when the module is built without a ``DQNConfig`` (which sets them all)."""

_REQUIRED = ("state_channels", "grid")


@functools.cache
def _rllib_keys() -> frozenset[str]:
    """Keys RLlib itself may put into ``model_config``: DQN's auto-included settings and
    the fields of ``DefaultModelConfig``."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return frozenset(DQNConfig()._model_config_auto_includes) | {f.name for f in dataclasses.fields(DefaultModelConfig)}


def qnetwork_kwargs(model_config: dict) -> dict[str, Any]:
    """:class:`QNetwork` constructor arguments (without ``num_actions``) from an RLModule
    ``model_config``; missing required keys and unknown keys are errors naming the valid ones."""
    missing = [k for k in _REQUIRED if k not in model_config]
    if missing:
        raise ValueError(f"model_config lacks {missing}; the LFS policy needs {list(_REQUIRED)} "
                         f"(optional: {[k for k in MODEL_CONFIG_KEYS if k not in _REQUIRED]})")
    unknown = sorted(set(model_config) - set(MODEL_CONFIG_KEYS) - _rllib_keys())
    if unknown:
        raise ValueError(f"unknown model_config keys {unknown}; the LFS policy takes {list(MODEL_CONFIG_KEYS)} "
                         "(plus RLlib's own DQN keys)")
    return {k: model_config[k] for k in MODEL_CONFIG_KEYS if k in model_config}


class _BatchEncoder(nn.Module):
    """Adapts :class:`PolicyEncoder` (a tensor in, a tensor out) to RLlib's encoder
    interface (the batch dict in, ``{ENCODER_OUT: features}`` out)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: dict) -> dict:
        return {ENCODER_OUT: self.net(batch[Columns.OBS])}


class LfsDQNTorchRLModule(DefaultDQNTorchRLModule):
    """``DefaultDQNTorchRLModule`` whose Q-network is :class:`QNetwork` (see module docstring)."""

    @override(RLModule)
    def setup(self):
        # Replaces DefaultDQNRLModule.setup (which builds a catalog MLP); same attributes.
        cfg = {**DQN_DEFAULTS, **(self.model_config or {})}
        if cfg["dueling"]:
            raise ValueError("LfsDQNTorchRLModule has no dueling head (Sec. 3.4 uses plain DDQN): "
                             "set DQNConfig.training(dueling=False) (dqn_config does)")
        if cfg["num_atoms"] != 1:
            raise ValueError(f"LfsDQNTorchRLModule learns expected Q-values only: num_atoms must be 1, "
                             f"got {cfg['num_atoms']}")
        if not hasattr(self.action_space, "n"):
            raise ValueError(f"the LFS policy needs a Discrete action space, got {self.action_space}")
        self.uses_dueling = False
        self.uses_double_q = bool(cfg["double_q"])
        self.num_atoms = 1
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=cfg["epsilon"], framework=self.framework)

        kwargs = qnetwork_kwargs(self.model_config or {})
        qnet = QNetwork(**kwargs, num_actions=int(self.action_space.n))
        enc = qnet.encoder
        expected = (observation_size(enc.state_channels, enc.grid, enc.history),)
        if tuple(self.observation_space.shape) != expected:
            raise ValueError(f"observation space shape {self.observation_space.shape} does not match the LFS "
                             f"layout 4*S*g*g+H = {expected} for {kwargs}")
        self._qnet_kwargs = dict(qnet.kwargs)
        self.encoder = _BatchEncoder(qnet.encoder)
        self.af = qnet.head

    def to_qnetwork(self) -> QNetwork:
        """A standalone :class:`QNetwork` with this module's (online, not target) weights."""
        qnet = QNetwork(**self._qnet_kwargs)
        qnet.encoder.load_state_dict(self.encoder.net.state_dict())
        qnet.head.load_state_dict(self.af.state_dict())
        return qnet.eval()
