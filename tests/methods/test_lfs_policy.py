"""Looking Fast and Slow, adaptive interleaving policy (Sec. 3.4, Fig. 4): the observation
layout of Eq. 1, the Q-network's structure, the RLlib module (shapes, double Q, target
network), the DQN config and the export to a plain torch file. No Ray cluster needed here;
the DQN training smoke run is ``tests/engine/test_lfs_policy_dqn.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import pytest
import torch

from dynvid.methods.lfs.policy import (
    EXPORT_FORMAT,
    QNetwork,
    greedy_action,
    load_policy,
    make_observation,
    observation_size,
    observation_space,
    split_observation,
)

S, G, H = 4, 3, 20  # state channels, grid, history
QNET = "dynvid.methods.lfs.policy:QNetwork"  # how the Task names its Q-network to the engine


def _states(batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    c, h, c_prev, h_prev = (torch.randn(batch, S, G, G, generator=gen) for _ in range(4))
    eta = (torch.rand(batch, H, generator=gen) > 0.5).float()
    return c, h, c_prev, h_prev, eta


def _obs(batch: int = 5, seed: int = 0) -> torch.Tensor:
    return make_observation(*_states(batch, seed))


# ---- observation layout (Eq. 1) ------------------------------------------------------------------

def test_observation_size_and_space():
    assert observation_size(S, G, H) == 4 * S * G * G + H
    space = observation_space(S, G, H)
    assert space.shape == (4 * S * G * G + H,) and str(space.dtype) == "float32"
    assert space.contains(_obs(batch=1)[0].numpy())


def test_make_observation_block_order_is_eq1():
    c = torch.full((1, S, G, G), 1.0)
    h = torch.full((1, S, G, G), 2.0)
    c_prev = torch.full((1, S, G, G), 0.25)
    h_prev = torch.full((1, S, G, G), 1.5)
    eta = torch.arange(H, dtype=torch.float32)[None]
    obs = make_observation(c, h, c_prev, h_prev, eta)
    n = S * G * G
    assert obs.shape == (1, 4 * n + H)
    for k, value in enumerate([1.0, 2.0, 0.75, 0.5]):  # c, h, c − c_prev, h − h_prev
        assert torch.all(obs[0, k * n:(k + 1) * n] == value), k
    assert torch.equal(obs[0, 4 * n:], eta[0])


def test_split_make_round_trip():
    c, h, c_prev, h_prev, eta = _states(batch=3)
    obs = make_observation(c, h, c_prev, h_prev, eta)
    maps, eta_back = split_observation(obs, S, G, H)
    assert maps.shape == (3, 4 * S, G, G) and eta_back.shape == (3, H)
    assert torch.equal(maps[:, :S], c)
    assert torch.equal(maps[:, S:2 * S], h)
    assert torch.allclose(maps[:, 2 * S:3 * S], c - c_prev)
    assert torch.allclose(maps[:, 3 * S:], h - h_prev)
    assert torch.equal(eta_back, eta)
    assert torch.equal(make_observation(maps[:, :S], maps[:, S:2 * S], maps[:, :S] - maps[:, 2 * S:3 * S],
                                        maps[:, S:2 * S] - maps[:, 3 * S:], eta_back), obs)


def test_observation_shape_errors():
    with pytest.raises(ValueError, match="expected observations of shape"):
        split_observation(torch.zeros(2, observation_size(S, G, H) + 1), S, G, H)
    c, h, c_prev, h_prev, eta = _states()
    with pytest.raises(ValueError, match="c, h, c_prev, h_prev"):
        make_observation(c, h[:, :1], c_prev, h_prev, eta)
    with pytest.raises(ValueError, match="eta must be"):
        make_observation(c, h, c_prev, h_prev, eta[:1])


# ---- QNetwork (Fig. 4) ---------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [1, 3])
def test_qnetwork_forward_shapes_and_backward(grid):
    qnet = QNetwork(S, grid, H, num_actions=3, group_channels=8, hidden_channels=16)
    obs = torch.randn(7, observation_size(S, grid, H), requires_grad=True)
    q = qnet(obs)
    assert q.shape == (7, 3)
    q.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in qnet.parameters())
    assert greedy_action(qnet, obs.detach()).dtype == torch.long
    assert torch.equal(greedy_action(qnet, obs.detach()), q.argmax(-1))


def test_qnetwork_layers_and_state_dict_keys():
    qnet = QNetwork(S, G, H, group_channels=8, hidden_channels=16)
    enc = qnet.encoder
    assert enc.group_conv.groups == 4 and enc.group_conv.in_channels == 4 * S and enc.group_conv.out_channels == 32
    assert enc.depthwise.groups == enc.depthwise.in_channels == enc.depthwise.out_channels == 32
    assert enc.pointwise.kernel_size == (1, 1) and enc.pointwise.out_channels == 16
    assert qnet.head.in_features == 16 + H and qnet.head.out_features == 2
    assert sorted(qnet.state_dict()) == sorted(
        f"{layer}.{p}" for layer in ("encoder.group_conv", "encoder.depthwise", "encoder.pointwise", "head")
        for p in ("weight", "bias"))


@pytest.mark.parametrize("block", range(4))  # c_t, h_t, Δc, Δh
def test_grouped_conv_sees_one_state_map_per_group(block):
    """Perturbing only map ``block`` of Eq. 1 changes only the ``block``-th group of the
    grouped convolution's outputs."""
    qnet = QNetwork(S, G, H, group_channels=8, hidden_channels=16)
    x = _obs(batch=3)
    n = S * G * G
    y = x.clone()
    y[:, block * n:(block + 1) * n] += torch.randn(3, n)
    conv = qnet.encoder.group_conv
    with torch.no_grad():
        diff = (conv(split_observation(y, S, G, H)[0]) - conv(split_observation(x, S, G, H)[0])).abs()
    per_group = diff.reshape(3, 4, 8, G, G).amax(dim=(0, 2, 3, 4))  # (4,)
    assert per_group[block] > 1e-3
    assert torch.all(per_group[[k for k in range(4) if k != block]] == 0)


