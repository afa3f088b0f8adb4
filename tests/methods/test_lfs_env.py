"""Looking Fast and Slow's interleaving environment (Sec. 3.4, Eq. 1, Eq. 2, Algorithm 1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dynvid.detection.losses import detection_loss
from dynvid.data.detection import build_detection_dataset
from dynvid.methods.lfs.env import InterleavingEnv, absolute_reward, eq2_reward
from dynvid.methods.lfs.evaluation import FixedPolicy, LearnedPolicy, run_videos, update_history
from dynvid.methods.lfs.model import F0, F1
from dynvid.methods.lfs.policy import QNetwork, split_observation


def test_eq2_reward():
    # f0 is the better extractor here: choosing f1 costs the loss gap, minus nothing, plus γ
    assert eq2_reward([1.0, 1.5], F0, gamma=0.3) == pytest.approx(0.0)
    assert eq2_reward([1.0, 1.5], F1, gamma=0.3) == pytest.approx(-0.5 + 0.3)
    # f1 better: f0 is penalised by the gap and gets no speed reward
    assert eq2_reward([2.0, 1.2], F0, gamma=0.3) == pytest.approx(-0.8)
    assert eq2_reward([2.0, 1.2], F1, gamma=0.3) == pytest.approx(0.3)


def test_update_history():
    eta = torch.zeros(1, 4)
    eta = update_history(eta, torch.tensor([F1]))
    eta = update_history(eta, torch.tensor([F0]))
    eta = update_history(eta, torch.tensor([F1]))
    assert eta.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # f1 ran 1 and 3 steps ago


def test_env_step_reward_is_eq2_of_both_extractors(env_parts):
    model, videos = env_parts
    env = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 5, "seed": 0})
    obs, info = env.reset(options={"video": 1, "start": 2})
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    frames, target = videos[1]
    with torch.no_grad():  # the same frames by hand: f0 on frame 2, then each extractor on frame 3
        _, _, _, kept, cand0 = model.step(frames[2:3], F0)
        losses = []
        for i in (F0, F1):
            cls, box, anchors, _, _ = model.step(frames[3:4], i, kept)
            c, loc = detection_loss(cls[0], box[0], anchors, target["boxes"][3], target["labels"][3], focal=False)
            losses.append(float(c + loc))
    maps, eta = split_observation(torch.from_numpy(obs)[None], 8, 2, 20)
    assert torch.allclose(maps[0, :8], cand0[0][0], atol=1e-5)  # c_t of the f0 step
    assert eta[0].sum() == 0  # f0 ran: no f1 in the history
    obs2, reward, terminated, truncated, info = env.step(F1)
    assert reward == pytest.approx(min(losses) - losses[1] + 0.25, abs=1e-4)
    assert info["loss_f0"] == pytest.approx(losses[0], abs=1e-4)
    assert info["loss_f1"] == pytest.approx(losses[1], abs=1e-4)
    assert not terminated and not truncated
    _, eta = split_observation(torch.from_numpy(obs2)[None], 8, 2, 20)
    assert eta[0, 0] == 1  # f1 ran one step ago
    # f1 did not write the carried memory: it is still the f0 state
    assert torch.equal(env._kept[0], kept[0])


def test_env_horizon_reward_counts_what_each_choice_leaves_for_the_next_frames(env_parts):
    """lfs.reward_horizon: each branch's mean loss over the frame and the horizon − 1 frames
    after it, carried on with f1 from the state the branch left, past the episode's end inside
    the video; at the video's last frame it is Eq. 2 of that frame."""
    model, videos = env_parts
    model = copy.deepcopy(model)  # perturbed, so that the state moves the losses well above the tolerance
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    frames, target = videos[1]

    def branch_mean(t: int, a: int, state, horizon: int) -> float:
        total, seen = 0.0, 0
        with torch.no_grad():
            for k in range(t, min(len(frames), t + horizon)):
                cls, box, anchors, state, _ = model.step(frames[k:k + 1], a if k == t else F1, state)
                c, loc = detection_loss(cls[0], box[0], anchors, target["boxes"][k], target["labels"][k], focal=False)
                total, seen = total + float(c + loc), seen + 1
        return total / seen

    try:
        for skip in (True, False):  # the paper's rule (f1 keeps the last f0 state) and its ablation
            model.skip_f1_update = skip
            env = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 3,
                                   "horizon": 4})
            env.reset(options={"video": 1, "start": 2})  # frames 2-4; the horizon reads frames up to 7
            with torch.no_grad():
                _, _, _, kept, _ = model.step(frames[2:3], F0)
            means = [branch_mean(3, a, kept, 4) for a in (F0, F1)]
            assert abs(means[F0] - means[F1]) > 1e-2  # the branches differ: the test can tell them apart
            _, reward, _, _, info = env.step(F0)
            assert reward == pytest.approx(min(means) - means[F0], abs=1e-5)
            assert (info["loss_f0"], info["loss_f1"]) == pytest.approx(means, abs=1e-5)
            with torch.no_grad():
                _, _, _, kept, _ = model.step(frames[3:4], F0, kept)  # f0 ran: the state the next step starts from
            assert all(torch.allclose(e, k, atol=1e-5) for e, k in zip(env._kept, kept))  # f0's candidate kept
            means = [branch_mean(4, a, kept, 4) for a in (F0, F1)]
            _, reward, _, truncated, _ = env.step(F1)
            assert reward == pytest.approx(min(means) - means[F1] + 0.25, abs=1e-5) and truncated
            with pytest.raises(RuntimeError, match="episode ended"):
                env.step(F1)
    finally:
        model.skip_f1_update = True
    # on the video's last frame the horizon holds that frame only: Eq. 2
    rewards = []
    for horizon in (1, 4):
        env = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 3,
                               "horizon": horizon})
        env.reset(options={"video": 1, "start": len(frames) - 3})
        env.step(F1)
        rewards.append(env.step(F1)[1])
    assert rewards[0] == pytest.approx(rewards[1], abs=1e-6)
    with pytest.raises(ValueError, match="horizon"):
        InterleavingEnv({"detector": model, "videos": videos, "horizon": 0})


