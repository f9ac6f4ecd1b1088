"""--pack_examples: best-fit rows, the packed tensors, resumable epochs, the
packed loss, and a real training run with it."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import seed_model_dir, tiny_config
from trainers import example_packing
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.example_packing import (MAX_SEGMENTS, PackedEpochs,
                                      pack_rows, packed_arrays, rows_per_batch)
from trainers.tasks import get_task


def test_rows_hold_every_example_once_within_capacity():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 40, size=3000)
  rows = pack_rows(lengths, capacity=64)
  flat = sorted(i for row in rows for i in row)
  assert flat == list(range(3000))
  assert all(lengths[row].sum() <= 64 for row in rows)
  assert all(len(row) <= MAX_SEGMENTS for row in rows)
  # Best fit leaves little room: the rows are nearly full.
  assert lengths.sum() / (64 * len(rows)) > 0.95


def test_rows_stop_at_max_segments_and_refuse_bad_lengths():
  rows = pack_rows([1] * 40, capacity=64, max_segments=16)
  assert [len(row) for row in rows] == [16, 16, 8]
  with pytest.raises(ValueError, match="1..8"):
    pack_rows([3, 9], capacity=8)
  with pytest.raises(ValueError, match="1..8"):
    pack_rows([0], capacity=8)


def test_packed_arrays_mark_segments_positions_and_labels():
  ids = [np.array([2, 7, 8], np.int32), np.array([2, 9], np.int32),
         np.array([2], np.int32)]
  features, labels = packed_arrays(ids, np.array([1, 0, 1]), [[0, 1], [2]], 6)
  np.testing.assert_array_equal(features["token_ids"],
                                [[2, 7, 8, 2, 9, 0], [2, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(features["segment_ids"],
                                [[1, 1, 1, 2, 2, 0], [1, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(features["positions"],
                                [[0, 1, 2, 0, 1, 0], [0, 0, 0, 0, 0, 0]])
  assert labels.shape == (2, MAX_SEGMENTS)
  np.testing.assert_array_equal(labels[:, :3], [[1, 0, -1], [1, -1, -1]])
  assert (labels[:, 3:] == -1).all()


def test_rows_per_batch_is_a_multiple_of_the_replicas():
  # 1,000 examples in 200 rows: 64 examples take 12.8 rows.
  assert rows_per_batch(1000, 200, 64, 1) == 13
  assert rows_per_batch(1000, 200, 64, 2) == 14
  assert rows_per_batch(1000, 200, 1, 4) == 4


def _epochs(seed=3):
  rng = np.random.default_rng(1)
  ids = [np.concatenate([[2], rng.integers(5, 50, size=n)]).astype(np.int32)
         for n in rng.integers(0, 20, size=500)]
  return PackedEpochs(ids, rng.integers(0, 2, size=500), capacity=32,
                      batch_size=16, num_replicas=1, seed=seed)


def test_rows_are_half_width_unless_an_example_needs_the_whole_width():
  epochs = _epochs()
  assert epochs.widths == (16, 32)
  rows = epochs.epoch_rows(0)
  for width, width_rows in rows.items():
    for row in width_rows:
      assert epochs.lengths[row].sum() <= width
  # Every long example has a full-width row; short ones fill the room left.
  full = [i for row in rows[32] for i in row]
  assert set(np.flatnonzero(epochs.lengths > 16)) <= set(full)
  assert (epochs.lengths[full] <= 16).any()
  real = sum(epochs.lengths[row].sum() for w in rows for row in rows[w])
  slots = sum(w * len(rows[w]) for w in rows)
  assert real / slots > 0.9
  for width, rows in epochs.epoch_batches(0):
    features, labels = packed_arrays(epochs.ids, epochs.labels, rows, width)
    assert features["token_ids"].shape == (epochs.rows_per_batch[width], width)


def test_an_epoch_trains_on_each_example_once_and_orders_differ():
  epochs = _epochs()
  first, second = epochs.epoch_rows(0), epochs.epoch_rows(1)
  for rows in (first, second):
    assert sorted(i for width in rows for row in rows[width]
                  for i in row) == list(range(500))
  assert first != second
  assert _epochs().epoch_rows(0) == first  # (seed, epoch) decide everything
  assert _epochs(seed=4).epoch_rows(0) != first
  # Batches of both widths, in a shuffled order, each about 16 examples.
  batches = epochs.epoch_batches(0)
  assert {width for width, _ in batches} == {16, 32}
  assert 12 <= np.mean([sum(len(row) for row in rows)
                        for _, rows in batches]) <= 20


def test_skipping_batches_continues_exactly_where_a_run_stopped():
  epochs = _epochs()
  skip = epochs.batches_in_epoch(0) + 3  # into the second epoch
  assert epochs.batches_in_epoch(0) > 3
  whole = list(itertools.islice(epochs.batches(), skip + 5))
  resumed = list(itertools.islice(epochs.batches(skip_batches=skip), 5))
  for (f_a, l_a), (f_b, l_b) in zip(whole[skip:], resumed):
    for key in f_a:
      np.testing.assert_array_equal(f_a[key], f_b[key])
    np.testing.assert_array_equal(l_a, l_b)


def test_a_batch_holds_about_batch_size_examples(tmp_path, sst2_subset,
                                                 trained_model_dir):
  from trainers.training import prepare_training
  seed_model_dir(trained_model_dir, tmp_path / "run")
  training = prepare_training(tiny_config(tmp_path / "run", sst2_subset,
                                          pack_examples=True))
  batches = list(training.train_dataset().take(6))
  examples = [int((labels.numpy() >= 0).sum()) for _, labels in batches]
  assert 0.8 * 32 < np.mean(examples) < 1.25 * 32
  features, labels = batches[0]
  assert set(features) == {"token_ids", "segment_ids", "positions"}
  assert labels.shape[1] == MAX_SEGMENTS


def test_packed_loss_is_the_mean_over_the_examples_alone():
  task = get_task(TrainConfig(task="text_classification", pack_examples=True))
  plain = get_task(TrainConfig(task="text_classification"))
  labels = tf.constant([[1, 0, -1], [0, -1, -1]], tf.int64)  # [R, S]
  logits = tf.constant([[[0.0, 2.0], [1.0, -1.0], [5.0, -5.0]],
                        [[0.3, 0.1], [9.0, 9.0], [9.0, -9.0]]])  # [R, S, C]
  per_slot = task.per_example_loss(labels, logits).numpy()
  expected = plain.per_example_loss(
      tf.constant([1, 0, 0], tf.int64),
      tf.constant([[0.0, 2.0], [1.0, -1.0], [0.3, 0.1]])).numpy()
  np.testing.assert_allclose(per_slot[[0, 1, 3]], expected, rtol=1e-6)
  np.testing.assert_array_equal(per_slot[[2, 4, 5]], 0.0)
  assert float(task.count_examples(None, labels)) == 3.0
  assert float(task.loss_denominator(None, labels)) == 3.0
  # Slot (1, 0) predicts class 0 for label 0; (0, 0) and (0, 1) are right too.
  assert float(tf.reduce_sum(task.correct_predictions(labels, logits))) == 3.0


def test_trains_end_to_end_packed(tmp_path, sst2_subset, trained_model_dir):
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "packed"
  seed_model_dir(trained_model_dir, model_dir)
  results = train_and_evaluate(tiny_config(model_dir, sst2_subset,
                                           pack_examples=True,
                                           jit_compile=True))
  assert results["steps"] == 40 and np.isfinite(results["final_train_loss"])
  assert results["best"]["examples"] == 200  # dev is scored unpacked


@pytest.mark.parametrize("task", ["language_model", "masked_lm", "translation"])
def test_other_tasks_refuse_it(task):
  with pytest.raises(UserError, match="pack_examples"):
    get_task(TrainConfig(task=task, pack_examples=True))


def test_rdrop_and_packing_are_refused_together():
  with pytest.raises(UserError, match="pack_examples and --consistency"):
    get_task(TrainConfig(task="text_classification", pack_examples=True,
                         consistency_weight=1.0))


def test_token_lists_drop_the_padding(trained_model_dir):
  import json
  import os
  from zoo import model_config as zoo_model_config
  with open(os.path.join(trained_model_dir, "config.json")) as f:
    model_config = json.load(f)["model"]
  tokenizer = zoo_model_config.build_tokenizer(model_config, trained_model_dir)
  lists = example_packing.token_lists(["a fine film", ""], tokenizer)
  padded = tokenizer(tf.constant(["a fine film", ""])).numpy()
  assert len(lists[0]) >= 2 and lists[1].tolist() == [padded[1][0]]
  np.testing.assert_array_equal(lists[0], padded[0][:len(lists[0])])
  assert (padded[0][len(lists[0]):] == 0).all()