def test_action_history_enters_only_through_the_head():
    """η is concatenated after pooling: changing it moves the Q-values by exactly
    ``W_η · Δη`` (the last H columns of the head)."""
    qnet = QNetwork(S, G, H, group_channels=8, hidden_channels=16)
    x = _obs(batch=4)
    y = x.clone()
    delta = torch.zeros(4, H)
    delta[:, 3] = 1.0
    delta[:, 17] = -1.0
    y[:, -H:] += delta
    with torch.no_grad():
        expected = delta @ qnet.head.weight[:, -H:].T
        assert torch.allclose(qnet(y) - qnet(x), expected, atol=1e-6)
        assert torch.equal(qnet.encoder(y)[:, :16], qnet.encoder(x)[:, :16])


def test_global_max_pool_over_grid():
    """Features before the head are the spatial max of the pointwise conv's ReLU output."""
    qnet = QNetwork(S, G, H, group_channels=8, hidden_channels=16)
    enc = qnet.encoder
    x = _obs(batch=2)
    with torch.no_grad():
        maps, _ = split_observation(x, S, G, H)
        fmap = torch.relu(enc.pointwise(enc.depthwise(torch.relu(enc.group_conv(maps)))))
        assert torch.allclose(enc(x)[:, :16], fmap.flatten(2).max(dim=2).values)


