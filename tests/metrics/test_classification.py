"""Tests of dynvid.metrics.classification's mAP (the FCVID / ActivityNet protocol)."""

import numpy as np
import pytest

from dynvid.metrics.classification import mean_average_precision


def test_map_of_a_constructed_ranking() -> None:
    # class 0: positives (videos 0, 2) ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2
    # class 1: positive (video 1) ranked 2nd              -> AP = 1/2
    scores = np.array([[0.9, 0.1], [0.5, 0.3], [0.4, 0.35]])
    labels = np.array([0, 1, 0])
    assert mean_average_precision(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)


def test_map_multi_label_and_perfect_ranking() -> None:
    targets = np.array([[1, 1], [0, 1], [0, 0]])
    scores = np.array([[0.9, 0.8], [0.1, 0.7], [0.0, 0.1]])
    assert mean_average_precision(scores, targets) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="do not match"):
        mean_average_precision(scores, np.zeros((3, 3)))