def test_env_episode_length_and_bad_actions(env_parts):
    model, videos = env_parts
    env = InterleavingEnv({"detector": model, "videos": videos, "episode_len": 4})
    env.reset(seed=3)
    steps = [env.step(a) for a in (F1, F0, F1)]
    assert [s[3] for s in steps] == [False, False, True]  # the window ends: truncated (time limit)
    assert not any(s[2] for s in steps)  # never terminal: the video goes on
    assert env.actions == [F0, F1, F0, F1]
    with pytest.raises(ValueError, match="action must be 0"):
        env.step(2)
    with pytest.raises(ValueError, match="needs env_config"):
        InterleavingEnv({"gamma": 0.1})


def constant_qnet(action: int) -> QNetwork:
    """A Q-network of the env's shapes that prefers ``action`` on every observation."""
    qnet = QNetwork(state_channels=8, grid=2, history=20)
    with torch.no_grad():
        for p in qnet.parameters():
            p.zero_()
        qnet.head.bias[action] = 1.0
    return qnet


def test_learned_policy_runs_inside_the_detector_without_rllib(env_parts):
    model, videos = env_parts
    qnet = constant_qnet(F1)
    frames = torch.stack([videos[0][0], videos[1][0]])
    fixed_dets, fixed_actions = run_videos(model, frames, FixedPolicy(3))
    assert fixed_actions[0].tolist() == [0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    learned = LearnedPolicy(qnet, history=20)
    dets, actions = run_videos(model, frames, learned)
    assert actions.shape == (2, 10) and actions[:, 0].eq(F0).all() and actions[:, 1:].eq(F1).all()
    with torch.no_grad():
        qnet.head.bias.copy_(torch.tensor([1.0, 0.0]))  # now always f0
    _, actions = run_videos(model, frames, learned)
    assert actions.eq(F0).all()
    with pytest.raises(ValueError, match="history of 20 steps, not 10"):
        LearnedPolicy(qnet, history=10)
    assert len(dets) == 2 and len(dets[0]) == 10


def test_min_f0_gap_refuses_f0_too_soon_after_f0_in_the_env_and_in_the_learned_policy(env_parts):
    """lfs.min_f0_gap = 3: an f0 chosen one or two frames after the last f0 run runs (and is
    rewarded) as f1; three frames after, f0 runs. The learned policy at inference obeys the
    same rule."""
    model, videos = env_parts
    gap = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 8, "min_f0_gap": 3})
    plain = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 8})
    for env in (gap, plain):
        env.reset(options={"video": 1, "start": 0})  # f0 on frame 0
    for t, (choice, runs) in enumerate([(F0, F1), (F0, F1), (F0, F0), (F1, F1), (F0, F1), (F1, F1), (F0, F0)], 1):
        _, reward, _, _, info = gap.step(choice)
        _, expected, _, _, plain_info = plain.step(runs)  # what ran, without the rule
        assert info["refused"] == (choice != runs) and info["f0"] == (runs == F0), t
        assert reward == pytest.approx(expected, abs=1e-6) and info["loss_f1"] == pytest.approx(plain_info["loss_f1"])
        assert torch.equal(gap._kept[0], plain._kept[0]), t
    assert gap.actions == [F0, F1, F1, F0, F1, F1, F1, F0]  # the history shows what ran
    with pytest.raises(ValueError, match=r"min_f0_gap'\] must be >= 1"):
        InterleavingEnv({"detector": model, "videos": videos, "min_f0_gap": 0})

    qnet = constant_qnet(F0)
    frames = torch.stack([videos[0][0], videos[1][0]])
    _, actions = run_videos(model, frames, LearnedPolicy(qnet, history=20, min_gap=3))
    assert actions.tolist() == [[0, 1, 1, 0, 1, 1, 0, 1, 1, 0]] * 2
    _, actions = run_videos(model, frames, LearnedPolicy(qnet, history=20))
    assert actions.eq(F0).all()  # no gap: the paper's policy
    with pytest.raises(ValueError, match="min_gap must be >= 1"):
        LearnedPolicy(qnet, min_gap=0)