def test_policy_module_does_not_import_rllib():
    code = ("import sys, dynvid.methods.lfs.policy as p; "
            "bad = [m for m in sys.modules if m.startswith('ray.rllib')]; "
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---- RLlib module ------------------------------------------------------------------------------

def _spec(**model_config):
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from dynvid.engine.rl_module import QNetworkDQNModule

    cfg = dict(q_network=QNET, state_channels=S, grid=G, history=H, group_channels=8, hidden_channels=16, num_atoms=1)
    cfg.update(model_config)
    return RLModuleSpec(module_class=QNetworkDQNModule, observation_space=observation_space(S, G, H),
                        action_space=gym.spaces.Discrete(2), model_config=cfg)


def test_rl_module_forward_inference_and_exploration():
    from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS

    module = _spec().build()
    x = _obs(batch=6)
    q = module.compute_q_values({"obs": x})[QF_PREDS]
    assert q.shape == (6, 2)
    qnet = module.to_q_network()
    assert isinstance(qnet, QNetwork)
    assert torch.allclose(qnet(x), q, atol=1e-6)
    actions = module.forward_inference({"obs": x})["actions"]
    assert actions.shape == (6,) and torch.equal(actions, q.argmax(-1))
    explore = module.forward_exploration({"obs": x}, t=0)["actions"]  # ε = 1 at t = 0: uniform
    assert explore.shape == (6,) and set(explore.tolist()) <= {0, 1}
    late = module.forward_exploration({"obs": x}, t=10**9)["actions"]  # ε = 0.05: mostly greedy
    assert late.shape == (6,)


@pytest.mark.parametrize("double_q", [True, False])
def test_rl_module_forward_train_and_target_network(double_q):
    from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
    from ray.rllib.core.learner.utils import update_target_network

    module = _spec(double_q=double_q).build()
    assert not hasattr(module, "_target_encoder")  # made by the learner, as in RLlib's DQN
    module.make_target_networks()
    pairs = module.get_target_network_pairs()
    assert [(a, b) for a, b in pairs] == [(module.encoder, module._target_encoder), (module.af, module._target_af)]
    assert all(not p.requires_grad for p in module._target_encoder.parameters())
    assert isinstance(module._target_encoder.net, type(module.encoder.net))

    x, x_next = _obs(batch=5, seed=1), _obs(batch=5, seed=2)
    out = module.forward_train({"obs": x, "new_obs": x_next})
    assert out[QF_PREDS].shape == (5, 2) and out[QF_TARGET_NEXT_PREDS].shape == (5, 2)
    assert (QF_NEXT_PREDS in out) == double_q
    online = module.to_q_network()
    with torch.no_grad():
        assert torch.allclose(out[QF_PREDS], online(x), atol=1e-6)
        if double_q:
            assert torch.allclose(out[QF_NEXT_PREDS], online(x_next), atol=1e-6)
        # Target starts as a copy; an online update leaves it behind until synced.
        assert torch.allclose(out[QF_TARGET_NEXT_PREDS], online(x_next), atol=1e-6)
        module.af.bias.add_(1.0)
        stale = module.forward_target({"obs": x_next})[QF_PREDS]
        assert torch.allclose(stale, online(x_next), atol=1e-6)
        for main, target in pairs:
            update_target_network(main_net=main, target_net=target, tau=1.0)
        synced = module.forward_target({"obs": x_next})[QF_PREDS]
        assert torch.allclose(synced, online(x_next) + 1.0, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(dueling=True), "no dueling head"),
    (dict(num_atoms=51), "num_atoms must be 1"),
    (dict(hiden_channels=8), r"unknown model_config keys \['hiden_channels'\]"),
    (dict(grid=5), r"does not match the layout \(\d+,\) that QNetwork"),
    (dict(q_network="dynvid.methods.lfs.policy"), "q_network must be 'module:Class'"),
])
def test_rl_module_rejects_unsupported_configs(bad, match):
    with pytest.raises(ValueError, match=match):
        _spec(**bad).build()


def test_rl_module_requires_state_channels():
    spec = _spec()
    del spec.model_config["state_channels"]
    with pytest.raises(ValueError, match=r"lacks \['state_channels'\]; QNetwork needs \['state_channels', 'grid'\]"):
        spec.build()


# ---- DQN config -------------------------------------------------------------------------------

class _ToyEnv(gym.Env):
    observation_space = observation_space(S, G, H)
    action_space = gym.spaces.Discrete(2)


