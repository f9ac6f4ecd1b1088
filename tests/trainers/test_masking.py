"""BERT masking keyed by (seed, batch index): rates, what may be chosen, and
the same masks for the same batch in every run."""

import numpy as np
import tensorflow as tf

from trainers.masking import mask_tokens

SPECIAL = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4


def batch(rows=256, width=32, real=20, seed=0):
  ids = np.random.default_rng(seed).integers(5, 100, size=(rows, width))
  ids[:, 0] = 2  # [CLS]
  ids[:, real:] = 0  # padding
  return tf.constant(ids, tf.int32)


def mask(ids, index, seed=0, predictions=5):
  return mask_tokens(ids, index, seed, 0.15, predictions, MASK_ID, 100,
                     SPECIAL)


def test_same_batch_index_same_masks_other_index_other_masks():
  ids = batch()
  first, again, other = mask(ids, 7), mask(ids, 7), mask(ids, 8)
  for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(again)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0]["token_ids"], other[0]["token_ids"])
  assert not np.array_equal(mask(ids, 7, seed=1)[0]["token_ids"],
                            first[0]["token_ids"])


def test_only_real_tokens_are_chosen_and_only_they_change():
  ids = batch()
  features, targets = mask(ids, 0)
  weights = targets["weights"].numpy()
  positions = features["mask_positions"].numpy()
  chosen = weights > 0
  original = ids.numpy()
  rows = np.arange(len(original))[:, None]
  assert (original[rows, positions][chosen] > 4).all()  # no special, no pad
  np.testing.assert_array_equal(targets["ids"].numpy()[chosen],
                                original[rows, positions][chosen])
  changed = features["token_ids"].numpy() != original
  allowed = np.zeros_like(changed)
  allowed[np.nonzero(chosen)[0], positions[chosen]] = True
  assert not (changed & ~allowed).any()
  assert (positions[~chosen] == 0).all()


def test_rates_follow_bert():
  ids = batch(rows=2048, width=64, real=64, seed=1)
  features, targets = mask(ids, 0, predictions=64)
  chosen = targets["weights"].numpy() > 0
  # 63 selectable tokens a row (all but [CLS]), each chosen with p = 0.15.
  assert abs(chosen.sum(1).mean() / 63 - 0.15) < 0.01
  new = tf.gather(features["token_ids"], features["mask_positions"],
                  batch_dims=1).numpy()[chosen]
  old = targets["ids"].numpy()[chosen]
  assert abs((new == MASK_ID).mean() - 0.8) < 0.02
  kept = (new == old).mean()  # 10% kept, plus random draws of the same id
  assert 0.08 < kept < 0.13


def test_at_most_max_predictions_per_row_the_first_chosen():
  ids = batch(rows=64, width=32, real=32)
  features, targets = mask_tokens(ids, 0, 0, 0.9, 3, MASK_ID, 100, SPECIAL)
  assert features["mask_positions"].shape == (64, 3)
  assert (targets["weights"].numpy().sum(1) == 3).all()  # rate 0.9: full
  positions = features["mask_positions"].numpy()
  assert (np.diff(positions, axis=1) > 0).all()  # in order, no repeats
