"""Confusion matrix and mIoU on hand-computed cases."""

import math

import pytest
import torch

from dynvid.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou


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
