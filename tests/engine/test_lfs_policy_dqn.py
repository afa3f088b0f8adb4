"""Looking Fast and Slow's interleaving policy (Sec. 3.4) trained with the engine's RLlib Double
DQN (dynvid.engine.rl) on the shared 2-CPU Ray cluster: two EnvRunners on a toy environment with the real observation
layout, a checkpoint, the export to a plain torch file, and inference without RLlib that
matches the RLModule."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides
from dynvid.engine.identity import run_identity
from dynvid.engine.rl import (
    POLICY_FILE,
    POLICY_RECORD,
    _finished_policy,
    dqn_config,
    export_q_network,
    policy_folder,
    policy_identity,
    train_dqn,
)
from dynvid.methods.lfs.policy import EXPORT_FORMAT, greedy_action, load_policy, make_observation, observation_space
from dynvid.task import get_task

S, G, H = 4, 2, 20
EPISODE = 10
ITERATIONS = 3  # 200 env steps each; ~25 s on two idle cores, EnvRunner start-up included


class SignEnv(gym.Env):
    """Each step shows an LFS-layout observation whose ``c_t`` map is filled with a random
    sign (±1, plus noise); action 1 earns 1 when the sign is +, action 0 when it is −.
    A policy that ignores the state earns 5 per 10-step episode, the right rule 10."""

    def __init__(self, config: dict | None = None):
        self.observation_space = observation_space(S, G, H)
        self.action_space = gym.spaces.Discrete(2)

    def _observe(self) -> np.ndarray:
        self.sign = float(self.np_random.choice([-1.0, 1.0]))
        noise = torch.from_numpy(self.np_random.standard_normal((4, 1, S, G, G))).float() * 0.1
        c, h = self.sign + noise[0], noise[1]
        obs = make_observation(c, h, c - noise[2], h - noise[3], torch.from_numpy(self.eta)[None])
        return obs[0].numpy().astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.eta = np.zeros(H, np.float32)
        return self._observe(), {}

    def step(self, action):
        reward = 1.0 if int(action) == int(self.sign > 0) else 0.0
        self.eta = np.roll(self.eta, 1)
        self.eta[0] = float(action == 1)  # η[k-1] = 1 if f1 ran k steps ago
        self.t += 1
        return self._observe(), reward, self.t >= EPISODE, False, {}


def _sign_observations(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` observations of :class:`SignEnv` and the action that earns the reward on each."""
    env = SignEnv()
    o, _ = env.reset(seed=seed)
    obs, labels = [], []
    for _ in range(n):  # past the episode end too: the observations stay valid
        obs.append(o)
        labels.append(int(env.sign > 0))
        o, *_ = env.step(int(env.sign > 0))
    return torch.from_numpy(np.stack(obs)), torch.tensor(labels)


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    # The EnvRunner actors cannot import this test module by name: ship SignEnv by value.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tmp = tmp_path_factory.mktemp("lfs-dqn")
    config = dqn_config(
        SignEnv, {}, q_network="dynvid.methods.lfs.policy:QNetwork", q_kwargs=dict(state_channels=S, grid=G, history=H),
        num_env_runners=2, num_cpus_per_env_runner=0.5,  # 1 of the cluster's 2 CPUs; learner in the driver
        rollout_fragment_length=8, min_sample_timesteps_per_iteration=200,
        num_steps_sampled_before_learning_starts=64, epsilon=[(0, 1.0), (300, 0.05)],
        target_network_update_freq=64, lr=1e-3, training_intensity=4, seed=0)
    lines: list[str] = []
    start = time.monotonic()
    try:
        summary = train_dqn(config, iterations=ITERATIONS, checkpoint_dir=str(tmp / "ckpt"), progress=lines.append,
                            label="lfs-dqn")
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    seconds = time.monotonic() - start
    print(*lines, f"[lfs-dqn] built, trained, saved and stopped in {seconds:.1f} s", sep="\n")
    return {"summary": summary, "lines": lines, "tmp": tmp}


def test_dqn_training_learns_and_reports(trained):
    summary, lines = trained["summary"], trained["lines"]
    assert len(lines) == ITERATIONS and all(line.startswith("[lfs-dqn] iter ") for line in lines)
    assert "qf_loss=nan" not in lines[-1]  # the learner updated
    assert summary["iterations"] == ITERATIONS and len(summary["episode_return_mean"]) == ITERATIONS
    assert summary["env_steps_sampled"] >= ITERATIONS * 200
    # Random play earns ~5 per episode; the learned rule with ε = 0.05 earns ~9.7 (seeded run).
    assert summary["final_return_mean"] > 8.0, summary
    assert np.isfinite(summary["mean_return_mean"])
    module_dir = Path(summary["module_checkpoint"])
    assert module_dir == Path(summary["checkpoint"]) / "learner_group/learner/rl_module/default_policy"
    # RLlib's DQN learner made target networks for our module (and checkpointed them).
    with open(module_dir / "module_state.pkl", "rb") as f:
        state = pickle.load(f)
    assert any(k.startswith("_target_encoder.net.group_conv") for k in state)
    assert any(k.startswith("_target_af.") for k in state)


