"""A residual 1-D convolution block that stays inside each example.

Pre-LayerNorm, like the transformer blocks it sits in front of:
    y = x + dropout(gelu(conv1d(layer_norm(x))))
where the "same"-padded convolution reads a neighbour only if it belongs to
the same example (segment) as the centre position; padding and other
examples packed into the row (trainers/example_packing.py) count as zeros.
So a real position sees exactly what it would see with its example alone:
adding padding, or packing other examples beside it, changes nothing. It
gives the encoder a local, position-independent view of each k-gram, which
a small encoder trained from scratch on short phrases does not learn from
attention alone.
"""

import keras
from keras import ops

from zoo.layers.hashed_dropout import HashedDropout


@keras.saving.register_keras_serializable(package="zoo")
class MaskedConvBlock(keras.layers.Layer):
  """float[B, T, D] sequence, int[B, T] segment_ids (0 = padding; one id per
  example) -> float[B, T, D]."""

  def __init__(self, kernel_size, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    if kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    self.kernel_size = kernel_size
    self.dropout = dropout
    self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm",
                                                dtype=self.dtype_policy)
    self.dropout_layer = HashedDropout(dropout, name="dropout",
                                       dtype=self.dtype_policy)

  def build(self, input_shape):
    hidden_dim = input_shape[-1]
    self.norm.build(input_shape)
    self.kernel = self.add_weight(
        name="kernel", shape=(self.kernel_size, hidden_dim, hidden_dim),
        initializer="glorot_uniform")  # [k, D_in, D_out], like Conv1D's
    self.bias = self.add_weight(name="bias", shape=(hidden_dim,),
                                initializer="zeros")

  def call(self, x, segment_ids, training=None):
    k, half = self.kernel_size, self.kernel_size // 2
    length, hidden_dim = ops.shape(x)[1], ops.shape(x)[2]
    segments = ops.cast(segment_ids, "int32")  # [B, T]
    h = self.norm(x)  # [B, T, D]
    h_padded = ops.pad(h, [[0, 0], [half, half], [0, 0]])  # [B, T+k-1, D]
    seg_padded = ops.pad(segments, [[0, 0], [half, half]],
                         constant_values=-1)  # [B, T+k-1]
    neighbours = []
    for j in range(k):  # offset j - half
      same = ops.logical_and(
          ops.equal(seg_padded[:, j:j + length], segments),
          ops.greater(segments, 0))  # [B, T]
      neighbours.append(h_padded[:, j:j + length] *
                        ops.cast(same, h.dtype)[:, :, None])  # [B, T, D]
    stacked = ops.concatenate(neighbours, axis=-1)  # [B, T, k*D]
    kernel = ops.reshape(ops.cast(self.kernel, h.dtype),
                         (k * hidden_dim, hidden_dim))  # [k*D, D]
    h = ops.matmul(stacked, kernel) + ops.cast(self.bias, h.dtype)  # [B, T, D]
    h = keras.activations.gelu(h)
    return x + self.dropout_layer(h, training=training)  # [B, T, D]

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(kernel_size=self.kernel_size, dropout=self.dropout)
    return config
