"""MaskedConvBlock: locality, padding invisibility, config, and the encoder
option that puts it in front of the transformer blocks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.layers.masked_conv import MaskedConvBlock
from zoo.presets import get_preset
from zoo.tasks.text_classifier import TextClassifier, build_text_classifier

PRESET = dict(get_preset("encoder", "tiny"), vocabulary_size=50,
              sequence_length=16, hidden_dim=16, num_heads=4, num_layers=1,
              conv_kernel_size=3)


def built_block(kernel_size=3, dim=8):
  keras.utils.set_random_seed(0)
  block = MaskedConvBlock(kernel_size)
  block(tf.zeros([1, 4, dim]), segment_ids=tf.ones([1, 4], tf.int32))
  return block


def test_output_shape_and_a_change_reaches_only_the_kernel_window():
  block = built_block(kernel_size=3)
  x = tf.random.stateless_normal([2, 12, 8], seed=[1, 2])
  mask = tf.ones([2, 12], tf.int32)
  y = block(x, segment_ids=mask).numpy()
  assert y.shape == (2, 12, 8)
  changed = x.numpy()
  changed[:, 5] += np.linspace(-1.0, 2.0, 8)  # not a constant: LayerNorm
  moved = np.abs(block(tf.constant(changed), segment_ids=mask).numpy() - y)
  moved = moved.max(axis=(0, 2))  # [T]
  assert np.all(moved[[4, 5, 6]] > 1e-4)  # the window of width 3 around 5
  np.testing.assert_array_equal(moved[[0, 1, 2, 3, 7, 8, 9, 10, 11]], 0.0)


def test_padded_positions_are_invisible_to_real_ones():
  block = built_block(kernel_size=5)
  x = tf.random.stateless_normal([3, 10, 8], seed=[3, 4]).numpy()
  mask = np.zeros([3, 10], np.int32)
  mask[:, :6] = 1
  noisy = x.copy()
  noisy[:, 6:] = 100.0 * np.random.default_rng(5).normal(size=(3, 4, 8))
  a = block(tf.constant(x), segment_ids=tf.constant(mask)).numpy()
  b = block(tf.constant(noisy), segment_ids=tf.constant(mask)).numpy()
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
  # And the real positions equal a run on the unpadded sequence alone.
  alone = block(tf.constant(x[:, :6]), segment_ids=tf.ones([3, 6], tf.int32))
  np.testing.assert_allclose(a[:, :6], alone.numpy(), atol=1e-6)


def test_packed_examples_do_not_see_each_other():
  block = built_block(kernel_size=5)
  x = tf.random.stateless_normal([1, 11, 8], seed=[7, 8])
  segments = tf.constant([[1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0]], tf.int32)
  packed = block(x, segment_ids=segments).numpy()
  for start, end in ((0, 4), (4, 7), (7, 9)):
    alone = block(x[:, start:end], segment_ids=tf.ones([1, end - start],
                                                       tf.int32))
    np.testing.assert_allclose(packed[:, start:end], alone.numpy(), atol=1e-6)


def test_matches_a_same_padded_conv1d_with_its_kernel():
  block = built_block(kernel_size=3)
  x = tf.random.stateless_normal([2, 7, 8], seed=[9, 1])
  conv = keras.layers.Conv1D(8, 3, padding="same")
  conv.build((None, None, 8))
  conv.set_weights([block.kernel.numpy(), block.bias.numpy()])
  expected = x + keras.activations.gelu(conv(block.norm(x)))
  np.testing.assert_allclose(
      block(x, segment_ids=tf.ones([2, 7], tf.int32)).numpy(),
      expected.numpy(), atol=1e-5)


def test_config_round_trip_and_bad_kernel_size():
  block = built_block(kernel_size=5)
  twin = MaskedConvBlock.from_config(block.get_config())
  assert (twin.kernel_size, twin.dropout) == (5, 0.0)
  for bad in (0, 4):
    with pytest.raises(ValueError, match="kernel_size"):
      MaskedConvBlock(bad)


def test_classifier_with_conv_ignores_added_padding_and_round_trips(tmp_path):
  keras.utils.set_random_seed(2)
  model = build_text_classifier(PRESET, num_classes=2)
  rng = np.random.default_rng(3)
  short = tf.constant(rng.integers(5, 50, size=(3, 8)), tf.int32)
  padded = tf.concat([short, tf.zeros([3, 8], tf.int32)], axis=1)  # [3, 16]
  np.testing.assert_allclose(model(short).numpy(), model(padded).numpy(),
                             atol=1e-5)
  assert any("conv_block" in v.path for v in model.trainable_variables)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, TextClassifier)
  assert loaded.backbone.conv_kernel_size == 3
  np.testing.assert_allclose(loaded(padded).numpy(), model(padded).numpy(),
                             atol=1e-6)


def test_without_conv_the_encoder_has_no_conv_variables():
  # Checkpoints written before the option existed hold no such variables.
  model = build_text_classifier(dict(PRESET, conv_kernel_size=0), 2)
  model(tf.ones([1, 4], tf.int32))
  assert not any("conv" in v.path for v in model.variables)