def test_policy_env_reads_the_held_out_split(tmp_path):
    """lfs.policy_split and lfs.reward reach the env runners: their videos are the held-out
    split's, which share no video with the detector's training split."""
    from dynvid.config import ExperimentConfig, apply_overrides, to_dict
    from dynvid.engine.checkpoint import save_checkpoint
    from dynvid.methods.lfs import LFSTask

    cfg = apply_overrides(ExperimentConfig(), [
        "data.dataset=synthetic:detection", "data.synthetic_height=64", "data.synthetic_width=64",
        "data.synthetic_frames=6", "lfs.f0_size=64", "lfs.f1_size=32", "lfs.memory_input=16",
        "lfs.state_channels=8", "lfs.groups=4", "lfs.num_levels=2", "lfs.policy_videos=2", "lfs.policy_split=test",
        "lfs.dqn_training_intensity=16", "lfs.reward=absolute"])
    task = LFSTask(cfg)
    save_checkpoint(tmp_path / "det", task.build_model(cfg, 6), config=to_dict(cfg), metadata={"method": "lfs"})
    spec = task.policy_spec(cfg, str(tmp_path / "det"), str(tmp_path / "det"))
    assert spec.env_config["split"] == "test" and spec.dqn["training_intensity"] == 16
    env = InterleavingEnv(spec.env_config)
    assert env.reward is absolute_reward  # lfs.reward reaches the env runners too
    from dynvid.data.datasets import scene_config

    def split(name):  # built as the env builds its videos
        return build_detection_dataset("synthetic:detection", name, size=64, clip_len=cfg.lfs.unroll, mode="eval",
                                       num_videos=2, scene=scene_config(cfg.data), content_seed=cfg.data.synthetic_seed,
                                       seed=cfg.train.seed)

    train = split("train")
    assert len(env.videos) == 2
    assert torch.equal(env.videos[0][0], split("test")[0][0])
    for i in range(2):
        assert not torch.equal(env.videos[i][0], train[i][0])  # other videos than the detector's


def test_absolute_reward_drops_eq2s_minimum():
    # the same ranking of the two actions on one frame as Eq. 2, shifted by min_i L(D^i)
    for losses in ([1.0, 1.5], [2.0, 1.2]):
        for a in (F0, F1):
            assert absolute_reward(losses, a, gamma=0.3) == pytest.approx(eq2_reward(losses, a, 0.3) - min(losses))
    assert absolute_reward([2.0, 1.2], F1, gamma=0.3) == pytest.approx(-1.2 + 0.3)


def test_env_absolute_reward_and_bad_reward(env_parts):
    model, videos = env_parts
    rewards = {}
    for kind in ("eq2", "absolute"):
        env = InterleavingEnv({"detector": model, "videos": videos, "gamma": 0.25, "episode_len": 5, "seed": 0,
                               "reward": kind})
        env.reset(options={"video": 1, "start": 2})
        _, rewards[kind], _, _, info = env.step(F1)
    assert rewards["absolute"] == pytest.approx(-info["loss_f1"] + 0.25, abs=1e-6)
    assert rewards["eq2"] - rewards["absolute"] == pytest.approx(min(info["loss_f0"], info["loss_f1"]), abs=1e-6)
    with pytest.raises(ValueError, match="reward"):
        InterleavingEnv({"detector": model, "videos": videos, "reward": "mAP"})
