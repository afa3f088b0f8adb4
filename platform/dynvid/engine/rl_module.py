"""An RLlib RLModule whose Q-network is a method's own torch module (RLlib's new API stack).

:class:`QNetworkDQNModule` is RLlib's ``DefaultDQNTorchRLModule`` with its catalog-built MLP
replaced by the network a method supplies (e.g. Looking Fast and Slow's
:class:`~dynvid.methods.lfs.policy.QNetwork`, Sec. 3.4). ``setup()`` builds
``factory(**kwargs, num_actions=n)`` and sets

- ``self.encoder`` = the network's ``encoder`` (observation → features), wrapped to take
  RLlib's batch dict and return ``{ENCODER_OUT: features}``;
- ``self.af`` = the network's ``head`` (features → Q-values; ``af`` is RLlib's name).

Everything else is the parent's: ``compute_q_values``, the double-Q ``forward_train``, ε-greedy
``forward_exploration``, and the target networks, which RLlib's DQN learner creates with
``make_target_networks()`` (deep copies of ``encoder`` and ``af``) and syncs through
``get_target_network_pairs()``.

The network's contract: constructor keyword arguments plus ``num_actions``; attributes
``encoder``, ``head`` and ``kwargs`` (its constructor arguments, stored with exported
weights); optionally ``observation_shape``, checked against the environment's space.

``model_config``: ``q_network`` (``"module:Class"`` of the network) and the network's
constructor arguments, plus the keys RLlib's ``DQNConfig`` injects (``double_q``,
``dueling``, ``epsilon``, ...); any other key is an error naming the valid ones, and so is a
missing required argument. Built outside a ``DQNConfig`` (``RLModuleSpec(...).build()``),
the DQN keys default to :data:`DQN_DEFAULTS`. Supported: ``double_q`` True or False,
``dueling=False``, ``num_atoms=1``; dueling or distributional heads raise a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any

from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

__all__ = ["DQN_DEFAULTS", "QNetworkDQNModule", "q_network_class", "q_network_kwargs"]

DQN_DEFAULTS: dict[str, Any] = {"double_q": True, "dueling": False, "num_atoms": 1,
                                "epsilon": [(0, 1.0), (10_000, 0.05)]}
"""DQN settings used when the module is built without a ``DQNConfig`` (which sets them all)."""


@functools.cache
def _rllib_keys() -> frozenset[str]:
    """Keys RLlib itself may put into ``model_config``: DQN's auto-included settings and
    the fields of ``DefaultModelConfig``."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return frozenset(DQNConfig()._model_config_auto_includes) | {f.name for f in dataclasses.fields(DefaultModelConfig)}


def q_network_class(target: str) -> type[nn.Module]:
    """The class named by ``"module:Class"``."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"q_network must be 'module:Class', got {target!r}")
    return getattr(importlib.import_module(module), name)


def q_network_kwargs(cls: type[nn.Module], model_config: dict) -> dict[str, Any]:
    """``cls``'s constructor arguments (without ``num_actions``) from an RLModule
    ``model_config``; missing required arguments and unknown keys are errors naming the valid ones."""
    params = {n: p for n, p in inspect.signature(cls).parameters.items()
              if n != "num_actions" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    missing = [k for k in required if k not in model_config]
    if missing:
        raise ValueError(f"model_config lacks {missing}; {cls.__name__} needs {required} "
                         f"(optional: {[k for k in params if k not in required]})")
    unknown = sorted(set(model_config) - set(params) - {"q_network"} - _rllib_keys())
    if unknown:
        raise ValueError(f"unknown model_config keys {unknown}; {cls.__name__} takes {list(params)} "
                         "(plus q_network and RLlib's own DQN keys)")
    return {k: model_config[k] for k in params if k in model_config}


class _BatchEncoder(nn.Module):
    """Adapts an encoder (a tensor in, a tensor out) to RLlib's encoder interface (the batch
    dict in, ``{ENCODER_OUT: features}`` out)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: dict) -> dict:
        return {ENCODER_OUT: self.net(batch[Columns.OBS])}


class QNetworkDQNModule(DefaultDQNTorchRLModule):
    """``DefaultDQNTorchRLModule`` whose Q-network is ``model_config["q_network"]`` (see the
    module docstring)."""

    @override(RLModule)
    def setup(self):
        # Replaces DefaultDQNRLModule.setup (which builds a catalog MLP); same attributes.
        cfg = {**DQN_DEFAULTS, **(self.model_config or {})}
        if cfg["dueling"]:
            raise ValueError("QNetworkDQNModule has no dueling head (plain Double DQN): "
                             "set DQNConfig.training(dueling=False) (dynvid.engine.rl.dqn_config does)")
        if cfg["num_atoms"] != 1:
            raise ValueError(f"QNetworkDQNModule learns expected Q-values only: num_atoms must be 1, "
                             f"got {cfg['num_atoms']}")
        if not hasattr(self.action_space, "n"):
            raise ValueError(f"QNetworkDQNModule needs a Discrete action space, got {self.action_space}")
        if "q_network" not in cfg:
            raise ValueError("model_config lacks 'q_network', the 'module:Class' of the Q-network")
        self.uses_dueling = False
        self.uses_double_q = bool(cfg["double_q"])
        self.num_atoms = 1
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=cfg["epsilon"], framework=self.framework)

        self._q_network = cfg["q_network"]
        cls = q_network_class(self._q_network)
        kwargs = q_network_kwargs(cls, self.model_config or {})
        qnet = cls(**kwargs, num_actions=int(self.action_space.n))
        expected = getattr(qnet, "observation_shape", None)
        if expected is not None and tuple(self.observation_space.shape) != tuple(expected):
            raise ValueError(f"observation space shape {self.observation_space.shape} does not match the "
                             f"layout {tuple(expected)} that {cls.__name__}({kwargs}) reads")
        self._qnet_kwargs = dict(qnet.kwargs)
        self.encoder = _BatchEncoder(qnet.encoder)
        self.af = qnet.head

    def to_q_network(self) -> nn.Module:
        """A standalone Q-network with this module's (online, not target) weights, in ``eval()``."""
        qnet = q_network_class(self._q_network)(**self._qnet_kwargs)
        qnet.encoder.load_state_dict(self.encoder.net.state_dict())
        qnet.head.load_state_dict(self.af.state_dict())
        return qnet.eval()
