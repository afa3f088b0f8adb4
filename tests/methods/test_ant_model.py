"""The ANT detector: key frames at full width, non-key frames through fusion + gates with
per-sample widths that run only the chosen channels."""

from __future__ import annotations

import pytest
import torch

from dynvid.methods.ant.model import ELASTIC, ANTDetector


def _detector():
    torch.manual_seed(0)
    return ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1)


def test_key_then_nonkey_frames_shapes_and_choices():
    m = _detector().eval()
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cls, box, outs = m.forward_static(frames)
        key = m.key_features(outs)
        cls2, box2, choices = m.forward_nonkey(torch.randn(2, 3, 64, 64), key)
    assert cls.shape == cls2.shape and box.shape == box2.shape
    assert choices.shape == (2, 6) and set(choices.flatten().tolist()) <= set(range(1, 7))


def test_backbone_drops_no_blocks_in_training():
    """The supernet's subnets distil from the largest on the same sample: no stochastic depth."""
    m = _detector()
    probs = [b.stochastic_depth.p for stage in m.backbone.features[1:8] for b in stage]
    assert len(probs) == 16 and set(probs) == {0.0}


def test_hard_path_runs_only_the_chosen_widths():
    m = _detector().eval()
    calls = []
    first = m.backbone.features[ELASTIC[0]][0]
    orig = first.forward
    first.forward = lambda x, hidden=None, rows=None, batch=None: calls.append((len(x), hidden)) or orig(x, hidden, rows, batch)
    x = torch.randn(3, first.cin, 16, 16)
    with torch.no_grad():  # per-sample choices: ratio 1, 6 and 3 (indices 0, 5, 2)
        out = m._run_stage(ELASTIC[0], x, torch.tensor([0, 5, 2]), None)
    assert sorted(calls) == sorted([(1, first.cin * 1), (1, first.cin * 6), (1, first.cin * 3)])
    ref = x[1:2]
    with torch.no_grad():
        for block in m.backbone.features[ELASTIC[0]]:
            ref = block(ref, block.cin * 6)
    assert torch.allclose(out[1:2], ref, atol=1e-6)


def test_gumbel_path_gives_gates_gradients():
    m = _detector().train()
    frames = torch.randn(2, 3, 64, 64)
    key = [k.detach() for k in m.key_features(m.forward_static(frames)[2])]
    cls, box, _ = m.forward_nonkey(torch.randn(2, 3, 64, 64), key, tau=1.0)
    (cls.sum() + box.sum()).backward()
    assert all(g.fc2.weight.grad is not None and g.fc2.weight.grad.abs().sum() > 0 for g in m.gates)
    assert all(f.depthwise[1].weight.grad.abs().sum() > 0 for f in m.fusions)  # the zero-init scale learns


