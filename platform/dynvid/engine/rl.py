"""Policies trained with RLlib's Double DQN on a method's frozen model (RLlib's new API stack).

A method that learns a policy on one of its trained models (Looking Fast and Slow's
interleaving policy, Sec. 3.4) is a :class:`~dynvid.task.PolicyTask`. It supplies the pieces,
none of which imports Ray: the environment and its config, the Q-network (``"module:Class"``
and its arguments), the DQN settings, and the evaluation of an exported policy
(:class:`~dynvid.task.PolicySpec`, ``PolicyTask.evaluate_policy``). This module runs them:

1. :func:`train_policy` resolves the model (a checkpoint folder, ``s3://`` URI or
   ``models:/NAME@ALIAS``), starts or joins Ray, builds the ``DQNConfig``
   (:func:`dqn_config`: Double DQN, no dueling, prioritized episode replay, ε-greedy, the
   network as the RLModule's encoder + head, :mod:`dynvid.engine.rl_module`), trains
   (:func:`train_dqn`), exports the Q-network to a plain torch file
   (:func:`export_q_network`, read back without Ray) and hands it to the Task's evaluation (a
   policy its folder already holds for the same experiment is evaluated, not trained again);
2. :func:`train_policies` does that once per value of a knob (LFS's speed reward γ), each in
   its own folder and MLflow run, sharing what the Task evaluates once per model.

Policy sweeps (``kind: policy``, :mod:`dynvid.engine.sweep`) run :func:`train_policy` in
each trial. Resources: the learner runs in the driver process (``num_learners=0``, no Ray
CPU; ``num_gpus_per_learner`` puts it on a GPU) and each EnvRunner asks for
``num_cpus_per_env_runner`` CPUs (0.5 by default, so two EnvRunners take one CPU of a 2-CPU
local cluster).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dynvid.atomic import atomic_torch_save, atomic_write_bytes
from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, identity_config, to_dict
from dynvid.engine import tracking
from dynvid.engine.checkpoint import save_checkpoint
from dynvid.engine.identity import RunIdentity, dataset_identity, differences, file_sha256
from dynvid.engine.registry import load_registered_with_config
from dynvid.engine.storage import fetch_checkpoint, is_remote
from dynvid.task import PolicyTask, get_task

if TYPE_CHECKING:  # pragma: no cover
    from ray.rllib.algorithms.dqn import DQNConfig

__all__ = ["POLICY_FILE", "POLICY_RECORD", "dqn_config", "export_q_network", "policy_folder", "policy_identity",
           "train_dqn", "train_policies", "train_policy"]

POLICY_FILE = "policy.pt"
POLICY_RECORD = "policy_record.json"


def dqn_config(
    env: type | str,
    env_config: dict | None = None,
    *,
    q_network: str,
    q_kwargs: dict[str, Any],
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
    """An RLlib ``DQNConfig``: Double DQN with experience replay on the Q-network ``q_network``.

    Args:
        env: a gymnasium ``Env`` class (constructed by RLlib as ``env(env_config)``) or a name
            registered with ``ray.tune.register_env``.
        env_config: passed to the environment.
        q_network: ``"module:Class"`` of the Q-network (see :mod:`dynvid.engine.rl_module` for
            its contract); ``q_kwargs``: its constructor arguments except ``num_actions``.
        num_env_runners: remote EnvRunner actors sampling in parallel.
        num_cpus_per_env_runner: CPUs reserved per EnvRunner (the learner runs in the driver,
            no reservation).
        num_envs_per_env_runner: vectorised environments per EnvRunner.
        num_gpus_per_learner: GPUs of the local learner (0: the CPU).
        rollout_fragment_length: env steps per EnvRunner per sampling round.
        lr: Adam learning rate.
        gamma: discount.
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

    from dynvid.engine.rl_module import QNetworkDQNModule  # imports RLlib's torch modules

    replay_types = ("PrioritizedEpisodeReplayBuffer", "EpisodeReplayBuffer")
    if replay_buffer not in replay_types:
        raise ValueError(f"replay_buffer must be one of {replay_types}, got {replay_buffer!r}")
    buffer_cfg: dict[str, Any] = {"type": replay_buffer, "capacity": replay_capacity}
    if replay_buffer == "PrioritizedEpisodeReplayBuffer":
        buffer_cfg |= {"alpha": 0.6, "beta": 0.4}  # RLlib's (and Schaul et al.'s) defaults
    model_config = {"q_network": q_network, **q_kwargs}
    return (
        DQNConfig()
        .environment(env=env, env_config=dict(env_config or {}))
        .framework("torch")
        .env_runners(num_env_runners=num_env_runners, num_cpus_per_env_runner=num_cpus_per_env_runner,
                     num_envs_per_env_runner=num_envs_per_env_runner,
                     rollout_fragment_length=rollout_fragment_length)
        .learners(num_learners=0, num_gpus_per_learner=num_gpus_per_learner)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=QNetworkDQNModule, model_config=model_config))
        .training(
            double_q=True,
            dueling=False,  # plain Double DQN; the module rejects dueling heads
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


def train_dqn(config: DQNConfig, iterations: int, checkpoint_dir: str,
              progress: Callable[[str], Any] = print, label: str = "dqn") -> dict:
    """Build the algorithm, train ``iterations`` iterations, save, stop.

    Prints one ``progress`` line per iteration, ``[<label>] iter i/n ...`` (mean episode
    return over RLlib's smoothing window, env steps sampled so far, the learner's
    ``qf_loss``, the iteration's wall time; ``nan`` until the first episode ends / the first
    update).

    Returns:
        ``iterations``, ``episode_return_mean`` (per iteration), ``final_return_mean``,
        ``mean_return_mean`` (over iterations with a finished episode), ``env_steps_sampled``,
        ``checkpoint`` (the algorithm checkpoint, ``Algorithm.from_checkpoint``) and
        ``module_checkpoint`` (the learner's RLModule, for :func:`export_q_network`).
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
            progress(f"[{label}] iter {it}/{iterations}  return_mean={ret:.4f}  env_steps={steps}  "
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


def export_q_network(module_checkpoint_path: str, out_file: str, *, format: str,
                     metadata: dict | None = None) -> str:
    """Write the RLModule checkpoint's Q-network as a plain torch file and return its path.

    The file holds ``format`` (the method's tag, checked by its loader), ``q_network``
    (``"module:Class"``), ``kwargs`` (the network's constructor arguments), ``state_dict``
    (the network's keys; the target network left out) and ``metadata``; it is written to a
    temporary file in the same folder and moved into place (``os.replace``), so a reader
    never sees half a file.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    from dynvid.engine.rl_module import QNetworkDQNModule  # imports Ray

    module = RLModule.from_checkpoint(module_checkpoint_path)
    if not isinstance(module, QNetworkDQNModule):
        raise TypeError(f"{module_checkpoint_path} holds a {type(module).__name__}, "
                        f"not a {QNetworkDQNModule.__name__}")
    qnet = module.to_q_network()
    payload = {
        "format": format,
        "q_network": module._q_network,
        "kwargs": dict(qnet.kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in qnet.state_dict().items()},
        "metadata": {"source": os.path.abspath(module_checkpoint_path), **(metadata or {})},
    }
    out_file = os.path.abspath(out_file)
    atomic_torch_save(payload, out_file)
    return out_file


def _local_model(task: PolicyTask, model: str, out_dir: str, tracking_uri: str | None) -> str:
    """A local checkpoint folder of ``model``: a registered model is written out as one (in
    ``out_dir/model``), an ``s3://`` checkpoint fetched, a folder taken as it is."""

    if model.startswith("models:/"):
        module, info = load_registered_with_config(tracking_uri, model)
        local = os.path.join(out_dir, "model")
        save_checkpoint(local, module, config=info["config"],
                        metadata={"method": task.name, "stage": info["stage"], "source": model, "epoch": 0})
        return local
    return str(fetch_checkpoint(model))


def _finished_policy(out_dir: str, identity: dict) -> dict | None:
    """The DQN summary recorded with the policy ``out_dir`` already holds for ``identity``;
    None when it holds none (never trained, or stopped before its export). Raises ConfigError
    when its policy was trained as another experiment (see :func:`train_policy`)."""
    record_path = os.path.join(out_dir, POLICY_RECORD)
    if not os.path.isfile(record_path):
        return None
    try:
        record = json.loads(Path(record_path).read_text())
        recorded, summary = dict(record["identity"]), dict(record["dqn"])
        missing = {"final_return_mean", "env_steps_sampled"} - set(summary)  # what a reuse returns
        if missing:
            raise KeyError(f"dqn lacks {sorted(missing)}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{record_path}: not a policy record ({exc}); delete it to train the policy again") from exc
    changed = differences(recorded, identity)
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(f"{out_dir} holds a policy trained as another experiment ({shown}): give this one "
                          f"another train.name, or delete {record_path} to train it again")
    return summary if os.path.isfile(os.path.join(out_dir, POLICY_FILE)) else None


def policy_identity(task: PolicyTask, cfg: ExperimentConfig, local: str) -> RunIdentity:
    """The identity of training ``task``'s policy with ``cfg`` on the frozen model checkpoint
    folder ``local``: the config but where results go and the compute settings
    (:data:`dynvid.config.NOT_IN_RUN_IDENTITY`), the dataset's spec and every annotation file
    (the environment may read a split other than train and val), and the SHA-256 of the
    model's weights (``model.pt``): the same weights give the same identity whether they came
    from a folder, ``s3://`` or the registry."""
    return RunIdentity(method=task.name, config=identity_config(cfg), dataset=dataset_identity(cfg, every_split=True),
                       init_from=f"sha256:{file_sha256(Path(local) / 'model.pt')}")


def train_policy(task: PolicyTask, cfg: ExperimentConfig, model: str, out_dir: str,
                 tracking_uri: str | None = None, progress: Callable[[str], Any] = print,
                 shared: dict | None = None, local: str | None = None) -> dict:
    """Train ``task``'s policy on the frozen ``model`` (a checkpoint folder, ``s3://`` URI or
    ``models:/NAME@ALIAS``), export it to ``out_dir/policy.pt`` and evaluate it
    (``task.evaluate_policy``); returns the evaluation's metrics plus ``policy`` (the file)
    and the DQN's ``dqn_final_return`` and ``dqn_env_steps``. ``shared`` is handed to every
    evaluation of one :func:`train_policies` call (what the Task evaluates once per model).

    A policy ``out_dir`` already holds for the same experiment is reused, not trained again:
    the export writes ``out_dir/policy_record.json`` last, with the experiment's identity
    (:func:`policy_identity`) and the DQN's summary. A rerun evaluates the recorded policy; an
    interrupted one (no record) trains from the start; a record of another experiment in the
    folder (a ``train.name`` reused: a derived name holds the identity's digest) is refused,
    naming the settings that differ. ``local``: ``model`` as a local checkpoint folder, when
    the caller has it already (by default resolved here)."""
    from dynvid.engine.trainer import init_ray  # imports Ray Train: only where Ray work runs

    os.makedirs(out_dir, exist_ok=True)
    local = local or _local_model(task, model, out_dir, tracking_uri)
    identity = policy_identity(task, cfg, local).as_dict()
    path = os.path.join(os.path.abspath(out_dir), POLICY_FILE)
    summary = _finished_policy(out_dir, identity)
    if summary is not None:
        progress(f"[dynvid] {task.name} policy: {path} was trained for this experiment "
                 f"({summary['env_steps_sampled']} env steps); it is reused, nothing is trained")
    else:
        # env runners on other nodes read an s3:// model themselves; a local folder serves one node
        spec = task.policy_spec(cfg, model if is_remote(model) else local, local)
        init_ray()  # joins the running instance (a job's, a sweep trial's), if any
        config = dqn_config(spec.env, spec.env_config, q_network=spec.q_network, q_kwargs=spec.q_kwargs, **spec.dqn)
        progress(f"[dynvid] {task.name} policy: {spec.description}")
        summary = train_dqn(config, spec.iterations, os.path.join(out_dir, "rllib"), progress=progress,
                            label=spec.label)
        export_q_network(summary["module_checkpoint"], path, format=spec.export_format,
                         metadata={"method": task.name, **spec.metadata})
        record = {"identity": identity, "dqn": summary,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_bytes(os.path.join(out_dir, POLICY_RECORD), json.dumps(record, indent=2, default=str).encode())
    metrics = task.evaluate_policy(cfg, local, path, out_dir, {**summary, "model": model},
                                   {} if shared is None else shared, progress)
    return {**metrics, "dqn_final_return": summary["final_return_mean"],
            "dqn_env_steps": float(summary["env_steps_sampled"]), "policy": path}


def policy_folder(task: PolicyTask, cfg: ExperimentConfig, knob: str, value: Any, local: str) -> str:
    """The folder name of the policy :func:`train_policies` trains for ``knob=value`` on the
    model folder ``local``: ``<run name>-policy-<knob><value>``, the run name ``train.name`` or
    derived from the policy's identity (:func:`policy_identity`), so another config, dataset
    or model gets another folder."""
    run = cfg.run_name(task.name, policy_identity(task, cfg, local).digest, label=task.run_label(cfg))
    return f"{run}-policy-{knob.split('.')[-1]}{value:g}"


def train_policies(cfg: ExperimentConfig, method: str, model: str, knob: str, values: Sequence[Any], out_root: str,
                   progress: Callable[[str], Any] = print, shared: dict | None = None) -> dict:
    """One policy per value of ``knob`` (e.g. ``lfs.gamma``) on ``model``, each in
    ``out_root/<run name>-policy-<knob><value>`` and, when ``train.mlflow_tracking_uri`` is set,
    an MLflow run (params: the config, ``method``, ``stage=policy`` and ``frozen_model``, the
    checkpoint the policy was trained on) with its policy file and the evaluation's
    ``artifacts``. ``shared`` (or a new dict) goes to every evaluation. A policy already in
    its folder for the same experiment is reused (:func:`train_policy`). Returns
    ``{"rows": [metrics of each value], "shared": shared}``."""

    t = cfg.train
    uri = tracking.resolve_tracking_uri(t.mlflow_tracking_uri) if t.mlflow_tracking_uri else None
    shared = {} if shared is None else shared
    rows = []
    local = None
    for value in values:
        v_cfg = apply_overrides(cfg, [f"{knob}={value}"])
        task = get_task(method, v_cfg)
        if not isinstance(task, PolicyTask):
            raise ValueError(f"method {method!r} trains no policy (its Task is not a PolicyTask)")
        local = local or _local_model(task, model, out_root, uri)  # once: every value trains on it
        name = policy_folder(task, v_cfg, knob, value, local)
        out_dir = os.path.join(out_root, name)
        metrics = train_policy(task, v_cfg, model, out_dir, uri, progress, shared, local=local)
        artifacts = metrics.pop("artifacts", [])
        rows.append(metrics)
        if uri:
            run_id = tracking.start_job_run(uri, t.mlflow_experiment, name,
                                            {"method": method, "stage": "policy", **to_dict(v_cfg),
                                             "frozen_model": model})
            tracking.finish_job_run(uri, run_id, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                                    artifacts=[metrics["policy"], *artifacts])
    return {"rows": rows, "shared": shared}
