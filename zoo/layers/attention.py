"""Multi-head scaled dot-product attention of a query sequence over a
key/value sequence, with its attention dropout drawn by HashedDropout.

It computes exactly what keras.layers.MultiHeadAttention computes for
rank-3 inputs (the same sublayers, einsum equations, initializer clones and
op order), so a model built with it after `keras.utils.set_random_seed`
starts from the same weights and gives the same outputs, bit for bit:
  - query, key and value projections are EinsumDense "abc,cde->abde"
    ([B, L, D] x [D, H, Dh] + bias [H, Dh]), the output projection
    "abcd,cde->abe" ([B, T, H, Dh] x [H, Dh, D] + bias [D]), each with its
    own clone of the kernel and bias initializers, created in the order
    query, key, value, dropout, output;
  - with dropout, the query is scaled by 1/sqrt(Dh), the scores are masked
    to -1e9 (-3e4 in float16), softmaxed over the keys, zeroed where masked
    (a row with no key left gets no weight), then dropped;
  - without dropout, keras.ops.dot_product_attention runs (scale applied to
    the logits, softmax in float32), as Keras does when there is nothing to
    drop.
"""

import math

import keras
from keras import ops

from zoo.layers.hashed_dropout import HashedDropout

# Letters as keras.layers.MultiHeadAttention builds them for rank-3 inputs:
# a batch, b query position, e key position, c head, d head channel.
_PROJECT = "abc,cde->abde"  # [B, L, D] x [D, H, Dh] -> [B, L, H, Dh]
_SCORES = "aecd,abcd->acbe"  # key [B, S, H, Dh], query [B, T, H, Dh] -> [B, H, T, S]
_COMBINE = "acbe,aecd->abcd"  # [B, H, T, S] x value [B, S, H, Dh] -> [B, T, H, Dh]
_OUTPUT = "abcd,cde->abe"  # [B, T, H, Dh] x [H, Dh, D] -> [B, T, D]


def clone_initializer(initializer):
  """A fresh instance of `initializer` (a new seed when it had none), so two
  weights never share initial values."""
  return type(initializer).from_config(initializer.get_config())


