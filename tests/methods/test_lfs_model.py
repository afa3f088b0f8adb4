"""Looking Fast and Slow: memory (Sec. 3.2), interleaved detector (Sec. 3.1), training schedule (Sec. 3.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.methods.lfs import LFSTask, random_actions
from dynvid.data.datasets import scene_config
from dynvid.data.detection import build_detection_dataset, collate, shifted_crops
from dynvid.methods.lfs.evaluation import evaluate_policies
from dynvid.methods.lfs.memory import ConvLSTM, GroupedConvLSTM, conv_lstm_macs, grouped_lstm_macs
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector, fixed_schedule
from dynvid.methods.lfs.trigger import ChangeTriggerPolicy, memory_changes
from dynvid.backbones.mobilenetv2 import MobileNetV2
from dynvid.backbones.pretrained import load_pretrained
from dynvid.metrics.cost import CostMeter

SMALL = dict(f0_size=64, f1_size=32, memory_input=32, state_channels=16, groups=4, num_levels=2)


def small_detector(**kw) -> InterleavedDetector:
    torch.manual_seed(0)
    return InterleavedDetector(3, **{**SMALL, **kw}).eval()


# ---- memory ---------------------------------------------------------------------------------

def test_grouped_lstm_output_is_state_and_bottleneck_per_group():
    torch.manual_seed(0)
    cell = GroupedConvLSTM(8, state_channels=12, groups=4).eval()
    x = torch.randn(2, 8, 3, 3)
    state = (torch.randn(2, 12, 3, 3), torch.randn(2, 12, 3, 3))
    out, (c, h) = cell(x, state)
    assert out.shape == (2, 24, 3, 3)
    s = 3
    for g in range(4):  # M = [^1h, ^1b, ..., ^Gh, ^Gb]
        assert torch.equal(out[:, 2 * s * g: 2 * s * g + s], h[:, s * g: s * (g + 1)])
    b = out.view(2, 4, 2, s, 3, 3)[:, :, 1].reshape(2, 12, 3, 3)
    assert (b >= 0).all() and (b <= 6).all()  # ReLU6 bottleneck


def test_grouped_lstm_groups_do_not_see_each_others_state():
    torch.manual_seed(0)
    cell = GroupedConvLSTM(4, state_channels=8, groups=4).eval()
    x = torch.randn(1, 4, 3, 3)
    c0, h0 = torch.randn(1, 8, 3, 3), torch.randn(1, 8, 3, 3)
    _, (c1, _) = cell(x, (c0, h0))
    h_changed = h0.clone()
    h_changed[:, 0:2] += 1.0  # group 0's slice only
    _, (c2, _) = cell(x, (c0, h_changed))
    assert not torch.allclose(c1[:, 0:2], c2[:, 0:2])
    assert torch.allclose(c1[:, 2:], c2[:, 2:])


def test_state_clipping():
    cell = GroupedConvLSTM(4, state_channels=8, groups=2, clip=1.0).eval()
    with torch.no_grad():
        cell.gates.bias.fill_(20.0)  # gates saturate: c grows by ~6 per step
    state = cell.init_state(1, 2, 2)
    x = torch.ones(1, 4, 2, 2)
    for _ in range(3):
        _, state = cell(x, state)
    assert state[0].abs().max() <= 1.0 + 1e-6
    unclipped = GroupedConvLSTM(4, state_channels=8, groups=2, clip=None).eval()
    unclipped.load_state_dict(cell.state_dict())
    state = unclipped.init_state(1, 2, 2)
    for _ in range(3):
        _, state = unclipped(x, state)
    assert state[0].max() > 6.0


def test_grouped_lstm_cost_matches_formula_and_is_far_below_convlstm():
    cin, S, G, g = 1024, 320, 4, 10  # Table 1: 1024-channel input, 640-channel output
    cell = GroupedConvLSTM(cin, S, G)
    with CostMeter(cell) as meter:
        cell(torch.zeros(1, cin, g, g), cell.init_state(1, g, g))
    assert meter.per_sample_macs.item() == grouped_lstm_macs(cin, S, G, g, g)
    plain = ConvLSTM(cin, 2 * S)  # same input, same 640-channel output
    with CostMeter(plain) as meter:
        plain(torch.zeros(1, cin, g, g), plain.init_state(1, g, g))
    assert meter.per_sample_macs.item() == conv_lstm_macs(cin, 2 * S, g, g)
    assert grouped_lstm_macs(cin, S, G, g, g) * 8 < conv_lstm_macs(cin, 2 * S, g, g)
    assert grouped_lstm_macs(cin, S, 4, g, g) < grouped_lstm_macs(cin, S, 1, g, g)  # groups cut the gate convs


def test_grouped_lstm_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups=3 must divide state_channels=8"):
        GroupedConvLSTM(4, 8, 3)


# ---- detector -------------------------------------------------------------------------------

def test_fixed_schedule():
    assert fixed_schedule(7, 2).tolist() == [0, 1, 1, 0, 1, 1, 0]
    assert fixed_schedule(3, 0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        fixed_schedule(3, -1)


def test_f1_does_not_update_the_state():
    m = small_detector()
    frames = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, _, _, kept0, cand0 = m.step(frames, F0)
        _, _, _, kept1, cand1 = m.step(torch.randn(1, 3, 64, 64), F1, kept0)
        _, _, _, kept2, _ = m.step(torch.randn(1, 3, 64, 64), F0, kept1)
    assert torch.equal(kept1[0], kept0[0]) and torch.equal(kept1[1], kept0[1])
    assert not torch.equal(cand1[1], kept0[1])  # the memory did compute a new state for f1's output
    assert not torch.equal(kept2[0], kept0[0])  # f0 writes it
    ablation = small_detector(skip_f1_update=False)
    ablation.load_state_dict(m.state_dict())
    with torch.no_grad():
        _, _, _, kept, cand = ablation.step(torch.randn(1, 3, 64, 64), F1, kept0)
    assert torch.equal(kept[0], cand[0])


def test_mixed_batch_runs_each_extractor_only_on_its_rows():
    m = small_detector()
    calls = {0: [], 1: []}
    for i in (0, 1):
        m.extractors[i].register_forward_hook(lambda mod, inp, out, i=i: calls[i].append(inp[0].shape[0]))
    frames = torch.randn(3, 3, 64, 64)
    actions = torch.tensor([F1, F0, F1])
    with torch.no_grad():
        x = m.extract(frames, actions)
        alone0 = m.extract(frames[1:2], torch.tensor([F0]))
        alone1 = m.extract(frames[2:3], torch.tensor([F1]))
    assert calls[0] == [1, 1] and calls[1] == [2, 1]
    assert torch.allclose(x[1:2], alone0, atol=1e-6) and torch.allclose(x[2:3], alone1, atol=1e-6)
    assert x.shape[-2:] == (2, 2)  # f0 at 64 (stride 32) and f1 at 32 (stride 16) align


def test_unrolled_forward_and_gradients_reach_both_extractors():
    m = small_detector().train()
    frames = torch.randn(2, 4, 3, 64, 64)
    cls, box, anchors = m(frames, torch.tensor([F0, F1, F0, F1]))
    assert cls.shape[:2] == (2, 4) and cls.shape[-1] == 3 and box.shape[-1] == 4
    assert anchors.shape == (cls.shape[2], 4)
    (cls.sum() + box.sum()).backward()
    for i in (0, 1):
        assert m.extractors[i][0][0].weight.grad.abs().sum() > 0
        assert m.projections[i][0].weight.grad.abs().sum() > 0


def test_frame_cost_is_the_path_that_ran():
    m = small_detector()
    costs = m.component_macs()
    assert costs["f0"] > 5 * costs["f1"] > 0
    with CostMeter(m) as meter, torch.no_grad():
        m.step(torch.randn(1, 3, 64, 64), F1)
    assert meter.per_sample_macs.item() == pytest.approx(costs["f1"] + costs["memory"] + costs["head"])
    macs = m.frame_macs(fixed_schedule(10, 4), costs)
    assert macs.sum().item() == pytest.approx(2 * costs["f0"] + 8 * costs["f1"] + 10 * (costs["memory"] + costs["head"]))


def test_paper_sizes_align_and_extractors_load_torchvision_keys(tmp_path):
    m = InterleavedDetector(3)  # f0 1.4 @ 320, f1 0.35 @ 160 (last stride removed)
    assert m.grid == 10
    ref = MobileNetV2(width_mult=0.35, last_stride=1)
    torch.save(ref.state_dict(), tmp_path / "f1.pt")
    # the trunk takes every one of its tensors from features.N…; the final conv and classifier stay out
    report = load_pretrained(m.extractors[1], str(tmp_path / "f1.pt"), prefix="features.", partial=True)
    assert sorted(report["loaded"]) == sorted(m.extractors[1].state_dict()) and not report["skipped"]
    assert torch.equal(m.extractors[1][3].conv[0][0].weight, ref.features[3].conv[0][0].weight)
    with pytest.raises(ValueError, match="twice f1_size"):
        InterleavedDetector(3, f0_size=320, f1_size=128)


# ---- training (Sec. 3.3) ----------------------------------------------------------------------

def test_random_actions_start_with_f0():
    g = torch.Generator().manual_seed(0)
    seqs = torch.stack([random_actions(6, g) for _ in range(400)])
    assert (seqs[:, 0] == F0).all()
    assert 0.4 < seqs[:, 1:].float().mean() < 0.6


def test_shifted_crops_move_boxes_with_the_crop():
    image = torch.zeros(3, 40, 40)
    image[:, 10:20, 10:20] = 1.0
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    frames, out_boxes, labels = shifted_crops(image, boxes, torch.tensor([2]), 6, torch.Generator().manual_seed(3))
    assert frames.shape == (6, 3, 40, 40)
    for f, b in zip(frames, out_boxes):
        x0, y0, x1, y1 = b[0].tolist()
        inside = f[0, int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
        assert inside.mean() > 0.9  # the box still covers the square
    assert any(not torch.allclose(out_boxes[0], b) for b in out_boxes[1:])  # the crop moved
    assert all(int(lab[0]) == 2 for lab in labels)


def _task(*extra):
    cfg = apply_overrides(ExperimentConfig(), ["data.dataset=synthetic:detection", "data.synthetic_height=64",
                                                "data.synthetic_width=64", "data.synthetic_frames=8",
                                                "data.synthetic_train_videos=4", "data.synthetic_val_videos=2",
                                                "lfs.f0_size=64", "lfs.f1_size=32", "lfs.memory_input=32",
                                                "lfs.state_channels=16", "lfs.num_levels=2", "lfs.unroll=3",
                                                "lfs.image_fraction=0.5", *extra])
    return LFSTask(cfg), cfg


def test_task_training_step_and_evaluation():
    task, cfg = _task()
    stage = task.stages[0]
    train, val = task.datasets(stage.config(cfg), stage)
    model = task.build_model(cfg, train.num_classes)
    frames, targets = collate([train[0], train[1]])
    assert frames.shape == (2, 3, 3, 64, 64) and len(targets) == 2
    loss, logs = task.training_step(model, (frames, targets), stage)
    loss.backward()
    assert torch.isfinite(loss) and logs["cls_loss"] > 0 and logs["loc_loss"] > 0
    loader = torch.utils.data.DataLoader(val, batch_size=2, collate_fn=collate)
    metrics = task.evaluate(model, loader, stage)
    assert metrics["num_samples"] == 2 and 0 <= metrics["AP50"] <= 1
    assert metrics["f0_fraction"] == pytest.approx(1 / 8)  # τ = 9 on 8 frames: f0 on frame 0 only
    costs = model.component_macs()
    assert metrics["gflops_avg"] * 1e9 == pytest.approx(
        (costs["f0"] + 7 * costs["f1"]) / 8 + costs["memory"] + costs["head"])


def test_task_evaluates_the_change_trigger_fitted_on_the_policy_videos():
    task, cfg = _task("lfs.trigger=0.2", "lfs.policy_split=test", "lfs.policy_videos=3", "data.synthetic_cuts=2")
    stage = task.stages[0]
    train, val = task.datasets(stage.config(cfg), stage)
    model = task.build_model(cfg, train.num_classes)
    # BatchNorm statistics of real frames, so that the memory output moves with the scene (at the initial
    # statistics the extractors' features are ~1e-9)
    frames = collate([val[0], val[1]])[0].flatten(0, 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for a in (F0, F1):
            model.extract(frames, torch.full((len(frames),), a))
    model.eval()
    loader = torch.utils.data.DataLoader(val, batch_size=2, collate_fn=collate)
    metrics = task.evaluate(model, loader, stage)
    held_out = build_detection_dataset("synthetic:detection", "test", size=64, clip_len=3, mode="eval", num_videos=3,
                                       scene=scene_config(cfg.data), content_seed=cfg.data.synthetic_seed)
    changes = memory_changes(model, torch.utils.data.DataLoader(held_out, batch_size=3, collate_fn=collate))
    assert len(changes) == 3 * (8 - 2)
    expected = evaluate_policies(model, loader, task.val_gt, [ChangeTriggerPolicy(float(np.quantile(changes, 0.2)))],
                                 score_threshold=cfg.lfs.score_threshold, nms_iou=cfg.lfs.nms_iou,
                                 max_detections=cfg.lfs.max_detections)
    assert metrics["f0_fraction"] == pytest.approx(next(iter(expected.values()))["f0_fraction"])
    assert metrics["f0_fraction"] > 1 / 8  # it fired: f0 beyond each video's first frame
    with pytest.raises(ValueError, match="needs the model"):
        task.policy()


def test_task_config_errors():
    with pytest.raises(ValueError, match="twice lfs.f1_size"):
        _task("lfs.f1_size=48")
    with pytest.raises(ValueError, match="image_fraction"):
        _task("lfs.image_fraction=1.5")
    with pytest.raises(ValueError, match="lfs.dqn_learner_gpus must be >= 0"):
        _task("lfs.dqn_learner_gpus=-1")
    with pytest.raises(ValueError, match=r"lfs.reward must be one of \['absolute', 'eq2'\], got 'map'"):
        _task("lfs.reward=map")
    with pytest.raises(ValueError, match=r"lfs.reward_horizon must be >= 1 frame \(1: Eq. 2\), got 0"):
        _task("lfs.reward_horizon=0")
    with pytest.raises(ValueError, match=r"lfs.min_f0_gap must be >= 1 frame \(1: no gap, the paper's policy\), got 0"):
        _task("lfs.min_f0_gap=0")
    with pytest.raises(ValueError, match="policy_split='holdout'.*train, val, test"):
        _task("lfs.policy_split=holdout")
    with pytest.raises(ValueError, match="dqn_training_intensity"):
        _task("lfs.dqn_training_intensity=0")
    with pytest.raises(ValueError, match="latency_fps"):
        _task("lfs.latency_fps=0")
    with pytest.raises(ValueError, match=r"lfs.trigger is a quantile .* in \(0, 1\); got 1.0"):
        _task("lfs.trigger=1.0")
    with pytest.raises(ValueError, match="two interleaving policies"):
        _task("lfs.trigger=0.9", "lfs.policy=p.pt")
    with pytest.raises(ValueError, match="lfs.trigger fits its threshold on the lfs.policy_split videos, here the "
                                         "validation split 'val'"):
        _task("lfs.trigger=0.9", "lfs.policy_split=val")
    task, cfg = _task("lfs.dqn_learner_gpus=1")  # a job's policy stage may train on a GPU learner
    with pytest.raises(ValueError, match="policy sweep trial reserves CPUs only"):
        task.policy_runner_bundles(cfg)  # a sweep's placement group has no GPU for it


def test_collate_pads_videos_of_different_lengths():
    short = (torch.zeros(2, 3, 8, 8), {"boxes": [torch.zeros(0, 4)] * 2, "labels": [torch.zeros(0, dtype=torch.long)] * 2,
                                        "image_ids": torch.tensor([1, 2]), "valid": torch.ones(2, dtype=torch.bool),
                                        "orig_sizes": torch.tensor([[8, 8]] * 2)})
    long = (torch.ones(4, 3, 8, 8), {"boxes": [torch.zeros(0, 4)] * 4, "labels": [torch.zeros(0, dtype=torch.long)] * 4,
                                      "image_ids": torch.tensor([5, 6, 7, 8]), "valid": torch.ones(4, dtype=torch.bool),
                                      "orig_sizes": torch.tensor([[8, 8]] * 4)})
    frames, targets = collate([short, long])
    assert frames.shape == (2, 4, 3, 8, 8)
    assert targets[0]["valid"].tolist() == [True, True, False, False]
    assert targets[0]["image_ids"].tolist() == [1, 2, 2, 2] and len(targets[0]["boxes"]) == 4
    assert targets[1]["valid"].all()


def test_coco_video_source_frames_and_image_clips(tmp_path):
    from dynvid.data.synth_writer import write_synthetic
    from dynvid.data.synthetic import SceneConfig
    from dynvid.data.detection import build_detection_dataset

    write_synthetic("detection", tmp_path, 3, cfg=SceneConfig(height=48, width=48, num_frames=6), val_fraction=0.34)
    train = build_detection_dataset(f"coco-vid:{tmp_path}", "train", size=64, clip_len=3, mode="train",
                                    image_fraction=1.0)  # every item a shifted-crop clip of one frame
    val = build_detection_dataset(f"coco-vid:{tmp_path}", "val", size=64, clip_len=3, mode="eval")
    frames, target = train[0]
    assert frames.shape == (3, 3, 64, 64)
    # normalized like the video clips: a crop of a [0, 1] image, not one divided by 255 twice
    assert frames.mean() > -1.5 and frames.max() > 0.5
    vframes, vtarget = val[0]
    assert vframes.shape == (6, 3, 64, 64) and vtarget["valid"].all()
    gt = val.source.to_coco_gt()
    assert set(vtarget["image_ids"].tolist()) <= {i["id"] for i in gt["images"]}
    assert train.num_classes == 6


@pytest.mark.parametrize("focal", ["true", "false"])
def test_training_step_reads_back_nothing_per_clip_or_frame_of_the_batch(focal):
    """Issue 20: the loss of every frame of every clip is one batched computation; the host
    reads left in a step (the extractor schedule's rows, the logged f0 fraction) do not grow
    with the batch (a per-frame loss loop read back ~6 values per frame)."""
    from dynvid.metrics.syncs import SyncCounter

    task, cfg = _task(f"lfs.focal={focal}")
    stage = task.stages[0]
    train, _ = task.datasets(stage.config(cfg), stage)
    model = task.build_model(cfg, train.num_classes)
    reads = {}
    for batch in (2, 4):
        frames, targets = collate([train[i] for i in range(batch)])
        task._actions_rng = None  # the same schedule for both batch sizes
        with SyncCounter() as s:
            loss, _ = task.training_step(model, (frames, targets), stage)
        assert torch.isfinite(loss)
        reads[batch] = s.reads
    assert reads[2] == reads[4] <= 2 * frames.shape[1], reads


def test_shifted_crops_keep_a_box_that_reaches_the_edge():
    """A box over the whole image is always in view: every frame of every draw keeps it (the
    resize's round-off must not push its edge past the canvas and drop it)."""
    for h, w in ((64, 96), (320, 320)):
        image = torch.rand(3, h, w)
        boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        for seed in range(40):
            _, out, labels = shifted_crops(image, boxes, torch.tensor([1]), 6, torch.Generator().manual_seed(seed))
            assert all(len(b) == 1 and len(lab) == 1 for b, lab in zip(out, labels)), (h, w, seed)
