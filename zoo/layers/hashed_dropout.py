"""Dropout whose mask is a counter-based integer hash: cheap under XLA on CPU.

Keras draws dropout masks with TF's stateless random ops. Inside an
XLA-compiled training step on CPU those lower to slow code: on this 2-core
machine one keras.layers.Dropout call on a [64, 12, 256] tensor took about
50 ms, the same draw with the Philox algorithm named explicitly about 2 ms,
and this hash 0.36 ms, no more than the scaling alone
(`python -m benchmarks.dropout_speed`). On the small SST-2 encoder Keras's
dropout made up about a third of every XLA training step.

HashedDropout keeps Keras's Dropout contract (rate, noise_shape, a
SeedGenerator advanced on every training call, inverted scaling, identity at
inference) and changes only how the mask is drawn: element i of the noise
shape is kept when mix32((i + offset) * golden) >= rate * 2^32, where mix32
is MurmurHash3's 32-bit finalizer and `offset` is the same finalizer applied
to this call's seed. Each call therefore reads a window of one well-mixed
2^32-long sequence that starts at a pseudo-random place.

keras_hub's TransformerEncoder and Keras's MultiHeadAttention create their own
keras.layers.Dropout inside build(). `use_hashed_dropout(layer)` turns those
instances into HashedDropout in place (the subclass adds no state, so
weights, seed states and checkpoint layout stay exactly as they were);
TransformerEncoderBlock and MultiHeadAttention below do that at the end of
their build.
"""

import keras
import keras_hub
import tensorflow as tf

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, odd: a bijective stride
_MIX_1 = 0x85EBCA6B  # MurmurHash3 fmix32 multipliers
_MIX_2 = 0xC2B2AE35


def _mix32(x):
  """MurmurHash3's fmix32 on a uint32 tensor: every input bit flips each
  output bit with probability about 1/2."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
  x = x * tf.constant(_MIX_1, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
  x = x * tf.constant(_MIX_2, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _to_uint32(x):
  """Low 32 bits of an integer tensor, as uint32."""
  return tf.cast(tf.bitwise.bitwise_and(tf.cast(x, tf.int64), 0xFFFFFFFF),
                 tf.uint32)


def hashed_keep_mask(shape, seed, rate):
  """bool[shape]: True with probability 1 - rate, from an int seed[2]."""
  seed = _to_uint32(seed)  # [2]
  offset = _mix32(seed[0] * tf.constant(_GOLDEN, tf.uint32) + _mix32(seed[1]))
  count = tf.reduce_prod(shape)
  index = _to_uint32(tf.range(count, dtype=tf.int32))  # [N]
  bits = _mix32((index + offset) * tf.constant(_GOLDEN, tf.uint32))  # [N]
  threshold = tf.constant(min(int(rate * 2.0 ** 32), 2 ** 32 - 1), tf.uint32)
  return tf.reshape(bits >= threshold, shape)


@keras.saving.register_keras_serializable(package="zoo")
class HashedDropout(keras.layers.Dropout):
  """keras.layers.Dropout with the mask drawn by `hashed_keep_mask`."""

  def call(self, inputs, training=False):
    if not training or self.rate <= 0:
      return inputs
    if self.rate >= 1:
      return tf.zeros_like(inputs)
    shape = tf.shape(inputs)
    if self.noise_shape is not None:  # None entries follow the input
      shape = tf.stack([shape[i] if dim is None else dim
                        for i, dim in enumerate(self.noise_shape)])
    keep = hashed_keep_mask(shape, self.seed_generator.next(), self.rate)
    scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros_like(inputs))  # broadcast


def use_hashed_dropout(layer):
  """Turns every plain keras.layers.Dropout inside `layer` into a
  HashedDropout (same object, same state); returns how many it changed."""
  changed = 0
  for sublayer in layer._flatten_layers(include_self=False, recursive=True):
    if type(sublayer) is keras.layers.Dropout:  # pylint: disable=unidiomatic-typecheck
      sublayer.__class__ = HashedDropout
      changed += 1
  return changed


@keras.saving.register_keras_serializable(package="zoo")
class TransformerEncoderBlock(keras_hub.layers.TransformerEncoder):
  """keras_hub's TransformerEncoder with its dropouts drawn by HashedDropout."""

  def build(self, inputs_shape):
    super().build(inputs_shape)
    use_hashed_dropout(self)


@keras.saving.register_keras_serializable(package="zoo")
class MultiHeadAttention(keras.layers.MultiHeadAttention):
  """Keras's MultiHeadAttention with its attention dropout drawn by
  HashedDropout."""

  def _build_attention(self, rank):
    super()._build_attention(rank)
    use_hashed_dropout(self)