def test_export_matches_rl_module_and_needs_no_rllib(trained):
    from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS
    from ray.rllib.core.rl_module.rl_module import RLModule

    module_dir = trained["summary"]["module_checkpoint"]
    out = export_q_network(module_dir, str(trained["tmp"] / "export" / "lfs_policy.pt"), format=EXPORT_FORMAT)
    qnet = load_policy(out)
    module = RLModule.from_checkpoint(module_dir)

    obs, labels = _sign_observations(64, seed=123)
    with torch.no_grad():
        q_plain = qnet(obs)
        q_rllib = module.compute_q_values({"obs": obs})[QF_PREDS]
    assert torch.allclose(q_plain, q_rllib, atol=1e-5)
    assert torch.equal(greedy_action(qnet, obs), module.forward_inference({"obs": obs})["actions"])
    # The exported weights are the trained ones: the greedy policy follows the sign rule.
    assert (greedy_action(qnet, obs) == labels).float().mean() >= 0.9

    # A fresh interpreter loads the file without importing ray.rllib and gets the same Q-values.
    obs_file, q_file = trained["tmp"] / "obs.pt", trained["tmp"] / "q.json"
    torch.save(obs, obs_file)
    code = (
        "import sys, json, torch\n"
        "from dynvid.methods.lfs.policy import load_policy\n"
        f"q = load_policy({str(out)!r})(torch.load({str(obs_file)!r}))\n"
        "assert not [m for m in sys.modules if m.startswith('ray.rllib')]\n"
        f"json.dump(q.tolist(), open({str(q_file)!r}, 'w'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.allclose(torch.tensor(json.loads(q_file.read_text())), q_rllib, atol=1e-5)


def test_a_policy_folder_is_reused_only_for_its_own_experiment(tmp_path):
    """``train_policy``'s reuse rule: a record and a policy file of the same identity (the
    summary comes back), no record or no policy file (an interrupted run: train again), a
    record of another experiment or a damaged one (refused, naming the setting or the file).
    The whole reuse runs in ``tests/engine/test_lfs_jobs.py``."""
    cfg = ExperimentConfig()
    mine = run_identity(cfg, "lfs", init_from="sha256:aa").as_dict()
    summary = {"final_return_mean": 3.5, "env_steps_sampled": 2000}
    assert _finished_policy(str(tmp_path), mine) is None  # nothing trained yet
    (tmp_path / POLICY_RECORD).write_text(json.dumps({"identity": mine, "dqn": summary}))
    assert _finished_policy(str(tmp_path), mine) is None  # the record without its policy file
    (tmp_path / POLICY_FILE).write_bytes(b"policy")
    assert _finished_policy(str(tmp_path), mine) == summary
    assert _finished_policy(str(tmp_path), run_identity(apply_overrides(cfg, ["train.name=other"]), "lfs",
                                                        init_from="sha256:aa").as_dict()) == summary  # not identity
    other = run_identity(apply_overrides(cfg, ["lfs.gamma=0.7"]), "lfs", init_from="sha256:aa").as_dict()
    with pytest.raises(ConfigError, match=r"another experiment \(config\.lfs\.gamma: .* -> 0\.7\)"):
        _finished_policy(str(tmp_path), other)
    retrained = run_identity(cfg, "lfs", init_from="sha256:bb").as_dict()  # the detector's weights changed
    with pytest.raises(ConfigError, match="init_from: sha256:aa -> sha256:bb"):
        _finished_policy(str(tmp_path), retrained)
    (tmp_path / POLICY_RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match=f"{POLICY_RECORD}: not a policy record"):
        _finished_policy(str(tmp_path), mine)


def test_a_policy_folder_is_named_by_the_whole_identity(tmp_path):
    """Without ``train.name`` another detector (its weights), config or value is another
    folder, so a rerun on a retrained detector trains anew instead of being refused; with a
    name the folder is the name's, and the record guards it."""
    cfg = ExperimentConfig()
    task = get_task("lfs", cfg)
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, weights in ((a, b"weights a"), (b, b"weights b")):
        folder.mkdir()
        (folder / "model.pt").write_bytes(weights)
    identity = policy_identity(task, cfg, str(a))
    assert identity.init_from == f"sha256:{hashlib.sha256(b'weights a').hexdigest()}"
    name = policy_folder(task, cfg, "lfs.gamma", 0.5, str(a))
    assert name.endswith(f"_h{identity.digest}-policy-gamma0.5")
    assert policy_folder(task, cfg, "lfs.gamma", 0.5, str(b)) != name
    assert policy_folder(task, apply_overrides(cfg, ["lfs.dqn_lr=0.01"]), "lfs.gamma", 0.5, str(a)) != name
    assert policy_folder(task, cfg, "lfs.gamma", 0.5, str(a)) == name  # the same experiment, the same folder
    named = apply_overrides(cfg, ["train.name=mine"])
    assert policy_folder(task, named, "lfs.gamma", 0.5, str(a)) == policy_folder(task, named, "lfs.gamma", 0.5,
                                                                                  str(b)) == "mine-policy-gamma0.5"