def test_per_sample_cost_follows_each_samples_widths():
    from dynvid.backbones.efficientnet import mbconv_macs
    from dynvid.metrics.cost import CostMeter

    m = _detector().eval()
    stage = m.backbone.features[ELASTIC[0]]
    x = torch.randn(3, stage[0].cin, 16, 16)
    with torch.no_grad(), CostMeter(m, batch_size=3) as meter:
        m._run_stage(ELASTIC[0], x, torch.tensor([0, 5, 0]), None)

    def stage_macs(ratio):
        total, h = 0, 16
        for block in stage:
            total += mbconv_macs(block.cin, block.cout, ratio, block.kernel, block.stride, h, h)
            h = (h + 2 * ((block.kernel - 1) // 2) - block.kernel) // block.stride + 1
        return total

    assert meter.per_sample_macs.tolist() == [stage_macs(1), stage_macs(6), stage_macs(1)]


def test_width_statistics_are_each_ratios_recalibrated_statistics():
    import copy

    from dynvid.methods.ant.modules import recalibrate_bn

    torch.manual_seed(0)
    m = ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1)
    m.freeze_stem()
    stem_mean = m.backbone.features[0][1].running_mean.clone()
    batches = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # a few training steps' worth of drifted shared statistics
        m.train()
        for r in (1, 4, 6):
            m.forward_static(torch.randn(2, 3, 64, 64) * 3, (r,) * 6)
    reference = copy.deepcopy(m)
    assert not m.width_stats_ready
    m.calibrate_width_statistics(batches)
    assert m.width_stats_ready and m.training  # the train/eval mode is kept
    assert torch.equal(m.backbone.features[0][1].running_mean, stem_mean)  # the frozen stem is left alone
    m.eval()
    with torch.no_grad():
        for r in (1, 3, 6):
            recalibrate_bn(reference, lambda b: reference.forward_static(b, (r,) * 6), batches)
            ours = m.forward_static(x, (r,) * 6)[2][-1]
            theirs = reference.forward_static(x, (r,) * 6)[2][-1]
            assert torch.allclose(ours, theirs, atol=1e-4), r
    # in training, a width updates only its own row
    block = m.backbone.features[2][0]
    rows = block.width_mean.clone()
    m.train()
    m.forward_static(torch.randn(2, 3, 64, 64), (2,) * 6)
    changed = (block.width_mean != rows).any(-1)  # (BN, ratio)
    assert changed[:, 1].all() and not changed[:, [0, 2, 3, 4, 5]].any()


def test_training_forwards_count_their_ratio_once_statistics_are_per_ratio():
    m = _detector()
    block = m.backbone.features[ELASTIC[2]][0]
    m.train()
    m.forward_static(torch.randn(2, 3, 64, 64), (2,) * 6)  # shared statistics: nothing to count
    assert block.width_updates == [0] * 6
    m.calibrate_width_statistics([torch.randn(2, 3, 64, 64)])
    for ratios in ((2,) * 6, (2,) * 6, (1, 6, 3, 1, 1, 1)):
        m.forward_static(torch.randn(2, 3, 64, 64), ratios)
    assert block.width_updates == [0, 2, 1, 0, 0, 0]
    block(torch.randn(1, block.cin, 16, 16), block.cin * 4, torch.tensor([2]), 4)  # 1 row of a batch of 4
    assert block.width_updates == [0, 2, 1, 0.25, 0, 0]  # batches' worth of samples
    assert m.width_update_counts()[2].tolist() == [0, 2, 1, 0.25, 0, 0]  # the stage's, its first block's
    m.eval()
    with torch.no_grad():
        m.forward_static(torch.randn(1, 3, 64, 64), (2,) * 6)  # inference updates no statistics
    assert block.width_updates == [0, 2, 1, 0.25, 0, 0]
    assert "width_updates" not in "".join(m.state_dict())  # a count, not part of the checkpoint


def test_stale_width_statistics_are_recalibrated_and_the_tracked_ones_kept():
    import copy

    m = _detector()
    m.freeze_stem()
    batches = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    m.calibrate_width_statistics(batches)
    chosen = (1, 6, 2, 1, 1, 1)
    with torch.no_grad():  # the gates' subnet trains its statistics ...
        for _ in range(7):
            m.forward_static(torch.randn(2, 3, 64, 64) * 2, chosen)
        for p in m.backbone.parameters():  # ... while the shared weights move for every ratio
            p.mul_(1.3)
    reference = copy.deepcopy(m)
    reference.calibrate_width_statistics(batches)  # every ratio recalibrated on the moved weights
    before = {k: v.clone() for k, v in m.state_dict().items()}

    built = []  # the batches, as a function: built once, run for every stale ratio

    refreshed = m.refresh_stale_width_statistics(lambda: built.append(1) or batches)

    assert built == [1]
    assert refreshed == {s: [r for r in (1, 2, 3, 4, 5, 6) if r != c] for s, c in enumerate(chosen)}
    assert m.training  # the mode is kept
    after = m.state_dict()
    for name in before:  # every BatchNorm outside the per-ratio rows is as training left it
        if ".width_" not in name:
            assert torch.equal(after[name], before[name]), name
    for s, c in enumerate(chosen):
        stage, theirs_stage = m.backbone.features[ELASTIC[s]], reference.backbone.features[ELASTIC[s]]
        for i, (ours, theirs) in enumerate(zip(stage, theirs_stage)):
            old_mean, old_var = (before[f"backbone.features.{ELASTIC[s]}.{i}.{n}"] for n in ("width_mean", "width_var"))
            for k, r in enumerate((1, 2, 3, 4, 5, 6)):
                if r == c:  # the tracked row: untouched
                    assert torch.equal(ours.width_mean[:, k], old_mean[:, k])
                    assert torch.equal(ours.width_var[:, k], old_var[:, k])
                else:  # a stale row: what a full recalibration on the current weights gives
                    assert torch.allclose(ours.width_mean[:, k], theirs.width_mean[:, k], atol=1e-5), (s, r)
                    assert torch.allclose(ours.width_var[:, k], theirs.width_var[:, k], rtol=1e-4, atol=1e-5), (s, r)
                    assert not torch.allclose(ours.width_var[:, k], old_var[:, k])
            assert ours.width_updates == [0] * 6  # the next epoch counts afresh
    # the counts given decide (rank 0's under DDP): none stale, nothing changes
    with torch.no_grad():
        m.forward_static(torch.randn(2, 3, 64, 64) * 3, (1,) * 6)  # moves ratio 1's statistics
    kept = {k: v.clone() for k, v in m.state_dict().items()}

    def never():  # the batches, as a function: decoded only when a ratio is stale
        raise AssertionError("batches built with no ratio stale")

    assert m.refresh_stale_width_statistics(never, counts=torch.full((6, 6), 7.0)) == {}
    assert all(torch.equal(v, kept[k]) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="no per-ratio statistics"):
        _detector().refresh_stale_width_statistics(batches)


def test_fresh_updates_is_where_the_running_average_turns_over():
    from dynvid.methods.ant.modules import fresh_updates

    assert fresh_updates(0.1) == 7 and 0.9 ** 7 < 0.5 <= 0.9 ** 6
    assert fresh_updates(0.5) == 2  # 0.5 ** 1 is not below 0.5
    assert fresh_updates(1.0) == 1  # no memory: the last update is the average
    for bad in ((None, 0.5), (0.0, 0.5), (0.1, 1.0)):  # a cumulative average has no such count
        with pytest.raises(ValueError, match="momentum in"):
            fresh_updates(*bad)


def test_a_checkpoint_without_width_statistics_still_loads_strictly():
    m = ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1)
    old = {k: v for k, v in m.state_dict().items() if ".width_" not in k}
    fresh = ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1)
    fresh.load_state_dict(old)  # strict: the width statistics are filled in, not ready
    assert not fresh.width_stats_ready
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({k: v for k, v in old.items() if "head" not in k})


