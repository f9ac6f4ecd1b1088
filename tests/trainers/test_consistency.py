"""R-Drop (--consistency_weight): paired rows, the consistency term, and a
real training run with it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import seed_model_dir, tiny_config
from trainers.classification_task import pair_divergence
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.tasks import get_task


def test_pair_divergence_is_symmetric_kl():
  logits = tf.constant([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
  p = tf.nn.softmax(logits).numpy()
  expected = (p[0] * np.log(p[0] / p[1])).sum() + (
      p[1] * np.log(p[1] / p[0])).sum()
  np.testing.assert_allclose(pair_divergence(logits).numpy(), [expected, 0.0],
                             rtol=1e-5, atol=1e-7)


def test_loss_adds_half_the_pair_divergence_to_each_row():
  plain = get_task(TrainConfig(task="text_classification"))
  paired = get_task(TrainConfig(task="text_classification", consistency_weight=0.5))
  labels = tf.constant([1, 1, 0, 0], tf.int64)
  logits = tf.constant([[0.0, 2.0], [0.5, 0.5], [1.0, -1.0], [1.0, -1.0]])
  extra = paired.per_example_loss(labels, logits) - plain.per_example_loss(
      labels, logits)
  divergence = pair_divergence(logits).numpy()
  np.testing.assert_allclose(extra.numpy(), 0.5 * np.repeat(divergence, 2) / 2,
                             rtol=1e-5)
  # Correct predictions still count examples, not rows.
  assert float(tf.reduce_sum(paired.correct_predictions(labels, logits))) == 1.5


def test_training_batches_hold_each_example_twice_adjacent(sst2_subset,
                                                           trained_model_dir,
                                                           tmp_path):
  from zoo import model_config as zoo_model_config
  with open(os.path.join(trained_model_dir, "config.json")) as f:
    model_config = json.load(f)["model"]
  tokenizer = zoo_model_config.build_tokenizer(model_config, trained_model_dir)
  config = tiny_config(tmp_path, sst2_subset, consistency_weight=1.0)
  ids, labels = next(iter(get_task(config).train_dataset(tokenizer, 16, 0)))
  assert ids.shape[0] == 32 and labels.shape == (32,)
  np.testing.assert_array_equal(ids[0::2], ids[1::2])
  np.testing.assert_array_equal(labels[0::2], labels[1::2])
  assert len({tuple(row) for row in ids.numpy()}) > 8  # pairs, not one row


def test_trains_end_to_end_with_rdrop(tmp_path, sst2_subset,
                                      trained_model_dir):
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "rdrop"
  seed_model_dir(trained_model_dir, model_dir)
  results = train_and_evaluate(tiny_config(model_dir, sst2_subset,
                                           consistency_weight=1.0))
  assert results["steps"] == 40 and np.isfinite(results["final_train_loss"])
  assert results["best"]["examples"] == 200  # evaluated on unpaired dev rows


@pytest.mark.parametrize("task", ["language_model", "masked_lm", "translation"])
def test_other_tasks_refuse_it(task):
  with pytest.raises(UserError, match="consistency_weight"):
    get_task(TrainConfig(task=task, consistency_weight=1.0))
