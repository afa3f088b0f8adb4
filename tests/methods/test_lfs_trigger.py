"""Looking Fast and Slow's label-free change trigger (``methods.lfs.trigger``): when it fires, what it
measures, and its threshold fit, checked against the detector run step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynvid.data.detection import build_detection_dataset, collate
from dynvid.data.synthetic import SceneConfig
from dynvid.methods.lfs.evaluation import FixedPolicy, run_videos
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector
from dynvid.methods.lfs.report import evenly_spaced
from dynvid.methods.lfs.trigger import ChangeTriggerPolicy, fit_threshold, memory_changes, relative_change

POST = dict(score_threshold=0.0, nms_iou=0.5, max_detections=10)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    model = InterleavedDetector(6, f0_size=64, f1_size=32, memory_input=16, state_channels=8, groups=4,
                                num_levels=2)
    long = build_detection_dataset("synthetic:detection", "val", size=64, clip_len=2, mode="eval", num_videos=2,
                                   scene=SceneConfig(height=64, width=64, num_frames=9, cuts=2.0))
    short = build_detection_dataset("synthetic:detection", "val", size=64, clip_len=2, mode="eval", num_videos=1,
                                    scene=SceneConfig(height=64, width=64, num_frames=5))
    # BatchNorm statistics of these frames: with the initial ones the extractors' features are ~1e-9 and the
    # memory output does not move from frame to frame
    frames = collate([long[0], long[1]])[0].flatten(0, 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average
    with torch.no_grad():
        for a in (F0, F1):
            model.extract(frames, torch.full((len(frames),), a))
    return model.eval(), [long[0], long[1]], short[0]


def test_relative_change_is_the_norm_ratio_per_row():
    torch.manual_seed(1)
    h, prev = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    expected = [float(torch.linalg.vector_norm(h[b] - prev[b]) / torch.linalg.vector_norm(prev[b])) for b in range(3)]
    assert relative_change(h, prev).tolist() == pytest.approx(expected, rel=1e-5)
    assert relative_change(prev, prev).abs().max() < 1e-6
    with pytest.raises(ValueError, match="one shape"):
        relative_change(h, prev[:2])


def _drive(policy, hs: list[torch.Tensor]) -> torch.Tensor:
    """Actions of ``policy`` over memory outputs ``hs[t] (B, S, g, g)``, driven as
    ``run_videos`` drives a policy (frame 0 runs f0; ``previous`` is the frame before's)."""
    B = hs[0].shape[0]
    policy.reset(B)
    a = torch.full((B,), F0)
    actions = [a]
    for t in range(len(hs) - 1):
        previous = (hs[t - 1], hs[t - 1]) if t else None
        a = policy.next_actions(t, (hs[t], hs[t]), previous, a)
        actions.append(a)
    return torch.stack(actions, 1)


def test_fires_after_a_jump_between_two_f1_frames_only():
    base = torch.ones(2, 4, 2, 2)
    # video 0 jumps at frame 3 (f1 → f1) and again at frame 5, right after the f0 the first jump caused
    hs = [base.clone() for _ in range(9)]
    for t in range(3, 9):
        hs[t][0] = 3.0
    for t in range(5, 9):
        hs[t][0] = 9.0
    actions = _drive(ChangeTriggerPolicy(0.5), hs)
    assert actions[0].tolist() == [F0, F1, F1, F1, F0, F1, F1, F1, F1]  # f1 at 4 → 5 is no steady pair
    assert actions[1].tolist() == [F0] + [F1] * 8
    # the same jump right after frame 0's f0 (frames 0 → 1) is an extractor switch: no fire
    hs = [base.clone() * (1 if t == 0 else 5) for t in range(5)]
    assert _drive(ChangeTriggerPolicy(0.5), hs).tolist() == [[F0] + [F1] * 4] * 2


def test_without_changes_it_is_the_fixed_schedule(parts):
    model, videos, _ = parts
    frames, _ = collate(videos)
    for tau in (0, 2, 3):
        trigger = run_videos(model, frames, ChangeTriggerPolicy(float("inf"), tau=tau), **POST)[1]
        assert torch.equal(trigger, run_videos(model, frames, FixedPolicy(tau), **POST)[1])


def test_first_fire_is_where_memory_changes_first_exceed_the_threshold(parts):
    model, videos, _ = parts
    checked = 0
    for video in videos:
        frames, targets = collate([video])
        changes = memory_changes(model, [(frames, targets)])  # frames 2, 3, …
        assert len(changes) == frames.shape[1] - 2
        values = np.sort(changes)
        for thr in ((values[1:] + values[:-1]) / 2)[np.diff(values) > 1e-4]:
            actions = run_videos(model, frames, ChangeTriggerPolicy(float(thr)), **POST)[1][0]
            first = int(np.argmax(changes > thr)) + 2  # the frame whose change exceeds it
            assert actions[:first + 2].tolist() == [F0] + [F1] * first + [F0]
            checked += 1
    assert checked >= 6


def test_memory_changes_skip_padded_frames(parts):
    model, videos, short = parts
    frames, targets = collate([videos[0], short])  # 9 and 5 frames: the short one padded
    assert frames.shape[1] == 9 and int(targets[1]["valid"].sum()) == 5
    changes = memory_changes(model, [(frames, targets)])
    assert len(changes) == (9 - 2) + (5 - 2)
    alone = memory_changes(model, [collate([short])])  # the short video's steps are among the batch's
    assert len(alone) == 3
    assert all(np.abs(changes - v).min() <= 1e-4 * max(1.0, v) for v in alone)


def test_fit_threshold_splits_the_changes_and_refuses_bad_input():
    changes = np.random.default_rng(0).exponential(size=1000)
    for q in (0.5, 0.9, 0.98):
        assert (changes > fit_threshold(changes, q)).mean() == pytest.approx(1 - q, abs=2e-3)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        fit_threshold(changes, 1.0)
    with pytest.raises(ValueError, match="no f1-to-f1 steps in the test split"):
        fit_threshold(np.zeros(0), 0.9, where="the test split")
    with pytest.raises(ValueError, match="tau"):
        ChangeTriggerPolicy(0.1, tau=-1)


def test_a_real_datasets_policy_videos_are_evenly_spaced_over_it():
    class Videos(list):
        collate_fn = staticmethod(collate)

    videos = Videos(range(10))
    picked = evenly_spaced(videos, 4)
    assert [picked[i] for i in range(len(picked))] == [0, 3, 6, 9] and picked.collate_fn is collate
    assert evenly_spaced(videos, 1)[0] == 0 and len(evenly_spaced(videos, 1)) == 1
    assert evenly_spaced(videos, 10) is videos and evenly_spaced(videos, 64) is videos
