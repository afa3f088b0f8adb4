"""Confusion matrix and mIoU on hand-computed cases."""

import math

import pytest
import torch

from dynvid.metrics.segmentation import ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou


def test_miou_on_a_hand_computed_case():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, target, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 3 / 4, 1 / 2]) and math.isnan(float(iou[3]))
    assert mean_iou(cm) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert mean_iou(cm + confusion_matrix(target.clamp(max=2), target.clamp(max=2), 4)) > mean_iou(cm)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(3, 2), 3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        confusion_matrix(torch.zeros(2), torch.tensor([0, 5]), 3)
    assert math.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.long)))


def test_counts_stay_where_the_labels_are_with_predictions_from_the_host():
    """The ResQ crash of issue 20: ``evaluate_videos`` passed ``logits.argmax(1).cpu()`` with the
    loader's CUDA labels, and the CPU predictions were indexed by a CUDA mask. Here the labels
    live on ``meta``, a second device that needs no GPU, and the predictions on the host: the
    predictions go to the labels' device and the counts stay there, read by nothing (``meta``
    has no values to read, so a host sync per batch would fail too). What ``meta`` does not
    reproduce is CUDA's own index-device check: the old code failed here on a host read
    (``int(t.min())``), on a GPU on the indexing."""
    labels = torch.zeros(2, 8, 8, dtype=torch.long, device="meta")
    predictions = torch.zeros(2, 4, 8, 8).argmax(1)  # logits.argmax(1).cpu()
    cm = confusion_matrix(predictions, labels, num_classes=4)
    assert cm.device == labels.device and cm.shape == (4, 4)
    acc = ConfusionMatrix(4)
    for _ in range(3):  # per frame, as evaluate_videos does
        acc.update(predictions, labels)
    assert acc.counts.device == labels.device


def test_accumulator_adds_batches_and_checks_class_ids_once_at_the_end():
    torch.manual_seed(0)
    preds = [torch.randint(0, 5, (2, 6, 6)) for _ in range(3)]
    targets = [torch.randint(0, 5, (2, 6, 6)) for _ in range(3)]
    targets[1][0, 0, :3] = 255  # ignored pixels
    acc = ConfusionMatrix(5)
    for p, t in zip(preds, targets):
        acc.update(p, t)
    cm = acc.compute()
    assert cm.device.type == "cpu" and cm.dtype == torch.long
    assert torch.equal(cm, sum(confusion_matrix(p, t, 5) for p, t in zip(preds, targets)))
    assert int(cm.sum()) == 3 * 2 * 36 - 3
    assert torch.equal(ConfusionMatrix(3).compute(), torch.zeros(3, 3, dtype=torch.long))  # no batch at all

    bad = ConfusionMatrix(3)
    bad.update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 5, 7, 255]))  # no error yet: no host read
    with pytest.raises(ValueError, match=r"2 pixels have target class ids outside \[0, 3\)"):
        bad.compute()
    with pytest.raises(ValueError, match=r"predicted class ids outside \[0, 3\)"):
        ConfusionMatrix(3).update(torch.tensor([1, 3]), torch.tensor([1, 1])).compute()
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(torch.zeros(2), torch.zeros(3))