def test_nonkey_frames_from_projected_keys_equal_the_concatenated_fusion():
    m = _detector()
    with torch.no_grad():  # fusions that do something: not the zero-init residual
        for f in m.fusions:
            f.depthwise[1].weight.uniform_(0.5, 1.5)
            f.reduce[1].running_var.uniform_(0.5, 2.0)
    m.eval()
    key_frame, frame = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        key = m.key_features(m.forward_static(key_frame)[2])
        cls, box, choices = m.forward_nonkey(frame, key)
        cls2, box2, choices2 = m.forward_nonkey(frame, m.project_keys(key))
    assert torch.equal(choices, choices2)
    assert (cls - cls2).abs().max().item() <= 1e-4 and (box - box2).abs().max().item() <= 1e-4


# ---- inference-time BatchNorm folding (issue 23) -----------------------------------------------

def _trained_looking_detector(width_stats: bool = True) -> ANTDetector:
    """A detector whose BatchNorms (and per-ratio statistics) are far from the identity, so a
    fold that used the wrong statistics or skipped one would change the outputs."""
    m = _detector()
    g = torch.Generator().manual_seed(1)

    def u(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                u(mod.running_mean, -0.3, 0.3), u(mod.running_var, 0.5, 2.0)
                u(mod.weight, 0.5, 1.5), u(mod.bias, -0.2, 0.2)
        for f in m.fusions:  # fusions that do something: not the zero-init residual
            u(f.depthwise[1].weight, 0.5, 1.5)
        for block in m._elastic_blocks():
            u(block.width_mean, -0.3, 0.3), u(block.width_var, 0.5, 2.0)
            block.set_width_stats_ready(width_stats)
    return m.eval()


@pytest.mark.parametrize("width_stats", [True, False])
def test_folded_detector_computes_the_same_outputs_and_macs_without_batchnorm(width_stats, monkeypatch):
    import copy

    from torch.nn import functional as F

    from dynvid.backbones.fuse import fold_batchnorm
    from dynvid.detection.efficientdet import canvas_layout
    from dynvid.metrics.cost import CostMeter

    m = _trained_looking_detector(width_stats)
    folded = fold_batchnorm(copy.deepcopy(m))
    key_frame, frame = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    configs = [None, (1, 2, 3, 4, 5, 6), (6, 1, 6, 1, 2, 1)]

    def run(model):
        out = []
        with torch.no_grad(), CostMeter(model, batch_size=2) as meter:
            for r in configs:
                out.append(model.forward_static(frame, r)[:2])
            key = model.project_keys(model.key_features(model.forward_static(key_frame)[2]))
            cls, box, choices = model.forward_nonkey(frame, key, force=(3, 1, 4, 1, 5, 2))
            out.append((cls, box))
        return out, meter.per_sample_macs.tolist()

    expected, expected_macs = run(m)
    calls = []
    real = F.batch_norm
    monkeypatch.setattr(F, "batch_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    got, macs = run(folded)
    assert not calls  # no BatchNorm ran: every one was folded
    # the folded convolutions count as the ones they replace; the folded head runs its smaller
    # levels on one canvas and the meter counts the canvas's gap pixels too (what ran)
    head = folded.head
    layout = canvas_layout(folded.last_sizes[1:])  # every run here is at 64×64
    gap = layout.size[0] * layout.size[1] - sum(h * w for h, w in layout.sizes)
    c, repeats = head.cls_net["convs"][0][1].in_channels, len(head.cls_net["convs"])
    per_pixel = sum(repeats * (9 * c + c * c) + 9 * c + c * net["predict"][1].out_channels
                    for net in (head.cls_net, head.box_net))
    runs = len(configs) + 2  # the static configurations, the key frame, the non-key frame
    assert layout.size == (6, 7) and gap == 20  # P4–P7 at 64×64: 4×4, 2×2, 1×1, 1×1 (worked by hand)
    assert macs == [e + runs * gap * per_pixel for e in expected_macs]
    for (c1, b1), (c2, b2) in zip(expected, got):
        torch.testing.assert_close(c2, c1, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b2, b1, atol=1e-4, rtol=1e-4)
    run(m)  # the unfolded model still runs its BatchNorms: the counter sees them
    assert calls
    per_width = [n for n, _ in folded.named_buffers() if n.rpartition(".")[2].startswith("folded")]
    assert len(per_width) == len(m._elastic_blocks()) * 6 * 9  # every elastic block, 6 widths, 9 tensors
    assert not set(per_width) & set(folded.state_dict())  # per-width weights are not checkpointed


def test_folded_blocks_refuse_training_and_widths_they_do_not_hold():
    from dynvid.backbones.fuse import fold_batchnorm

    m = fold_batchnorm(_trained_looking_detector())
    block = m.backbone.features[ELASTIC[0]][0]
    x = torch.randn(1, block.cin, 16, 16)
    with pytest.raises(ValueError, match="hidden widths"):
        block(x, block.cin * 6 - 1)
    feats = [torch.randn(1, 16, 16 // 2 ** k, 16 // 2 ** k) for k in range(5)]
    m.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        block(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        m.head(feats)
    with pytest.raises(RuntimeError, match="eval mode"):
        m.neck.layers[0].top_down[0].conv(feats[0])


def test_a_folded_block_given_new_weights_or_statistics_runs_them_not_its_stale_fold():
    import copy

    from dynvid.backbones.fuse import fold_batchnorm

    m = _trained_looking_detector()
    block = m.backbone.features[ELASTIC[1]][0]
    x = torch.randn(2, block.cin, 16, 16)
    folded = copy.deepcopy(block)
    fold_batchnorm(folded)
    changed = copy.deepcopy(block)
    with torch.no_grad():
        changed.width_var.mul_(3.0)
        changed.block[0][1].weight.add_(0.5)
        expected = changed(x, block.cin * 2)
        folded.load_state_dict(changed.state_dict())
        torch.testing.assert_close(folded(x, block.cin * 2), expected, atol=1e-5, rtol=1e-4)
        fold_batchnorm(folded)  # folded again from the new weights; then the shared statistics instead
        folded.set_width_stats_ready(False)
        changed.set_width_stats_ready(False)
        torch.testing.assert_close(folded(x, block.cin * 2), changed(x, block.cin * 2), atol=1e-5, rtol=1e-4)


# ---- the channels-last inference copy (issue 23) -----------------------------------------------

def test_channels_last_inference_copy_computes_what_the_nchw_copy_computes():
    from dynvid.methods.ant.evaluation import AntMode, run_videos
    from dynvid.methods.ant.report import inference_copy

    m = _trained_looking_detector()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    nchw, last = inference_copy(m, channels_last=False), inference_copy(m)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # the model itself is untouched
    assert not any(isinstance(x, torch.nn.Identity) for x in m.modules())  # nor folded
    convs = [x for x in last.modules() if isinstance(x, torch.nn.Conv2d) and x.weight.shape[-1] > 1]
    assert convs and all(x.weight.is_contiguous(memory_format=torch.channels_last) for x in convs)
    g = torch.Generator().manual_seed(3)
    key_frame, frame = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        assert last.stem(frame).is_contiguous(memory_format=torch.channels_last)
        for r in (None, (6, 1, 6, 1, 2, 1)):
            for x, y in zip(nchw.forward_static(frame, r)[:2], last.forward_static(frame, r)[:2]):
                torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)
        keys = [model.project_keys(model.key_features(model.forward_static(key_frame)[2])) for model in (nchw, last)]
        a, b = nchw.forward_nonkey(frame, keys[0]), last.forward_nonkey(frame, keys[1])
        assert torch.equal(a[2], b[2])  # the gates chose the same widths
        for x, y in zip(a[:2], b[:2]):
            torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)
        still = key_frame[:1].expand(6, 3, 64, 64)
        videos = torch.stack([still + 0.05 * torch.randn(6, 3, 64, 64, generator=g),
                              torch.randn(6, 3, 64, 64, generator=g)])  # one still video, one cutting every frame
        a, b = run_videos(nchw, videos, AntMode(threshold=0.5)), run_videos(last, videos, AntMode(threshold=0.5))
    assert 1 <= a["keys"][0].sum() < a["keys"][1].sum()  # key and non-key frames, differing per video
    assert torch.equal(a["keys"], b["keys"]) and torch.equal(a["ratios"], b["ratios"])
    assert torch.equal(a["macs"], b["macs"])
