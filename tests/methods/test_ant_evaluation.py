"""ANT evaluation modes over videos: the key-frame rule decides per video, non-key frames run
only the gates' widths, cost follows the path that ran, and sub-batches give the same
detections as single videos."""

from __future__ import annotations

import pytest
import torch

from dynvid.backbones.efficientnet import mbconv_macs
from dynvid.methods.ant.evaluation import (AntMode, NonTemporalMode, ReplayMode, StaticMode, amortized_latency,
                                          replay_modes, run_videos)
from dynvid.methods.ant.model import ANTDetector
from dynvid.metrics.cost import CostMeter

POST = dict(score_threshold=0.0, iou_threshold=0.5, max_detections=5)


def _model(temporal: bool = True) -> ANTDetector:
    torch.manual_seed(0)
    return ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1, temporal=temporal).eval()


def _force_ratio(model: ANTDetector, index: int) -> None:
    """Make every gate choose ratio ``index + 1`` whatever its input."""
    with torch.no_grad():
        for g in model.gates:
            g.fc2.weight.zero_()
            g.fc2.bias.fill_(-10.0)
            g.fc2.bias[index] = 10.0


def _videos() -> torch.Tensor:
    """Two videos of 5 frames: video 0 is still; video 1 cuts to another scene at frame 3."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 64, 64, generator=g), torch.randn(3, 64, 64, generator=g)
    v0 = a.expand(5, 3, 64, 64).clone()
    v1 = torch.stack([a, a, a, b, b])
    return torch.stack([v0, v1])


def test_key_frames_follow_the_stem_deviation_per_video():
    m = _model()
    out = run_videos(m, _videos(), AntMode(threshold=0.1))
    assert out["keys"].tolist() == [[True, False, False, False, False], [True, False, False, True, False]]
    # the fixed schedule of training: one key frame in key_every
    fixed = run_videos(m, _videos(), AntMode(threshold=None, key_every=2))
    assert fixed["keys"].tolist() == [[True, False, True, False, True]] * 2


def test_a_forced_ant_mode_keeps_ants_key_frames_and_runs_the_forced_subnet():
    m = _model()
    _force_ratio(m, 0)  # the gates would choose ratio 1 everywhere
    frames = _videos()
    free = run_videos(m, frames, AntMode(threshold=0.1))
    forced = run_videos(m, frames, AntMode(threshold=0.1, force=(2, 6, 1, 3, 5, 4)))
    assert torch.equal(forced["keys"], free["keys"])
    assert (forced["ratios"][~forced["keys"]] == torch.tensor([2, 6, 1, 3, 5, 4])).all()
    assert (forced["ratios"][forced["keys"]] == 6).all()
    assert (forced["macs"][~forced["keys"]] > free["macs"][~free["keys"]]).all()  # wider than the gates' choice


def test_nonkey_frames_run_only_the_chosen_width_and_cost_follows_the_path():
    m = _model()
    _force_ratio(m, 0)  # ratio 1 everywhere
    frames = _videos()
    out = run_videos(m, frames, AntMode(threshold=0.1))
    assert (out["ratios"][~out["keys"]] == 1).all() and (out["ratios"][out["keys"]] == 6).all()
    x = frames[:, 0]
    with CostMeter(m) as key_meter:  # a key frame: the whole network, then the fusions' key sides
        key = m.key_features(m.forward_static(x)[2])
        projected = m.project_keys(key)
    assert out["macs"][0, 0] == pytest.approx(float(key_meter.per_sample_macs[0]))
    with CostMeter(m) as meter:
        m.forward_nonkey(x, projected)
    assert out["macs"][0, 1] == pytest.approx(float(meter.per_sample_macs[0]))
    with CostMeter(m) as concatenated:  # the key side moved from every non-key frame to the key frame
        m.forward_nonkey(x, key)
    side = sum(f.channels ** 2 * k.shape[-2] * k.shape[-1] for f, k in zip(m.fusions, key))
    assert float(concatenated.per_sample_macs[0]) == pytest.approx(out["macs"][0, 1] + side)
    assert out["macs"][0, 1] < 0.75 * out["macs"][0, 0]
    # the first elastic block ran at hidden width 16 × 1, not 16 × 6
    first = m.backbone.features[2][0]
    assert float(meter.by_module["backbone.features.2.0"][0]) == mbconv_macs(
        first.cin, first.cout, 1, first.kernel, first.stride, 32, 32)


def test_a_batch_of_videos_matches_each_video_alone():
    m = _model()
    frames = _videos()
    both = run_videos(m, frames, AntMode(threshold=0.1), post=POST)
    for b in range(2):
        alone = run_videos(m, frames[b:b + 1], AntMode(threshold=0.1), post=POST)
        assert torch.equal(alone["keys"][0], both["keys"][b])
        assert torch.allclose(alone["macs"][0], both["macs"][b])
        for d1, d2 in zip(alone["dets"][0], both["dets"][b]):
            assert torch.allclose(d1["scores"], d2["scores"], atol=1e-4)


def test_static_and_nontemporal_modes_and_their_guards():
    m = _model()
    full = run_videos(m, _videos(), StaticMode())
    small = run_videos(m, _videos(), StaticMode((1,) * 6))
    assert full["keys"].all() and (small["macs"] < full["macs"]).all()
    with pytest.raises(ValueError, match="non-temporal ANT detector"):
        run_videos(m, _videos(), NonTemporalMode())
    nt = _model(temporal=False)
    assert nt.fusions is None
    _force_ratio(nt, 1)
    out = run_videos(nt, _videos(), NonTemporalMode())
    assert (out["ratios"] == 2).all() and not out["keys"].any()
    with pytest.raises(ValueError, match="needs a temporal"):
        run_videos(nt, _videos(), AntMode())


def test_amortized_latency_restores_threads():
    m = _model()
    before = torch.get_num_threads()
    r = amortized_latency(m, [_videos()[1]], AntMode(0.1), warmup=1)
    assert r["latency_ms"] > 0 and r["frames"] == 5 and r["threads"] == 1
    assert torch.get_num_threads() == before


def test_choice_distribution_counts_nonkey_frames_only():
    from dynvid.methods.ant.evaluation import choice_distribution

    ratios = torch.tensor([[6] * 6, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [2, 2, 3, 4, 5, 1]])
    keys = torch.tensor([True, False, False, False])
    d = choice_distribution(ratios, keys)
    assert d["configs"] == {"distinct": 2, "top_share": pytest.approx(2 / 3), "top": [1, 2, 3, 4, 5, 6]}
    assert d["ratio_share"][0] == pytest.approx([2 / 3, 1 / 3, 0, 0, 0, 0], abs=1e-3)  # stage 1: ratio 1 twice, 2 once
    assert d["ratio_share"][5] == pytest.approx([1 / 3, 0, 0, 0, 0, 2 / 3], abs=1e-3)
    assert d["mean_ratio_nonkey"][0] == pytest.approx(4 / 3, abs=1e-3)
    assert choice_distribution(ratios[:1], keys[:1])["configs"]["distinct"] == 0  # key frames only


@pytest.mark.parametrize("temporal", [True, False])
def test_replay_takes_the_recorded_decisions_at_another_size(temporal):
    """Issue 23's 512² check: a replay of a run is that run (same size); at another size it
    runs the recorded key frames and widths, not what the gates would choose there, and costs
    what the recording's path costs at that size."""
    m = _model(temporal)
    mode = AntMode(threshold=0.1) if temporal else NonTemporalMode()
    with torch.no_grad():  # the recording: stage s runs ratio s + 1 on every non-key frame
        for s, g in enumerate(m.gates):
            g.fc2.weight.zero_()
            g.fc2.bias.fill_(-10.0)
            g.fc2.bias[s] = 10.0
    videos = _videos()
    replays = replay_modes(m, list(videos), mode)
    assert [r.keys for r in replays] == ([(True, False, False, False, False), (True, False, False, True, False)]
                                         if temporal else [(False,) * 5] * 2)
    for v, r in zip(videos, replays):
        same, again = run_videos(m, v[None], mode, post=POST), run_videos(m, v[None], r, post=POST)
        assert torch.equal(same["keys"], again["keys"]) and torch.equal(same["ratios"], again["ratios"])
        assert torch.allclose(same["macs"], again["macs"])
        for d, e in zip(same["dets"][0], again["dets"][0]):
            assert torch.allclose(d["scores"], e["scores"], atol=1e-5)
    big = torch.nn.functional.interpolate(videos[1], size=(128, 128), mode="bilinear", align_corners=False)
    recorded_at_128 = run_videos(m, big[None], mode)  # the gates still choose ratio s + 1 here
    _force_ratio(m, 0)  # now the gates would choose ratio 1 …
    replayed = run_videos(m, big[None], replays[1])  # … but the replay runs the recorded ratios
    nonkey = ~replayed["keys"][0]
    assert nonkey.any() and (replayed["ratios"][0][nonkey] == torch.arange(1, 7)).all()
    assert torch.equal(replayed["keys"], torch.tensor([replays[1].keys]))
    # this video's key frames at 128² are those recorded at 64² (a scene cut), so the path and
    # its cost are the same
    assert torch.equal(replayed["keys"], recorded_at_128["keys"])
    assert torch.allclose(replayed["macs"], recorded_at_128["macs"])
    with pytest.raises(ValueError, match="recorded 5 frames"):
        run_videos(m, torch.cat([big, big])[None], replays[1])
    lat = amortized_latency(m, [big, big], [replays[1], replays[1]], warmup=1)
    assert lat["frames"] == 10
    with pytest.raises(ValueError, match="one video"):
        run_videos(m, torch.stack([big, big]), replays[1])
    with pytest.raises(ValueError, match="one ratio in"):
        m.forward_nonkey(big[:1], None if not temporal else m.project_keys(m.key_features(m.forward_static(big[:1])[2])),
                         force=(7, 1, 1, 1, 1, 1))
