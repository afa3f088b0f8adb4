"""The batched detection pieces (issue 20: no host read per box or image; issue 22:
torchvision's NMS) against plain sequential references written here: greedy NMS per image and
class, per-image post-processing, and the focal detection loss of each image."""

from __future__ import annotations

import pytest
import torch

from torchvision.ops import nms

from dynvid.detection.boxes import box_iou, decode, separate_groups
from dynvid.detection.losses import detection_loss, detection_loss_batched
from dynvid.detection.ssdlite import postprocess


def sequential_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook greedy NMS: take the best remaining box, drop every box overlapping it."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept: list[int] = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[j:j + 1])) <= thr for j in kept):
            kept.append(i)
    return kept


def clustered_boxes(n: int, seed: int) -> torch.Tensor:
    """Boxes in a few clusters, so that suppression chains (A drops B, B would drop C) occur."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, 2, generator=g)[torch.randint(0, 4, (n,), generator=g)]
    xy = centres + 0.08 * torch.randn(n, 2, generator=g)
    wh = 0.1 + 0.2 * torch.rand(n, 2, generator=g)
    return torch.cat([xy - wh / 2, xy + wh / 2], 1)


@pytest.mark.parametrize("seed", range(6))
def test_one_nms_call_over_separated_groups_equals_greedy_nms_per_image_and_class(seed):
    """Three images of 120 clustered candidates in 3 classes, a third of them invalid, scores
    in [0, 1): one torchvision NMS call over the separated boxes keeps exactly what the
    textbook rule keeps within each image and class."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.stack([clustered_boxes(120, 10 * seed + i) for i in range(3)])
    classes = torch.randint(0, 3, (3, 120), generator=g)
    valid = torch.rand(3, 120, generator=g) > 0.3
    scores = torch.rand(3, 120, generator=g).double()
    for thr in (0.3, 0.5, 0.7):
        apart = separate_groups(boxes, classes, valid, 3).reshape(-1, 4)
        kept = set(nms(apart, scores.reshape(-1), thr).tolist())
        for b in range(3):
            for c in range(3):
                rows = (valid[b] & (classes[b] == c)).nonzero().flatten()
                want = {b * 120 + int(rows[i]) for i in sequential_nms(boxes[b, rows], scores[b, rows], thr)}
                got = {i for i in kept if i // 120 == b and valid[b, i % 120] and classes[b, i % 120] == c}
                assert got == want, (thr, b, c)


def reference_postprocess(cls_logits, box_codes, anchors, score_threshold, iou_threshold, max_detections,
                          pre_nms_top_k):
    """Per image: candidates above the threshold, the best ``pre_nms_top_k``, NMS per class."""
    out = []
    for logits, codes in zip(cls_logits, box_codes):
        scores = torch.sigmoid(logits)
        boxes = decode(codes, anchors)
        cand = [(float(scores[a, c]), a, c) for a in range(scores.shape[0]) for c in range(scores.shape[1])
                if scores[a, c] > score_threshold]
        cand = sorted(cand, key=lambda t: -t[0])[:pre_nms_top_k]
        kept = []
        for s, a, c in cand:
            if all(c != c2 or float(box_iou(boxes[a:a + 1], boxes[a2:a2 + 1])) <= iou_threshold
                   for _, a2, c2 in kept):
                kept.append((s, a, c))
        kept = kept[:max_detections]
        out.append({"boxes": boxes[[a for _, a, _ in kept]].reshape(-1, 4),
                    "scores": torch.tensor([s for s, _, _ in kept]),
                    "labels": torch.tensor([c for _, _, c in kept], dtype=torch.long)})
    return out


@pytest.mark.parametrize("top_k,max_det", [(1000, 100), (40, 100), (1000, 5)])
def test_postprocess_of_a_batch_equals_the_per_image_reference(top_k, max_det):
    g = torch.Generator().manual_seed(3)
    anchors = clustered_boxes(80, 11).clamp(0, 1)
    logits = torch.randn(4, 80, 3, generator=g) * 2 - 1.5
    logits[2] = -20.0  # an image with no candidate above the threshold
    codes = 0.3 * torch.randn(4, 80, 4, generator=g)
    got = postprocess(logits, codes, anchors, 0.3, 0.5, max_det, pre_nms_top_k=top_k, device="cpu")
    want = reference_postprocess(logits, codes, anchors, 0.3, 0.5, max_det, top_k)
    assert len(got) == 4 and len(got[2]["scores"]) == 0
    for d, r in zip(got, want):
        assert d["labels"].tolist() == r["labels"].tolist()
        torch.testing.assert_close(d["scores"], r["scores"], atol=1e-6, rtol=0)
        torch.testing.assert_close(d["boxes"], r["boxes"], atol=1e-5, rtol=0)
        assert d["labels"].dtype == torch.long
    assert sum(len(d["scores"]) for d in got) > 10  # the case is not trivial


@pytest.mark.parametrize("focal", [True, False])
def test_batched_loss_equals_each_images_loss_and_gradient(focal):
    g = torch.Generator().manual_seed(5)
    anchors = clustered_boxes(64, 2)
    gt_boxes = [clustered_boxes(3, 20), torch.zeros(0, 4), clustered_boxes(1, 21), clustered_boxes(5, 22)]
    gt_boxes[3][1] = gt_boxes[3][0]  # two boxes on one best anchor: the later one takes it
    gt_labels = [torch.randint(0, 4, (len(b),), generator=g) for b in gt_boxes]
    logits = torch.randn(4, 64, 4, generator=g).requires_grad_(True)
    codes = torch.randn(4, 64, 4, generator=g).requires_grad_(True)
    cls, loc = detection_loss_batched(logits, codes, anchors, gt_boxes, gt_labels, focal=focal)
    ref = [detection_loss(logits[b], codes[b], anchors, gt_boxes[b], gt_labels[b], focal=focal) for b in range(4)]
    torch.testing.assert_close(cls, torch.stack([c for c, _ in ref]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loc, torch.stack([l for _, l in ref]), atol=1e-5, rtol=1e-5)
    assert float(loc[1].detach()) == 0.0 and float(loc[0].detach()) > 0  # no ground truth: no localisation loss
    grads = torch.autograd.grad((cls + loc).sum(), (logits, codes))
    ref_grads = torch.autograd.grad(sum(c + l for c, l in ref), (logits, codes))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="4 images of logits but 3 box"):
        detection_loss_batched(logits, codes, anchors, gt_boxes[:3], gt_labels[:3])


def test_a_broken_box_in_one_image_changes_nothing_in_the_others():
    """A diverged decode (inf, NaN, 1e30) makes its candidate an empty box; the other images
    keep exactly the detections they have alone."""
    boxes = torch.stack([clustered_boxes(80, s) for s in range(3)])
    classes = torch.randint(0, 3, (3, 80), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(3, 80, dtype=torch.bool)
    scores = torch.rand(3, 80, generator=torch.Generator().manual_seed(2)).double()
    clean = set(nms(separate_groups(boxes, classes, valid, 3).reshape(-1, 4), scores.reshape(-1), 0.5).tolist())
    broken = boxes.clone()
    broken[1, 5] = float("inf")
    broken[1, 6, 2] = float("nan")
    broken[1, 7] = 1e30
    kept = set(nms(separate_groups(broken, classes, valid, 3).reshape(-1, 4), scores.reshape(-1), 0.5).tolist())
    assert {i for i in kept if i // 80 != 1} == {i for i in clean if i // 80 != 1}
