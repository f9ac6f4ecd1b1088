"""HashedDropout: Keras Dropout's contract with a hashed mask, and the models
that use it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.backbones.decoder import build_decoder_backbone
from zoo.backbones.seq2seq import build_seq2seq_backbone
from zoo.layers.hashed_dropout import (HashedDropout, MultiHeadAttention,
                                       TransformerEncoderBlock,
                                       hashed_keep_mask, use_hashed_dropout)
from zoo.presets import get_preset
from zoo.tasks.text_classifier import build_text_classifier


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("jit", [False, True])
def test_keep_fraction_and_mean(rate, jit):
  layer = HashedDropout(rate, seed=3)
  x = tf.ones([64, 40, 128])
  call = tf.function(lambda x: layer(x, training=True), jit_compile=jit)
  y = call(x).numpy()
  kept = y > 0
  # 327,680 draws: the binomial standard deviation is under 0.001.
  assert abs(kept.mean() - (1 - rate)) < 0.005
  np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
  assert abs(y.mean() - 1.0) < 0.01  # inverted scaling keeps the mean


def test_masks_are_independent_across_calls_and_positions():
  layer = HashedDropout(0.5, seed=0)
  x = tf.ones([32, 64, 64])
  a = layer(x, training=True).numpy() > 0
  b = layer(x, training=True).numpy() > 0
  # Two independent fair masks agree on half the elements.
  assert abs((a == b).mean() - 0.5) < 0.01
  # Neighbouring elements are not correlated (a counter hash could be).
  flat = a.reshape(-1).astype(np.float64)
  assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01
  # Rows differ from each other.
  assert not all(np.array_equal(a[0], a[i]) for i in range(1, 32))


def test_same_seed_same_mask_and_other_seed_other_mask():
  shape = tf.constant([1000])
  first = hashed_keep_mask(shape, tf.constant([7, 1]), 0.5).numpy()
  again = hashed_keep_mask(shape, tf.constant([7, 1]), 0.5).numpy()
  other = hashed_keep_mask(shape, tf.constant([7, 2]), 0.5).numpy()
  assert np.array_equal(first, again)
  assert 0.4 < (first == other).mean() < 0.6


def test_inference_is_identity_and_rate_edges():
  x = tf.random.normal([4, 5, 6])
  np.testing.assert_array_equal(HashedDropout(0.3)(x, training=False), x)
  np.testing.assert_array_equal(HashedDropout(0.0)(x, training=True), x)
  np.testing.assert_array_equal(HashedDropout(1.0)(x, training=True),
                                np.zeros([4, 5, 6]))


def test_noise_shape_broadcasts():
  layer = HashedDropout(0.5, noise_shape=(None, None, 1), seed=1)
  y = layer(tf.ones([16, 20, 8]), training=True).numpy()
  assert np.all(y.min(-1) == y.max(-1))  # whole vectors kept or dropped
  assert 0.4 < (y[..., 0] > 0).mean() < 0.6


def test_mixed_precision_keeps_the_compute_dtype():
  layer = HashedDropout(0.2, dtype="mixed_bfloat16")
  y = layer(tf.ones([8, 8]), training=True)
  assert y.dtype == tf.bfloat16


def test_config_round_trip():
  layer = HashedDropout(0.25, noise_shape=(None, 1), seed=5, name="d")
  again = HashedDropout.from_config(layer.get_config())
  assert (again.rate, again.noise_shape, again.seed) == (0.25, (None, 1), 5)


def test_keras_hub_and_keras_layers_are_converted_in_place():
  block = TransformerEncoderBlock(intermediate_dim=8, num_heads=2, dropout=0.1)
  block.build((None, 5, 4))
  plain = keras.layers.MultiHeadAttention(2, 2, dropout=0.1)
  plain(tf.ones([1, 3, 4]), tf.ones([1, 3, 4]))
  before = [v.path for v in plain.variables]
  assert use_hashed_dropout(plain) == 1
  assert [v.path for v in plain.variables] == before  # no state added
  mha = MultiHeadAttention(2, 2, dropout=0.1)
  mha(tf.ones([1, 3, 4]), tf.ones([1, 3, 4]))
  for layer in (block, plain, mha):
    dropouts = [l for l in layer._flatten_layers(include_self=False)
                if isinstance(l, keras.layers.Dropout)]
    assert dropouts and all(type(l) is HashedDropout for l in dropouts)


def _dropouts(model):
  return [l for l in model._flatten_layers(include_self=False)
          if isinstance(l, keras.layers.Dropout)]


def test_every_family_draws_its_dropout_by_hash():
  encoder = build_text_classifier(get_preset("encoder", "tiny"), num_classes=2)
  encoder(tf.ones([1, 8], tf.int32))
  decoder = build_decoder_backbone(dict(get_preset("decoder", "tiny"),
                                        vocabulary_size=20, dropout=0.1))
  decoder(tf.ones([1, 8], tf.int32))
  seq2seq = build_seq2seq_backbone(dict(get_preset("seq2seq", "tiny"),
                                        dropout=0.1))
  seq2seq({"source_ids": tf.ones([1, 8], tf.int32),
           "target_ids": tf.ones([1, 8], tf.int32)})
  for model in (encoder, decoder, seq2seq):
    dropouts = _dropouts(model)
    assert dropouts and all(type(l) is HashedDropout for l in dropouts), (
        model.name, [type(l).__name__ for l in dropouts])


def test_training_mode_differs_between_steps_inference_does_not():
  keras.utils.set_random_seed(0)
  model = build_text_classifier(dict(get_preset("encoder", "tiny"),
                                     dropout=0.3), num_classes=2)
  ids = tf.constant(np.random.default_rng(0).integers(3, 900, (4, 16)),
                    tf.int32)
  train = tf.function(lambda ids: model(ids, training=True), jit_compile=True)
  assert not np.allclose(train(ids), train(ids))
  np.testing.assert_array_equal(model(ids, training=False),
                                model(ids, training=False))
