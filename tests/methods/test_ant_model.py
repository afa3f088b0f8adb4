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
