"""Encoder backbone and classifier: shapes, masking, head size, round trips."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from zoo.presets import ENCODER_PRESETS, get_preset
from zoo.tasks.text_classifier import TextClassifier, build_text_classifier

PRESET = dict(get_preset("encoder", "tiny"), vocabulary_size=50,
              sequence_length=16, hidden_dim=16, num_heads=4, num_layers=2)


def random_ids(batch, length, seed=0, pad_from=None):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, PRESET["vocabulary_size"], size=(batch, length))
  ids[:, 0] = 2  # [CLS]
  if pad_from is not None:
    ids[:, pad_from:] = 0
  return tf.constant(ids, tf.int32)


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(1)
  m = build_text_classifier(PRESET, num_classes=3)
  m(random_ids(1, 16))
  return m


def test_logits_shape_and_dtype(model):
  logits = model(random_ids(5, 16))
  assert logits.shape == (5, 3) and logits.dtype == tf.float32


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "cls",
                                     "attention"])
def test_adding_padding_changes_nothing(pooling):
  keras.utils.set_random_seed(2)
  m = build_text_classifier(dict(PRESET, pooling=pooling), num_classes=2)
  short = random_ids(3, 8, seed=3)  # no padding
  padded = tf.concat([short, tf.zeros([3, 8], tf.int32)], axis=1)  # [3, 16]
  np.testing.assert_allclose(m(short).numpy(), m(padded).numpy(), atol=1e-5)


def test_padding_content_is_invisible(model):
  ids = random_ids(2, 16, pad_from=6).numpy()
  other = ids.copy()
  other[:, 6:] = 0
  features = model.encode(tf.constant(ids))
  np.testing.assert_array_equal(features["mask"].numpy()[:, 6:], 0)
  np.testing.assert_array_equal(features["mask"].numpy()[:, :6], 1)
  # Changing a real token changes the output; padding is masked everywhere.
  changed = ids.copy()
  changed[:, 3] = (changed[:, 3] + 1) % 45 + 5
  assert not np.allclose(model(tf.constant(changed)).numpy(),
                         model(tf.constant(ids)).numpy())


def test_attention_head_size_is_hidden_over_heads(model):
  for block in model.backbone.blocks:
    attention = block.attention
    assert attention.num_heads == PRESET["num_heads"]
    assert attention.key_dim == PRESET["hidden_dim"] // PRESET["num_heads"]
  assert len(model.backbone.blocks) == PRESET["num_layers"]


def test_hidden_dim_must_divide_by_heads():
  with pytest.raises(ValueError, match="not divisible"):
    build_text_classifier(dict(PRESET, hidden_dim=18, num_heads=4), 2)


def test_checkpoint_round_trip_gives_identical_outputs(model, tmp_path):
  ids = random_ids(4, 16, seed=5, pad_from=10)
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  keras.utils.set_random_seed(99)  # a differently initialised twin
  twin = build_text_classifier(PRESET, num_classes=3)
  twin(ids)
  assert not np.allclose(twin(ids).numpy(), model(ids).numpy())
  tf.train.Checkpoint(model=twin).restore(path).assert_consumed()
  np.testing.assert_array_equal(twin(ids).numpy(), model(ids).numpy())


def test_keras_config_and_weights_round_trip(model, tmp_path):
  ids = random_ids(2, 16, seed=6)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, TextClassifier)
  np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(), atol=1e-6)
  assert loaded.get_config()["num_classes"] == 3


def test_presets_are_plain_dicts_and_unknown_preset_is_an_error():
  for preset in ENCODER_PRESETS.values():
    assert isinstance(preset, dict)
    assert preset["hidden_dim"] % preset["num_heads"] == 0
  with pytest.raises(ValueError, match="Unknown encoder preset"):
    get_preset("encoder", "huge")


def test_attention_pooling_weights_only_real_positions():
  from zoo.tasks.text_classifier import attention_pooling
  sequence = tf.constant(np.arange(24, dtype=np.float32).reshape(2, 4, 3))
  mask = tf.constant([[1, 1, 0, 0], [0, 0, 0, 0]], tf.int32)
  scores = tf.constant([[[0.0], [np.log(3.0)], [50.0], [50.0]],
                        [[1.0], [2.0], [3.0], [4.0]]], tf.float32)
  pooled = attention_pooling(sequence, mask, scores).numpy()
  # Row 0: weights 1/4 and 3/4 on the two real positions; the padded
  # positions' large scores change nothing. Row 1 has no real position.
  np.testing.assert_allclose(pooled[0], 0.25 * np.arange(3) + 0.75 * np.arange(3, 6),
                             rtol=1e-6)
  np.testing.assert_array_equal(pooled[1], np.zeros(3))


def test_attention_pooling_has_a_score_layer_and_round_trips_its_config():
  m = build_text_classifier(dict(PRESET, pooling="attention"), num_classes=2)
  m(random_ids(2, 8))
  assert any("pooling_score" in v.path for v in m.trainable_variables)
  twin = TextClassifier.from_config(m.get_config())
  assert twin.pooling == "attention"


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "cls",
                                     "attention"])
@pytest.mark.parametrize("conv_kernel_size", [0, 3])
def test_packed_rows_give_each_example_its_own_logits(pooling,
                                                      conv_kernel_size):
  from zoo.tasks.text_classifier import MAX_SEGMENTS
  keras.utils.set_random_seed(4)
  m = build_text_classifier(dict(PRESET, pooling=pooling,
                                 conv_kernel_size=conv_kernel_size), 2)
  rng = np.random.default_rng(7)
  examples = [np.concatenate([[2], rng.integers(5, 50, size=n)])
              for n in (3, 0, 6, 4)]  # lengths 4, 1, 7, 5: two rows of 16
  rows = [[0, 1, 2], [3]]
  ids, segments, positions = (np.zeros([2, 16], np.int32) for _ in range(3))
  for r, row in enumerate(rows):
    start = 0
    for s, i in enumerate(row):
      n = len(examples[i])
      ids[r, start:start + n] = examples[i]
      segments[r, start:start + n] = s + 1
      positions[r, start:start + n] = np.arange(n)
      start += n
  packed = m({"token_ids": tf.constant(ids), "segment_ids": tf.constant(segments),
              "positions": tf.constant(positions)}).numpy()
  assert packed.shape == (2, MAX_SEGMENTS, 2)
  for r, row in enumerate(rows):
    for s, i in enumerate(row):
      alone = m(tf.constant(examples[i][None], tf.int32)).numpy()[0]
      np.testing.assert_allclose(packed[r, s], alone, atol=2e-5)