@keras.saving.register_keras_serializable(package="zoo")
class MultiHeadAttention(keras.layers.Layer):
  """query float[B, T, D], value float[B, S, D'] (also the keys) ->
  float[B, T, D]. attention_mask bool[B, T or 1, S]: True where a query
  position may attend to a key position."""

  def __init__(self, num_heads, key_dim, dropout=0.0,
               kernel_initializer="glorot_uniform", bias_initializer="zeros",
               **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.key_dim = key_dim  # Dh, for queries, keys and values alike
    self.dropout = dropout
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)
    self.scale = 1.0 / math.sqrt(float(key_dim))

  def _projection(self, equation, output_shape, bias_axes, name):
    return keras.layers.EinsumDense(
        equation, output_shape=output_shape, bias_axes=bias_axes,
        kernel_initializer=clone_initializer(self.kernel_initializer),
        bias_initializer=clone_initializer(self.bias_initializer),
        dtype=self.dtype_policy, name=name)

  def build(self, query_shape, value_shape):
    if len(query_shape) != 3 or len(value_shape) != 3:
      raise ValueError("MultiHeadAttention takes [batch, length, features] "
                       f"inputs; got {query_shape} and {value_shape}")
    heads = [self.num_heads, self.key_dim]
    self.query_dense = self._projection(_PROJECT, [None] + heads, "de", "query")
    self.query_dense.build(query_shape)
    self.key_dense = self._projection(_PROJECT, [None] + heads, "de", "key")
    self.key_dense.build(value_shape)
    self.value_dense = self._projection(_PROJECT, [None] + heads, "de", "value")
    self.value_dense.build(value_shape)
    self.attention_dropout = HashedDropout(self.dropout, dtype=self.dtype_policy,
                                           name="attention_dropout")
    self.output_dense = self._projection(_OUTPUT, [None, query_shape[-1]], "e",
                                         "attention_output")
    self.output_dense.build(tuple(query_shape[:-1]) + tuple(heads))
    self.built = True

  def call(self, query, value, attention_mask=None, training=None):
    key, value = self.project_memory(value)
    return self.attend_memory(query, key, value, attention_mask, training)

  def project_memory(self, value):
    """value float[B, S, D'] -> (keys, values) float[B, S, H, Dh]: what a
    decoder computes once per source and reuses at every step."""
    return self.key_dense(value), self.value_dense(value)

  def attend_memory(self, query, key, value, attention_mask=None,
                    training=None):
    """query float[B, T, D] over projected keys/values [B, S, H, Dh] (from
    project_memory) -> float[B, T, D]; the same arithmetic as `call`."""
    query = self.query_dense(query)  # [B, T, H, Dh]
    mask = None
    if attention_mask is not None:  # [B, T or 1, S] -> [B, 1, T or 1, S]
      mask = ops.expand_dims(ops.cast(attention_mask, "bool"), axis=1)
    if self.dropout > 0:
      out = self._attend_with_dropout(query, key, value, mask, training)
    else:
      out = ops.dot_product_attention(query, key, value, mask=mask,
                                      scale=self.scale)  # [B, T, H, Dh]
    return self.output_dense(out)  # [B, T, D]

  def step_memory(self, value):
    """value float[B, S, D'] -> (keys float[B, H, Dh, S], values float[B, H,
    S, Dh]): project_memory laid out for attend_memory_step's batched
    matmuls, computed once per source (a search)."""
    key, value = self.project_memory(value)  # [B, S, H, Dh] each
    return ops.transpose(key, [0, 2, 3, 1]), ops.transpose(value, [0, 2, 1, 3])

  def attend_memory_step(self, query, keys, values, mask):
    """One query position a row, at inference: query float[B, D] over
    step_memory's keys [B, H, Dh, S] and values [B, H, S, Dh], mask bool[B,
    S] -> float[B, D].

    attend_memory's arithmetic (up to float rounding) in the few ops a
    decoding step wants: each projection one 2-D matmul with the layer's own
    kernel, and the scores and the weighted sum one batched matmul each over
    the memory as step_memory laid it out (no transpose a step).
    """
    heads, width = self.num_heads, self.num_heads * self.key_dim

    def dense(x, layer, shape):  # x float[B, K] x kernel reshaped [K, N]
      kernel = ops.reshape(ops.cast(layer.kernel, x.dtype), shape)
      return ops.matmul(x, kernel) + ops.reshape(ops.cast(layer.bias, x.dtype),
                                                 shape[-1:])

    q = ops.reshape(dense(query, self.query_dense, [-1, width]),
                    [-1, heads, 1, self.key_dim])  # [B, H, 1, Dh]
    scores = ops.cast(ops.matmul(q, keys), "float32") * self.scale
    scores = ops.where(mask[:, None, None, :], scores, -1e9)  # [B, H, 1, S]
    weights = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
    out = ops.matmul(weights, values)  # [B, H, 1, Dh]
    return dense(ops.reshape(out, [-1, width]), self.output_dense,
                 [width, -1])  # [B, D]

  def _attend_with_dropout(self, query, key, value, mask, training):
    """[B, T, H, Dh], [B, S, H, Dh] x 2, bool[B, 1, T, S] -> [B, T, H, Dh]."""
    query = ops.multiply(query, ops.cast(self.scale, query.dtype))
    scores = ops.einsum(_SCORES, key, query)  # [B, H, T, S]
    if mask is not None:
      lowest = -3e4 if keras.backend.standardize_dtype(
          scores.dtype) == "float16" else -1e9
      scores = ops.where(mask, scores, lowest)
    weights = ops.softmax(scores, axis=-1)  # [B, H, T, S]
    if mask is not None:  # a fully masked row gets no weight, not uniform
      weights = ops.where(mask, weights, 0.0)
    weights = self.attention_dropout(weights, training=training)
    return ops.einsum(_COMBINE, weights, value)  # [B, T, H, Dh]

  def compute_output_shape(self, query_shape, value_shape):
    return query_shape

  def get_config(self):
    config = super().get_config()
    config.update(
        num_heads=self.num_heads, key_dim=self.key_dim, dropout=self.dropout,
        kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        bias_initializer=keras.initializers.serialize(self.bias_initializer))
    return config
