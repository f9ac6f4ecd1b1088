"""Classification metrics against hand-computed values."""

import numpy as np
import pytest

from trainers.metrics import bootstrap_interval, classification_metrics


def test_binary_metrics_match_hand_computation():
  y_true = [1, 1, 1, 0, 0, 0, 0, 1]
  y_pred = [1, 1, 0, 0, 0, 1, 0, 1]
  m = classification_metrics(y_true, y_pred, ["neg", "pos"])
  assert m["confusion_matrix"] == [[3, 1], [1, 3]]
  assert m["accuracy"] == pytest.approx(6 / 8)
  assert m["precision"] == pytest.approx(3 / 4)  # positive class
  assert m["recall"] == pytest.approx(3 / 4)
  assert m["f1"] == pytest.approx(3 / 4)
  assert m["per_class"]["neg"]["support"] == 4
  low, high = m["accuracy_ci95"]
  assert low <= m["accuracy"] <= high


def test_class_never_predicted_has_zero_precision_not_nan():
  m = classification_metrics([0, 1, 2], [0, 0, 0], ["a", "b", "c"])
  assert m["per_class"]["b"]["precision"] == 0.0
  assert not np.isnan(m["f1"])


def test_bootstrap_interval_narrows_with_more_data():
  rng = np.random.default_rng(0)
  small = rng.random(100) < 0.8
  large = rng.random(10_000) < 0.8
  small_width = np.subtract(*bootstrap_interval(small)[::-1])
  large_width = np.subtract(*bootstrap_interval(large)[::-1])
  assert 0 < large_width < small_width
