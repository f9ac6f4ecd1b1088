"""Adversarial training on the embeddings (--adversarial_epsilon): the
worst-case offsets, the perturbed loss, and a real training run with it."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tests.conftest import seed_model_dir, tiny_config
from trainers.adversarial import (clean_and_adversarial_losses,
                                  segments_of, worst_case_offsets)
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.tasks import get_task
from zoo.presets import get_preset
from zoo.tasks.text_classifier import build_text_classifier

PRESET = dict(get_preset("encoder", "tiny"), vocabulary_size=60,
              sequence_length=12, hidden_dim=16, num_heads=2, dropout=0.0)


def test_offsets_have_norm_epsilon_per_example_along_the_gradient():
  gradient = tf.random.stateless_normal([3, 5, 4], seed=[1, 2]).numpy()
  gradient[2] = 0.0
  ids = np.full([3, 5], 7)
  offsets = worst_case_offsets(gradient, segments_of(tf.constant(ids)),
                               0.3).numpy()  # [3, 5, 4]
  norms = np.sqrt((offsets ** 2).sum(axis=(1, 2)))
  np.testing.assert_allclose(norms, [0.3, 0.3, 0.0], rtol=1e-5)
  for row in range(2):  # parallel to the gradient, same sign
    cosine = (offsets[row] * gradient[row]).sum() / (
        norms[row] * np.linalg.norm(gradient[row]))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)


def test_each_example_of_a_packed_row_is_normalised_on_its_own():
  gradient = tf.random.stateless_normal([2, 6, 4], seed=[5, 6]).numpy()
  segment_ids = np.array([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 0, 0]])
  gradient[segment_ids == 0] = 0.0  # padding gets no gradient
  offsets = worst_case_offsets(gradient, segment_ids, 0.5).numpy()
  for row in range(2):
    for segment in set(segment_ids[row]) - {0}:
      tokens = offsets[row][segment_ids[row] == segment]
      np.testing.assert_allclose(np.sqrt((tokens ** 2).sum()), 0.5, rtol=1e-5)
  np.testing.assert_array_equal(offsets[segment_ids == 0], 0.0)


def mean_loss(task, labels, denominator):
  """The train step's loss_of: the batch's summed loss over denominator."""
  return lambda logits: tf.reduce_sum(
      task.per_example_loss(labels, logits)) / denominator


@pytest.fixture(scope="module")
def model_and_batch():
  keras.utils.set_random_seed(4)
  model = build_text_classifier(PRESET, num_classes=2)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 60, size=(6, 12))
  ids[:, 8:] = 0
  ids = tf.constant(ids, tf.int32)
  model(ids)
  return model, ids, tf.constant([0, 1, 1, 0, 1, 0], tf.int64)


def test_zero_offsets_change_nothing(model_and_batch):
  model, ids, _ = model_and_batch
  zeros = tf.zeros([6, 12, 16])
  np.testing.assert_allclose(model(ids, embedding_offsets=zeros).numpy(),
                             model(ids).numpy(), atol=1e-6)


def test_adversarial_loss_is_the_loss_at_the_worst_case_offsets(
    model_and_batch):
  model, ids, labels = model_and_batch
  task = get_task(TrainConfig(task="text_classification"))
  logits, clean, adversarial = clean_and_adversarial_losses(
      model, ids, mean_loss(task, labels, 6.0), epsilon=0.5)
  np.testing.assert_allclose(logits.numpy(), model(ids).numpy(), atol=1e-6)
  # The same offsets, computed by hand from the embeddings' gradient.
  offsets = tf.Variable(tf.zeros([6, 12, 16]))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(task.per_example_loss(
        labels, model(ids, embedding_offsets=offsets)))
  expected_offsets = worst_case_offsets(tape.gradient(loss, offsets),
                                        segments_of(ids), 0.5)
  expected = tf.reduce_mean(task.per_example_loss(
      labels, model(ids, embedding_offsets=expected_offsets)))
  np.testing.assert_allclose(float(clean), float(loss), rtol=1e-5)
  np.testing.assert_allclose(float(adversarial), float(expected), rtol=1e-5)
  # Moving up the gradient raises the loss; a random move of the same size
  # raises it less.
  random = worst_case_offsets(
      tf.random.stateless_normal([6, 12, 16], seed=[3, 4]), segments_of(ids),
      0.5)
  moved = tf.reduce_mean(task.per_example_loss(
      labels, model(ids, embedding_offsets=random)))
  assert float(adversarial) > float(moved) and float(adversarial) > float(loss)


@pytest.mark.parametrize("pack_examples", [False, True])
def test_trains_end_to_end_with_adversarial_training(
    tmp_path, sst2_subset, trained_model_dir, pack_examples):
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "adversarial"
  seed_model_dir(trained_model_dir, model_dir)
  results = train_and_evaluate(tiny_config(
      model_dir, sst2_subset, adversarial_epsilon=0.5, jit_compile=True,
      pack_examples=pack_examples))
  assert results["steps"] == 40 and np.isfinite(results["final_train_loss"])


@pytest.mark.parametrize("task", ["language_model", "masked_lm", "translation"])
def test_other_tasks_refuse_it(task):
  with pytest.raises(UserError, match="adversarial_epsilon"):
    get_task(TrainConfig(task=task, adversarial_epsilon=0.5))


def test_float16_models_are_perturbed_under_a_loss_scale():
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    keras.utils.set_random_seed(4)
    model = build_text_classifier(PRESET, num_classes=2)
    ids = tf.constant(np.random.default_rng(1).integers(5, 60, size=(4, 12)),
                      tf.int32)
    labels = tf.constant([0, 1, 1, 0], tf.int64)
    task = get_task(TrainConfig(task="text_classification"))
    _, clean, adversarial = clean_and_adversarial_losses(
        model, ids, mean_loss(task, labels, 4.0), epsilon=0.5,
        loss_scale=2.0 ** 8)
    assert np.isfinite(float(adversarial)) and float(adversarial) > float(clean)
  finally:
    keras.mixed_precision.set_global_policy("float32")
