"""zoo's MultiHeadAttention and TransformerEncoderBlock: the same weights and
outputs as keras.layers.MultiHeadAttention and keras_hub's pre-LayerNorm
TransformerEncoder they stand in for (pinned versions), their masking, and
their configs."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from zoo.layers.attention import MultiHeadAttention
from zoo.layers.hashed_dropout import HashedDropout
from zoo.layers.transformer_encoder import TransformerEncoderBlock

RNG = np.random.default_rng(0)
QUERY = tf.constant(RNG.normal(size=(3, 5, 8)), tf.float32)
SOURCE = tf.constant(RNG.normal(size=(3, 7, 8)), tf.float32)
SOURCE_MASK = tf.constant(np.arange(7)[None, :] < np.array([[7], [4], [1]]))
PADDING = tf.constant(np.arange(5)[None, :] < np.array([[5], [3], [2]]))


def _state(layer):
  """(weights, seed states) as arrays, in the layer's own order."""
  weights = {id(w) for w in layer.weights}
  return ([w.numpy() for w in layer.weights],
          [v.numpy() for v in layer.variables if id(v) not in weights])


def _assert_same(ours, theirs):
  (our_weights, our_seeds), (their_weights, their_seeds) = ours, theirs
  assert len(our_weights) == len(their_weights)
  for a, b in zip(our_weights, their_weights):
    np.testing.assert_array_equal(a, b)
  assert len(our_seeds) == len(their_seeds)
  for a, b in zip(our_seeds, their_seeds):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_attention_matches_keras_multi_head_attention(dropout, policy):
  mask = SOURCE_MASK[:, None, :]  # [B, 1, S]
  keras.utils.set_random_seed(3)
  theirs = keras.layers.MultiHeadAttention(2, 4, dropout=dropout, dtype=policy)
  want = theirs(QUERY, SOURCE, attention_mask=mask)
  keras.utils.set_random_seed(3)
  ours = MultiHeadAttention(2, 4, dropout=dropout, dtype=policy)
  got = ours(QUERY, SOURCE, attention_mask=mask)
  _assert_same(_state(ours), _state(theirs))
  np.testing.assert_array_equal(got, want)
  if dropout == 0:  # nothing to drop: training mode is the same function
    np.testing.assert_array_equal(
        ours(QUERY, SOURCE, attention_mask=mask, training=True),
        theirs(QUERY, SOURCE, attention_mask=mask, training=True))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("with_attention_mask", [False, True])
def test_encoder_block_matches_keras_hub_transformer_encoder(
    dropout, with_attention_mask):
  attention_mask = None
  if with_attention_mask:  # two examples packed in each row
    segments = tf.constant([[1, 1, 2, 2, 2], [1, 2, 2, 0, 0], [1, 1, 0, 0, 0]])
    attention_mask = tf.equal(segments[:, :, None], segments[:, None, :])
  keras.utils.set_random_seed(5)
  theirs = keras_hub.layers.TransformerEncoder(
      intermediate_dim=16, num_heads=2, dropout=dropout, activation="gelu",
      normalize_first=True)
  want = theirs(QUERY, padding_mask=PADDING, attention_mask=attention_mask)
  keras.utils.set_random_seed(5)
  ours = TransformerEncoderBlock(intermediate_dim=16, num_heads=2,
                                 dropout=dropout, activation="gelu")
  got = ours(QUERY, padding_mask=PADDING, attention_mask=attention_mask)
  _assert_same(_state(ours), _state(theirs))
  np.testing.assert_array_equal(got, want)
  assert ours.count_params() == theirs.count_params()


def test_every_dropout_of_the_blocks_is_hashed_and_active():
  block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, dropout=0.5)
  block(QUERY)
  dropouts = [block.attention.attention_dropout, block.attention_dropout,
              block.mlp_dropout]
  assert all(isinstance(d, HashedDropout) and d.rate == 0.5 for d in dropouts)
  before = [d.seed_generator.state.numpy()[1] for d in dropouts]
  a = block(QUERY, padding_mask=PADDING, training=True)
  b = block(QUERY, padding_mask=PADDING, training=True)
  after = [d.seed_generator.state.numpy()[1] for d in dropouts]
  assert after == [n + 2 for n in before]  # each drew once per call
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(block(QUERY, padding_mask=PADDING),
                                block(QUERY, padding_mask=PADDING))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_padding_changes_nothing_at_real_positions(dropout):
  block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2,
                                  dropout=dropout)
  noise = tf.where(PADDING[:, :, None], 0.0, 100.0)  # only padded positions
  clean = block(QUERY, padding_mask=PADDING).numpy()
  noisy = block(QUERY + noise, padding_mask=PADDING).numpy()
  real = PADDING.numpy()
  np.testing.assert_allclose(noisy[real], clean[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_ignores_masked_keys_and_a_query_with_none_gets_zeros(
    dropout):
  attention = MultiHeadAttention(2, 4, dropout=dropout)
  mask = tf.tile(SOURCE_MASK[:, None, :], [1, 5, 1]).numpy()  # [B, T, S]
  mask[1, 2] = False  # query 2 of row 1 may attend to nothing
  noise = tf.where(SOURCE_MASK[:, :, None], 0.0, 50.0)
  clean = attention(QUERY, SOURCE, attention_mask=mask).numpy()
  noisy = attention(QUERY, SOURCE + noise, attention_mask=mask).numpy()
  has_keys = mask.any(-1)  # [B, T]
  np.testing.assert_allclose(noisy[has_keys], clean[has_keys], rtol=1e-5,
                             atol=1e-5)
  if dropout:  # with weights to drop, a query with no key gets zero weights
    np.testing.assert_allclose(noisy[1, 2], attention.output_dense.bias,
                               atol=1e-6)
  else:  # the fused kernel spreads it uniformly over all keys, as Keras does
    assert not np.allclose(noisy[1, 2], clean[1, 2])


def test_configs_round_trip():
  block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2,
                                  dropout=0.2, activation="gelu",
                                  layer_norm_epsilon=1e-6, name="b")
  again = TransformerEncoderBlock.from_config(block.get_config())
  assert again.get_config() == block.get_config()
  attention = MultiHeadAttention(4, 8, dropout=0.1, name="a")
  again = MultiHeadAttention.from_config(attention.get_config())
  assert again.get_config() == attention.get_config()
  assert (again.num_heads, again.key_dim, again.dropout) == (4, 8, 0.1)


def test_xla_matches_eager():
  block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, dropout=0.0)
  eager = block(QUERY, padding_mask=PADDING)
  xla = tf.function(lambda x: block(x, padding_mask=PADDING),
                    jit_compile=True)(QUERY)
  np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5)
