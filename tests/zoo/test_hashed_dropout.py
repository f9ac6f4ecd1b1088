"""HashedDropout: Keras Dropout's contract with a hashed mask, its seed state
in checkpoints, and the models that use it."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.backbones.decoder import build_decoder_backbone
from zoo.backbones.seq2seq import build_seq2seq_backbone
from zoo.layers.hashed_dropout import HashedDropout, hashed_keep_mask
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


def _bits(mask):
  return hex(int("".join("1" if k else "0" for k in mask.reshape(-1)), 2))


@pytest.mark.parametrize("jit", [False, True])
def test_mask_sequence_is_frozen(jit):
  """Integer-only, so the same on every machine: these masks are the ones
  the published runs drew; a change here changes every trained model."""
  layer = HashedDropout(0.5, seed=3)
  call = tf.function(lambda x: layer(x, training=True), jit_compile=jit)
  masks = [_bits(call(tf.ones([4, 16])).numpy() > 0) for _ in range(3)]
  assert masks == ["0x2bcf68c71c89fe4a", "0xbab8359820955ee",
                   "0x6a387e06551ba387"]
  np.testing.assert_array_equal(layer.seed_generator.state.numpy(), [3, 3])


def test_inference_is_identity_and_rate_edges():
  x = tf.random.normal([4, 5, 6])
  np.testing.assert_array_equal(HashedDropout(0.3)(x, training=False), x)
  np.testing.assert_array_equal(HashedDropout(0.3)(x), x)  # default: inference
  np.testing.assert_array_equal(HashedDropout(0.0)(x, training=True), x)
  np.testing.assert_array_equal(HashedDropout(1.0)(x, training=True),
                                np.zeros([4, 5, 6]))
  with pytest.raises(ValueError, match="rate"):
    HashedDropout(1.5)


def test_noise_shape_broadcasts():
  layer = HashedDropout(0.5, noise_shape=(None, None, 1), seed=1)
  y = layer(tf.ones([16, 20, 8]), training=True).numpy()
  assert np.all(y.min(-1) == y.max(-1))  # whole vectors kept or dropped
  assert 0.4 < (y[..., 0] > 0).mean() < 0.6
  np.testing.assert_allclose(y[y > 0], 2.0)
  # A fixed entry: one mask row shared by every example of the batch.
  shared = HashedDropout(0.5, noise_shape=(1, 8), seed=2)
  y = shared(tf.ones([6, 8]), training=True).numpy()
  assert all(np.array_equal(y[0], y[i]) for i in range(6))


def test_mixed_precision_keeps_the_compute_dtype():
  layer = HashedDropout(0.2, dtype="mixed_bfloat16")
  y = layer(tf.ones([8, 8]), training=True)
  assert y.dtype == tf.bfloat16


def test_config_round_trip():
  layer = HashedDropout(0.25, noise_shape=(None, 1), seed=5, name="d")
  again = HashedDropout.from_config(layer.get_config())
  assert (again.rate, again.noise_shape, again.seed) == (0.25, (None, 1), 5)


def test_seed_state_is_a_variable_not_a_weight():
  layer = HashedDropout(0.1, seed=4)
  assert layer.weights == [] and layer.count_params() == 0
  [state] = layer.variables
  assert state.dtype == "int64" and not state.trainable
  np.testing.assert_array_equal(state.numpy(), [4, 0])
  layer(tf.ones([3]), training=True)
  np.testing.assert_array_equal(state.numpy(), [4, 1])
  layer(tf.ones([3]), training=False)  # inference draws nothing
  np.testing.assert_array_equal(state.numpy(), [4, 1])
  assert HashedDropout(0.0).variables == []  # never draws, holds no seed


def test_checkpoint_round_trip_of_the_seed_state(tmp_path):
  x = tf.ones([8, 32])
  layer = HashedDropout(0.5, seed=11)
  for _ in range(3):
    layer(x, training=True)
  path = tf.train.Checkpoint(layer=layer).save(os.path.join(tmp_path, "c"))
  names = [name for name, _ in tf.train.list_variables(path)]
  assert "layer/seed_state/state/.ATTRIBUTES/VARIABLE_VALUE" in names
  expected = [layer(x, training=True).numpy() for _ in range(2)]
  other = HashedDropout(0.5, seed=99)
  tf.train.Checkpoint(layer=other).restore(path).assert_consumed()
  np.testing.assert_array_equal(other.seed_generator.state.numpy(), [11, 3])
  for want in expected:
    np.testing.assert_array_equal(other(x, training=True), want)


def _models():
  """A built model of each family, every dropout active."""
  encoder = build_text_classifier(dict(get_preset("encoder", "tiny"),
                                       conv_kernel_size=3, token_dropout=0.2),
                                  num_classes=2)
  ids = tf.constant([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]], tf.int32)
  decoder = build_decoder_backbone(dict(get_preset("decoder", "tiny"),
                                        vocabulary_size=20, dropout=0.1))
  seq2seq = build_seq2seq_backbone(dict(get_preset("seq2seq", "tiny"),
                                        dropout=0.1))
  pair = {"source_ids": ids, "target_ids": ids[:, ::-1]}
  return [(encoder, ids), (decoder, ids), (seq2seq, pair)]


def _seed_states(model):
  weights = {id(w) for w in model.weights}
  return [v for v in model.variables if id(v) not in weights]


def test_every_seed_state_of_every_family_is_checkpointed(tmp_path):
  """Every dropout in the zoo is a HashedDropout: each seed state among
  model.variables is one a checkpoint saves (a keras.layers.Dropout's
  would not be), and none of them is a weight."""
  for i, (model, inputs) in enumerate(_models()):
    model(inputs)
    states = _seed_states(model)
    path = tf.train.Checkpoint(model=model).save(
        os.path.join(tmp_path, f"model_{i}"))
    saved = [name for name, _ in tf.train.list_variables(path)
             if "/seed_state/" in name]
    assert states and len(saved) == len(states), (model.name, saved)
    assert all(v.dtype == "int64" and not v.trainable for v in states)
    assert not any("seed" in w.path for w in model.weights)


@pytest.mark.parametrize("family", [0, 1, 2])
def test_a_restored_model_continues_the_mask_sequence(tmp_path, family):
  """Kill-and-resume: after restoring a checkpoint taken mid-run, a fresh
  model's next training-mode outputs equal the original run's, exactly."""
  keras.utils.set_random_seed(0)
  model, inputs = _models()[family]
  step = tf.function(lambda x: model(x, training=True), jit_compile=True)
  model(inputs)
  for _ in range(3):
    step(inputs)
  path = tf.train.Checkpoint(model=model).save(os.path.join(tmp_path, "c"))
  expected = [step(inputs) for _ in range(3)]
  keras.utils.set_random_seed(1)  # other initial weights and seeds
  fresh, _ = _models()[family]
  fresh(inputs)  # variables exist before the restore, as in the trainer
  tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
  fresh_step = tf.function(lambda x: fresh(x, training=True), jit_compile=True)
  for want in expected:
    np.testing.assert_array_equal(fresh_step(inputs), want)


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
