"""Score calibration of the interleaved detector (methods/lfs/calibration.py, issue 23)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.data.detection import collate
from dynvid.methods.lfs import LFSTask
from dynvid.methods.lfs.calibration import BernoulliPolicy, fit_score_calibration, platt_fit
from dynvid.methods.lfs.evaluation import FixedPolicy, run_videos
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector
from dynvid.metrics.detection import match_detections, video_detection_rows


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_platt_fit_recovers_the_logistic_model_it_samples_from():
    rng = np.random.default_rng(0)
    z = rng.normal(-1.0, 2.0, 40000)
    y = rng.random(z.shape) < _sigmoid(0.6 * z + 1.3)
    a, b = platt_fit(z, y, prior=0.0)
    assert a == pytest.approx(0.6, abs=0.05) and b == pytest.approx(1.3, abs=0.08)
    assert platt_fit(np.zeros(0), np.zeros(0)) == (1.0, 0.0)  # nothing to fit: the identity
    a, b = platt_fit(z[:50], np.zeros(50), prior=1.0)  # one class only, held by a strong prior near (1, 0)
    assert np.isfinite([a, b]).all() and abs(a - 1) < 0.5 and -3 < b < 0
    with pytest.raises(ValueError, match="1-D and of one length"):
        platt_fit(np.zeros(3), np.zeros(4))


def _detector(num_classes=3) -> InterleavedDetector:
    torch.manual_seed(0)
    return InterleavedDetector(num_classes, f0_size=64, f1_size=32, memory_input=16, state_channels=8, groups=4,
                               num_levels=2).eval()


def test_calibration_maps_each_detections_score_by_its_extractor_and_class_and_checkpoints_keep_it():
    m = _detector()
    assert not m.calibrated
    cal = torch.tensor([[[2.0, 1.0, 0.5], [0.1, -0.2, 0.3]], [[0.5, 3.0, 1.0], [-1.0, 0.0, 2.0]]])
    with torch.no_grad():
        m.score_calibration.copy_(cal)
    assert m.calibrated
    dets = {"boxes": torch.rand(4, 4), "scores": torch.tensor([0.9, 0.6, 0.3, 0.1]),
            "labels": torch.tensor([0, 2, 1, 2])}
    for extractor in (F0, F1):
        out = m.calibrate_detections(dets, extractor)
        a, b = cal[extractor, 0, dets["labels"]], cal[extractor, 1, dets["labels"]]
        want = torch.sigmoid(a * torch.logit(dets["scores"]) + b)
        order = torch.argsort(want, descending=True)
        assert torch.allclose(out["scores"], want[order], atol=1e-6)  # best first again
        assert torch.equal(out["labels"], dets["labels"][order]) and torch.equal(out["boxes"], dets["boxes"][order])
    # saved and loaded with the weights; a state dict from before calibration existed loads the identity
    other = _detector()
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.score_calibration, cal)
    old = {k: v for k, v in m.state_dict().items() if k != "score_calibration"}
    other.load_state_dict(old)
    assert not other.calibrated
    assert torch.allclose(other.calibrate_detections(dets, F1)["scores"], dets["scores"], atol=1e-6)


def _task(*extra):
    cfg = apply_overrides(ExperimentConfig(), ["data.dataset=synthetic:detection", "data.synthetic_height=64",
                                                "data.synthetic_width=64", "data.synthetic_frames=6",
                                                "data.synthetic_train_videos=4", "data.synthetic_val_videos=2",
                                                "lfs.f0_size=64", "lfs.f1_size=32", "lfs.memory_input=16",
                                                "lfs.state_channels=8", "lfs.num_levels=2", "lfs.unroll=3",
                                                "lfs.calibration_videos=3", *extra])
    return LFSTask(cfg), cfg


def _trained_ish(task, cfg):
    torch.manual_seed(0)
    m = task.build_model(cfg, 6).eval()
    with torch.no_grad():  # at initialisation the head barely reads the features: every score would tie
        g = torch.Generator().manual_seed(1)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def test_fit_is_calibrated_in_the_large_per_extractor_and_class_on_the_detections_it_saw():
    """Logistic regression with an intercept (and a negligible prior) makes the mean calibrated
    score of each (extractor, class) equal its share of matched detections: checked on the
    detections of the fit's own schedule, matched by COCO's rules, class = category − 1."""
    task, cfg = _task()
    m = _trained_ish(task, cfg)
    videos, gt = task.calibration_data(cfg)
    assert len(videos) == 3 and len(gt["images"]) == 3 * 6
    loader = torch.utils.data.DataLoader(videos, batch_size=2, collate_fn=collate)
    cal, stats = fit_score_calibration(m, loader, gt, score_threshold=0.001, nms_iou=0.5, max_detections=50, seed=3,
                                       prior=1e-6)
    assert m.calibrated and torch.equal(m.score_calibration, cal)
    assert stats["f0"]["detections"] > 0 and stats["f1"]["detections"] > 0
    # the same detections again: raw scores (identity), the same seeded schedule
    raw = _trained_ish(task, cfg)
    policy = BernoulliPolicy(0.5, seed=3)
    rows = {F0: [], F1: []}
    for frames, targets in loader:
        dets, actions = run_videos(raw, frames, policy, score_threshold=0.001, nms_iou=0.5, max_detections=50)
        for b, target in enumerate(targets):
            ran = dict(zip(target["image_ids"].tolist(), actions[b].tolist()))
            for r in video_detection_rows(dets[b], target):
                rows[ran[r["image_id"]]].append(r)
    checked = 0
    for i in (F0, F1):
        table = match_detections(gt, rows[i])
        assert int((~table.ignore).sum()) == stats["f0" if i == F0 else "f1"]["detections"]
        for k, cat in enumerate(table.category_ids):
            sel = (~table.ignore) & (table.category == k)
            if sel.sum() < 5:
                continue
            z = np.log(table.score[sel] / (1 - table.score[sel]))
            a, b = cal[i, :, cat - 1].double().numpy()
            assert _sigmoid(a * z + b).mean() == pytest.approx(table.tp[sel].mean(), abs=0.02)
            checked += 1
    assert checked >= 2


def test_padded_frames_do_not_change_which_extractor_a_detection_is_filed_under():
    """A short video padded in a batch repeats its last image id: the fit files each detection
    under the extractor of its own (valid) frame. With τ = 1 the valid frames 0, 2, 4 of the
    5-frame video ran f0 and the padded frame 5 ran f1."""
    task, cfg = _task()
    m = _trained_ish(task, cfg)
    videos, gt = task.calibration_data(cfg)
    frames, target = videos[1]
    short = (frames[:5], {k: (v[:5] if k in ("boxes", "labels", "image_ids", "orig_sizes", "valid") else v)
                          for k, v in target.items()})
    batch = [videos[0], short]
    _, stats = fit_score_calibration(m, [collate(batch)], gt, score_threshold=0.001, nms_iou=0.5, max_detections=50,
                                     policy=FixedPolicy(1))
    dets, actions = run_videos(_trained_ish(task, cfg), collate(batch)[0], FixedPolicy(1), score_threshold=0.001,
                               nms_iou=0.5, max_detections=50)
    f0_rows = sum(len(d["scores"]) for b, (_, tg) in enumerate(batch) for t, d in enumerate(dets[b])
                  if t < len(tg["image_ids"]) and actions[b, t] == F0)
    assert actions[1, 4] == F0 and actions[1, 5] == F1
    assert stats["f0"]["detections"] == f0_rows > 0


def test_fit_runs_in_eval_mode_and_zero_videos_resets_to_raw_scores():
    task, cfg = _task("lfs.score_threshold=0.001")
    stage = task.stages[0]
    _, val = task.datasets(stage.config(cfg), stage)
    loader = torch.utils.data.DataLoader(val, batch_size=2, collate_fn=collate)
    m = _trained_ish(task, cfg).train()  # as the engine leaves it between epochs
    bn = {k: v.clone() for k, v in m.state_dict().items() if "running_" in k}
    task.evaluate(m, loader, stage)
    assert m.training and m.calibrated
    assert all(torch.equal(m.state_dict()[k], v) for k, v in bn.items())  # the weights evaluated are untouched
    task0, cfg0 = _task("lfs.score_threshold=0.001", "lfs.calibration_videos=0")
    task0.datasets(stage.config(cfg0), stage)
    task0.evaluate(m, loader, stage)  # 0: the raw scores, even of a calibrated checkpoint
    assert not m.calibrated
