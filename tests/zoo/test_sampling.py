"""Next-token choice: top-k / top-p filtering, greedy, sampling, suppression."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.decoding.sampling import (NEG_INF, choose_next, row_uniform_noise,
                                   suppress, top_k_top_p_filter)

PROBABILITIES = [0.05, 0.5, 0.15, 0.3]  # sorted: 0.5 (id 1), 0.3, 0.15, 0.05
LOGITS = np.log(np.array(PROBABILITIES, np.float32))


def kept(logits, top_k, top_p):
  """The ids top_k_top_p_filter keeps in each row, as sets."""
  logits = np.asarray(logits, np.float32)
  batch = logits.shape[0]
  out = top_k_top_p_filter(
      tf.constant(logits), tf.constant(np.broadcast_to(top_k, [batch]),
                                       tf.int32),
      tf.constant(np.broadcast_to(top_p, [batch]), tf.float32)).numpy()
  rows = []
  for row in range(batch):
    keep = out[row] > NEG_INF / 2
    np.testing.assert_array_equal(out[row][keep], logits[row][keep])
    rows.append(set(np.flatnonzero(keep).tolist()))
  return rows


def choose(logits, temperature=1.0, top_k=0, top_p=1.0, seed=0, position=1):
  logits = np.asarray(logits, np.float32)
  batch = logits.shape[0]
  return choose_next(
      tf.constant(logits), tf.constant(np.broadcast_to(temperature, [batch]),
                                       tf.float32),
      tf.constant(np.broadcast_to(top_k, [batch]), tf.int32),
      tf.constant(np.broadcast_to(top_p, [batch]), tf.float32),
      tf.constant(np.broadcast_to(seed, [batch]), tf.int64), position).numpy()


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_top_k_keeps_exactly_k_tokens(k):
  logits = np.random.default_rng(k).normal(size=(3, 10)).astype(np.float32)
  for row, ids in enumerate(kept(logits, k, 1.0)):
    assert ids == set(np.argsort(-logits[row])[:k].tolist())


def test_top_k_zero_or_above_the_vocabulary_keeps_everything():
  logits = np.random.default_rng(0).normal(size=(2, 7)).astype(np.float32)
  assert kept(logits, 0, 1.0) == [set(range(7))] * 2
  assert kept(logits, 100, 1.0) == [set(range(7))] * 2


@pytest.mark.parametrize("top_p, expected", [
    (0.3, {1}),
    (0.5, {1}),  # 0.5 alone reaches 0.5
    (0.51, {1, 3}),
    (0.79, {1, 3}),
    (0.8, {1, 3}),  # 0.5 + 0.3 reaches 0.8
    (0.81, {1, 3, 2}),
    (0.96, {1, 3, 2, 0}),
    (1.0, {1, 3, 2, 0}),
])
def test_top_p_keeps_the_smallest_nucleus(top_p, expected):
  assert kept(LOGITS[None, :], 0, top_p) == [expected]


def test_top_p_always_keeps_the_most_likely_token():
  logits = np.log(np.array([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]], np.float32))
  assert kept(logits, 0, 1e-9) == [{0}, {2}]


def test_top_k_then_top_p_and_per_row_settings():
  logits = np.stack([LOGITS] * 3)
  out = top_k_top_p_filter(tf.constant(logits), tf.constant([2, 0, 3]),
                           tf.constant([1.0, 0.6, 0.95])).numpy()
  keep = [set(np.flatnonzero(row > NEG_INF / 2).tolist()) for row in out]
  # Row 0: top-2. Row 1: nucleus 0.6 -> {0.5, 0.3}. Row 2: top-3, then 0.95
  # of the renormalised top-3 (0.5/0.95 + 0.3/0.95 = 0.84 < 0.95) keeps 3.
  assert keep == [{1, 3}, {1, 3}, {1, 3, 2}]


def test_temperature_zero_is_argmax_whatever_the_filters():
  logits = np.random.default_rng(1).normal(size=(6, 20)).astype(np.float32)
  for seed in range(3):
    chosen = choose(logits, temperature=0.0, top_k=5, top_p=0.5, seed=seed)
    np.testing.assert_array_equal(chosen, logits.argmax(-1))


def test_top_k_one_is_argmax_at_any_temperature():
  logits = np.random.default_rng(2).normal(size=(6, 20)).astype(np.float32)
  for temperature in (0.5, 1.0, 10.0):
    chosen = choose(logits, temperature=temperature, top_k=1,
                    seed=np.arange(6))
    np.testing.assert_array_equal(chosen, logits.argmax(-1))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampling_follows_the_softmax(temperature):
  draws = 4000
  chosen = tf.function(choose_next)(
      tf.constant(np.tile(LOGITS, [draws, 1])), tf.fill([draws], temperature),
      tf.zeros([draws], tf.int32), tf.ones([draws], tf.float32),
      tf.range(draws, dtype=tf.int64), tf.constant(3)).numpy()
  frequencies = np.bincount(chosen, minlength=4) / draws
  expected = tf.nn.softmax(LOGITS / temperature).numpy()
  # Binomial standard error at n=4000 is below 0.008; allow about 4 of them.
  np.testing.assert_allclose(frequencies, expected, atol=0.03)


def test_sampling_respects_the_filters():
  draws = 2000
  logits = np.tile(LOGITS, [draws, 1])
  chosen = tf.function(choose_next)(
      tf.constant(logits), tf.ones([draws]), tf.fill([draws], 3),
      tf.fill([draws], 0.7), tf.range(draws, dtype=tf.int64),
      tf.constant(1)).numpy()
  # top-3 renormalised: 0.5/0.95, 0.3/0.95 reaches 0.7 -> only ids 1 and 3.
  assert set(chosen.tolist()) == {1, 3}
  assert abs((chosen == 1).mean() - 0.5 / 0.8) < 0.04


def test_seed_and_position_make_the_noise():
  noise = row_uniform_noise(tf.constant([5, 5, 6], tf.int64), 2, 50).numpy()
  assert noise.shape == (3, 50)
  assert np.all((noise > 0) & (noise < 1))
  np.testing.assert_array_equal(noise[0], noise[1])  # same seed, same noise
  assert not np.array_equal(noise[0], noise[2])
  later = row_uniform_noise(tf.constant([5], tf.int64), 3, 50).numpy()
  assert not np.array_equal(noise[0], later[0])
  alone = row_uniform_noise(tf.constant([6], tf.int64), 2, 50).numpy()
  np.testing.assert_array_equal(alone[0], noise[2])  # independent of the batch


def test_same_seed_same_choice_different_seeds_vary():
  logits = np.zeros([1, 30], np.float32)  # uniform
  first = [choose(logits, seed=s, position=4)[0] for s in range(20)]
  again = [choose(logits, seed=s, position=4)[0] for s in range(20)]
  assert first == again
  assert len(set(first)) > 8


def test_suppress_bans_ids():
  logits = tf.constant([[5.0, 4.0, 1.0, 0.0], [0.0, 9.0, 2.0, 1.0]])
  out = suppress(logits, (0, 1)).numpy()
  assert np.all(out[:, :2] == NEG_INF)
  np.testing.assert_array_equal(out[:, 2:], logits.numpy()[:, 2:])
  assert suppress(logits, ()) is logits
  np.testing.assert_array_equal(choose(out, temperature=0.0), [2, 2])
  sampled = choose(np.tile(out[:1], [200, 1]), temperature=5.0,
                   seed=np.arange(200))
  assert set(sampled.tolist()) == {2, 3}