def test_dqn_config_settings():
    from dynvid.engine.rl import dqn_config
    from dynvid.engine.rl_module import QNetworkDQNModule

    q = dict(state_channels=S, grid=G, history=H)
    cfg = dqn_config(_ToyEnv, {"x": 1}, q_network=QNET, q_kwargs=q, lr=1e-3, gamma=0.8,
                     epsilon=[(0, 1.0), (500, 0.1)], replay_capacity=1234, train_batch_size=16,
                     target_network_update_freq=77, num_steps_sampled_before_learning_starts=11, seed=3)
    cfg.validate()
    assert cfg.env is _ToyEnv and cfg.env_config == {"x": 1}
    assert cfg.double_q is True and cfg.dueling is False and cfg.num_atoms == 1
    assert cfg.lr == 1e-3 and cfg.gamma == 0.8 and cfg.epsilon == [(0, 1.0), (500, 0.1)]
    assert cfg.replay_buffer_config["type"] == "PrioritizedEpisodeReplayBuffer"
    assert cfg.replay_buffer_config["capacity"] == 1234
    assert cfg.train_batch_size_per_learner == 16 and cfg.target_network_update_freq == 77
    assert cfg.num_steps_sampled_before_learning_starts == 11 and cfg.seed == 3
    assert cfg.num_env_runners == 2 and cfg.num_cpus_per_env_runner <= 0.5 and cfg.num_learners == 0
    assert cfg.num_gpus_per_learner == 0  # the Q-network learns on the CPU unless asked
    gpu = dqn_config(_ToyEnv, q_network=QNET, q_kwargs=q, num_gpus_per_learner=1)
    assert gpu.num_gpus_per_learner == 1 and gpu.num_learners == 0  # the local learner takes the GPU
    spec = cfg.rl_module_spec
    assert spec.module_class is QNetworkDQNModule
    # RLlib merges its DQN keys into the module's model_config; ours are all there.
    model_config = cfg.model_config | spec.model_config
    assert {k: model_config[k] for k in ("q_network", "state_channels", "grid", "history")} == dict(q_network=QNET, **q)
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    module = RLModuleSpec(module_class=QNetworkDQNModule, observation_space=observation_space(S, G, H),
                          action_space=gym.spaces.Discrete(2), model_config=model_config).build()
    assert module.to_q_network().kwargs == dict(state_channels=S, grid=G, history=H, num_actions=2,
                                                group_channels=32, hidden_channels=64, kernel_size=3)
    assert model_config["double_q"] is True and model_config["dueling"] is False
    with pytest.raises(ValueError, match="replay_buffer must be one of"):
        dqn_config(_ToyEnv, q_network=QNET, q_kwargs=q, replay_buffer="ReplayBuffer")


# ---- export / load ----------------------------------------------------------------------------

def test_export_and_load_policy_round_trip(tmp_path):
    from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS

    from dynvid.engine.rl import export_q_network

    module = _spec().build()
    module.save_to_path(str(tmp_path / "module"))
    out = export_q_network(str(tmp_path / "module"), str(tmp_path / "out" / "policy.pt"), format=EXPORT_FORMAT)
    assert out == str(tmp_path / "out" / "policy.pt")
    assert os.listdir(tmp_path / "out") == ["policy.pt"]  # the temporary file was moved into place
    qnet = load_policy(out)
    assert isinstance(qnet, QNetwork) and not qnet.training
    assert qnet.kwargs == dict(state_channels=S, grid=G, history=H, num_actions=2, group_channels=8,
                               hidden_channels=16, kernel_size=3)
    x = _obs(batch=9)
    with torch.no_grad():
        assert torch.allclose(qnet(x), module.compute_q_values({"obs": x})[QF_PREDS], atol=1e-6)
    assert torch.equal(greedy_action(qnet, x), module.forward_inference({"obs": x})["actions"])


def test_load_policy_rejects_other_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(QNetwork(S, G, H).state_dict(), path)
    with pytest.raises(ValueError, match="not an exported LFS policy"):
        load_policy(str(path))
