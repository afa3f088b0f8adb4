"""Looking Fast and Slow's oracle reference and the bootstrap interval of a policy's gain at a
matched fraction of f0 runs (issue 23), checked against independent computations."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pycocotools")

from dynvid.data.detection import build_detection_dataset, collate  # noqa: E402
from dynvid.data.synthetic import SceneConfig  # noqa: E402
from dynvid.detection.losses import detection_loss  # noqa: E402
from dynvid.methods.lfs.adaptive import fixed_at, matched_gain_interval  # noqa: E402
from dynvid.methods.lfs.evaluation import FixedPolicy, OraclePolicy, run_videos  # noqa: E402
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector  # noqa: E402
from dynvid.metrics.detection import coco_evaluate, to_coco_detections  # noqa: E402

POST = dict(score_threshold=0.0, nms_iou=0.5, max_detections=10)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    model = InterleavedDetector(6, f0_size=64, f1_size=32, memory_input=16, state_channels=8, groups=4,
                                num_levels=2).eval()
    with torch.no_grad():  # at its initialisation the head barely reads the features: both losses would tie
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    videos = build_detection_dataset("synthetic:detection", "val", size=64, clip_len=2, mode="eval", num_videos=2,
                                     scene=SceneConfig(height=64, width=64, num_frames=7))
    frames, targets = collate([videos[0], videos[1]])
    return model, frames, targets


def _horizon_gaps(model, frames, targets, actions, horizon: int) -> torch.Tensor:
    """Mean L(f1) − L(f0) over frame t and the horizon − 1 after it (inside the video), each
    branch carried on with f1 one frame at a time, from the state the taken actions kept."""
    B, T = actions.shape
    gaps = torch.zeros(B, T)
    with torch.no_grad():
        for b in range(B):
            state = None
            for t in range(T):
                if t:
                    means = []
                    for a in (F0, F1):
                        branch, total, frames_seen = state, 0.0, 0
                        for k in range(t, min(T, t + horizon)):
                            cls, box, anchors, branch, _ = model.step(frames[b:b + 1, k], a if k == t else F1, branch)
                            c, loc = detection_loss(cls[0], box[0], anchors, targets[b]["boxes"][k],
                                                    targets[b]["labels"][k], focal=True)
                            total, frames_seen = total + float(c + loc), frames_seen + 1
                        means.append(total / frames_seen)
                    gaps[b, t] = means[F1] - means[F0]
                _, _, _, state, _ = model.step(frames[b:b + 1, t], int(actions[b, t]), state)
    return gaps


def _gaps(model, frames, targets, actions) -> torch.Tensor:
    """L(f1) − L(f0) of each frame t ≥ 1 alone (Eq. 2's gap), as :func:`_horizon_gaps` computes it."""
    return _horizon_gaps(model, frames, targets, actions, 1)


def test_oracle_picks_f0_exactly_where_its_loss_gain_exceeds_the_threshold(parts):
    model, frames, targets = parts
    gaps = _gaps(model, frames, targets, run_videos(model, frames, FixedPolicy(10**9), **POST)[1])[:, 1:]
    mixed = 0
    vals = gaps.flatten().sort().values
    apart = (vals[1:] - vals[:-1]) > 1e-3  # thresholds between this detector's gaps, never at one
    for theta in ((vals[1:] + vals[:-1]) / 2)[apart].tolist():
        dets, actions = run_videos(model, frames, OraclePolicy(theta, focal=True), targets=targets, **POST)
        assert (actions[:, 0] == F0).all()
        expected = torch.where(_gaps(model, frames, targets, actions) > theta, F0, F1)
        assert torch.equal(actions[:, 1:], expected[:, 1:])
        mixed += 0 < int((actions[:, 1:] == F0).sum()) < actions[:, 1:].numel()
    assert mixed  # the rule was checked where it chose both extractors


def test_oracle_with_a_horizon_picks_f0_where_the_next_frames_gain(parts):
    """With horizon 3 the oracle compares each branch's mean loss over the frame and the two
    after it (fewer at the video's end), both carried on with f1."""
    model, frames, targets = parts
    gaps = _horizon_gaps(model, frames, targets, run_videos(model, frames, FixedPolicy(10**9), **POST)[1], 3)[:, 1:]
    vals = gaps.flatten().sort().values
    apart = (vals[1:] - vals[:-1]) > 1e-3
    mixed = 0
    for theta in ((vals[1:] + vals[:-1]) / 2)[apart].tolist():
        _, actions = run_videos(model, frames, OraclePolicy(theta, focal=True, horizon=3), targets=targets, **POST)
        expected = torch.where(_horizon_gaps(model, frames, targets, actions, 3) > theta, F0, F1)
        assert torch.equal(actions[:, 1:], expected[:, 1:])
        mixed += 0 < int((actions[:, 1:] == F0).sum()) < actions[:, 1:].numel()
    assert mixed
    # one frame ahead differs from three on these videos (else the horizon would be untested)
    one_frame = _gaps(model, frames, targets, run_videos(model, frames, FixedPolicy(10**9), **POST)[1])[:, 1:]
    assert not torch.allclose(gaps, one_frame, atol=1e-3)
    assert OraclePolicy(0.0, focal=True, horizon=3).name == "oracle θ=0 H=3"
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        OraclePolicy(0.0, focal=True, horizon=0)


def test_oracle_horizon_stops_at_each_videos_own_end(parts):
    """A video shorter than its batch is padded with its last frame (not valid): the oracle's
    horizon ends at the video's own last frame, as the policy's environment does."""
    model, frames, targets = parts
    n = 4
    short = {k: v[:n] for k, v in targets[1].items()}
    batch, padded = collate([(frames[0], targets[0]), (frames[1, :n], short)])
    assert not padded[1]["valid"][n:].any()
    f1_after_f0 = torch.ones(1, batch.shape[1], dtype=torch.long)
    f1_after_f0[:, 0] = F0
    alone = _horizon_gaps(model, frames[1:2, :n], [short], f1_after_f0[:, :n], 3)[0, 1:]
    through_padding = _horizon_gaps(model, batch[1:2], padded[1:], f1_after_f0, 3)[0, 1:n]
    assert not torch.allclose(alone, through_padding, atol=1e-3)  # the padding would change the gaps
    vals = alone.sort().values
    checked = 0
    for theta in ((vals[1:] + vals[:-1]) / 2).tolist() + [vals[0].item() - 1.0]:
        _, actions = run_videos(model, batch, OraclePolicy(theta, focal=True, horizon=3), targets=padded, **POST)
        if (actions[1, 1:n] == F1).all():  # the video's own gaps decide only while the state is f0's of frame 0
            expected = torch.where(alone > theta, F0, F1)
            assert torch.equal(actions[1, 1:n], expected)
            checked += 1
        else:  # once f0 ran, the next frames start from another state: check them step by step
            expected = torch.where(_horizon_gaps(model, frames[1:2, :n], [short], actions[1:2, :n], 3) > theta,
                                   F0, F1)
            assert torch.equal(actions[1, 1:n], expected[0, 1:])
            checked += 1
    assert checked >= 2


def test_fixed_at_interpolates_clamps_and_takes_the_best_of_tied_fractions():
    curve = [(0.5, 0.08), (0.1, 0.05), (0.02, 0.04)]
    assert fixed_at(curve, 0.3) == pytest.approx(0.05 + 0.03 * 0.2 / 0.4)
    assert fixed_at(curve, 0.01) == 0.04 and fixed_at(curve, 0.9) == 0.08
    tied = curve + [(0.1, 0.06), (0.1, 0.055)]  # two more schedules at 0.1 f0 runs: the best one counts
    assert fixed_at(tied, 0.1) == pytest.approx(0.06)
    assert fixed_at(tied, 0.06) == pytest.approx(0.04 + 0.02 * 0.04 / 0.08)
    with pytest.raises(ValueError, match="empty"):
        fixed_at([], 0.1)


def test_oracle_ends_are_the_fixed_ends_and_it_needs_labels(parts):
    model, frames, targets = parts
    for theta, tau in ((-1e9, 0), (1e9, 10**9)):
        oracle = run_videos(model, frames, OraclePolicy(theta, focal=True), targets=targets, **POST)
        fixed = run_videos(model, frames, FixedPolicy(tau), **POST)
        assert torch.equal(oracle[1], fixed[1])
        for b in range(2):
            for d, e in zip(oracle[0][b], fixed[0][b]):
                assert torch.allclose(d["scores"], e["scores"], atol=1e-5)
    with pytest.raises(ValueError, match="needs targets"):
        run_videos(model, frames, OraclePolicy(0.0, focal=True), **POST)


def _record(gt_boxes, found, score, f0_runs):
    """A per-video record of one policy: video v's frames detect their box where found[v][t]."""
    rec = {"rows": [], "f0": [], "frames": []}
    for v, frames in enumerate(gt_boxes):
        for t, (image, box) in enumerate(frames):
            if found[v][t]:
                rec["rows"] += to_coco_detections(image, torch.tensor([box]), torch.tensor([score(v, t)]),
                                                  torch.tensor([0]))
            else:  # a false positive in the corner instead
                rec["rows"] += to_coco_detections(image, torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
                                                  torch.tensor([score(v, t)]), torch.tensor([0]))
        rec["f0"].append(f0_runs[v])
        rec["frames"].append(len(frames))
    return rec


def test_matched_gain_and_its_interval_over_videos():
    g = torch.Generator().manual_seed(0)
    videos, per_frame = 10, 4
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    boxes = []
    for v in range(videos):
        frames = []
        for t in range(per_frame):
            image = len(gt["images"]) + 1
            x, y = (torch.rand(2, generator=g) * 50 + 10).tolist()
            gt["images"].append({"id": image, "width": 100, "height": 100})
            gt["annotations"].append({"id": image, "image_id": image, "category_id": 1, "bbox": [x, y, 20, 20],
                                      "area": 400, "iscrowd": 0})
            frames.append((image, [x, y, x + 20, y + 20]))
        boxes.append(frames)
    rand = torch.rand(videos, per_frame, 4, generator=g)
    score = lambda k: (lambda v, t: float(rand[v, t, k]))  # noqa: E731
    per_video = {"image_ids": [[i for i, _ in f] for f in boxes],
                 "f0 only": _record(boxes, rand[..., 3] < 0.9, score(0), [per_frame] * videos),
                 "f1 only": _record(boxes, rand[..., 3] < 0.4, score(1), [1] * videos),
                 "learned": _record(boxes, rand[..., 3] < 0.7, score(2), [2] * videos)}
    ap = {n: coco_evaluate(gt, per_video[n]["rows"])["AP50"] for n in ("f0 only", "f1 only", "learned")}
    expected = ap["learned"] - fixed_at([(1.0, ap["f0 only"]), (0.25, ap["f1 only"])], 0.5)
    ci = matched_gain_interval(gt, per_video, ["learned"], ["f0 only", "f1 only"], resamples=200)
    assert ci.diff == pytest.approx(expected, abs=1e-9)
    assert ci.low < ci.diff < ci.high and ci.samples == videos and ci.resamples == 200
    # a policy that is one of the reference curve's points gains exactly nothing on every draw
    same = matched_gain_interval(gt, per_video, ["f1 only"], ["f0 only", "f1 only"], resamples=50)
    assert same.diff == same.low == same.high == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="missing"):
        matched_gain_interval(gt, per_video, ["learned γ=1"], ["f0 only"])
    shared = {**per_video, "image_ids": per_video["image_ids"] + [per_video["image_ids"][0]]}
    with pytest.raises(ValueError, match="shares image ids"):
        matched_gain_interval(gt, shared, ["learned"], ["f0 only", "f1 only"], resamples=5)
    stranger = {**per_video, "image_ids": per_video["image_ids"][:-1] + [[999]]}
    with pytest.raises(ValueError, match=r"\[999\] are not in the ground truth"):
        matched_gain_interval(gt, stranger, ["learned"], ["f0 only", "f1 only"], resamples=5)


def test_per_video_records_need_an_empty_dict(parts):
    from dynvid.methods.lfs.evaluation import evaluate_policies

    model, frames, targets = parts
    with pytest.raises(ValueError, match="empty dict"):
        evaluate_policies(model, [(frames, targets)], {}, [FixedPolicy(1)], per_video={"image_ids": [[1]]}, **POST)
