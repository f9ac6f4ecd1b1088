"""Dropout whose mask is a counter-based integer hash: cheap under XLA on CPU.

Keras draws dropout masks with TF's stateless random ops. Inside an
XLA-compiled training step on CPU those lower to slow code: on a 2-core
machine one keras.layers.Dropout call on a [64, 12, 256] tensor takes 40-50
ms, the same draw with the Philox algorithm named explicitly 1-2 ms, and
this hash 0.25-0.4 ms, no more than the scaling alone
(`python -m benchmarks.dropout_speed`).

HashedDropout keeps Keras's Dropout contract (rate, noise_shape, a seed
state advanced on every training call, inverted scaling, identity at
inference) and changes only how the mask is drawn: element i of the noise
shape is kept when mix32((i + offset) * golden) >= rate * 2^32, where mix32
is MurmurHash3's 32-bit finalizer and `offset` is the same finalizer applied
to this call's seed. Each call therefore reads a window of one well-mixed
2^32-long sequence that starts at a pseudo-random place.

The seed state is a keras.random.SeedGenerator, so it is among
`layer.variables` (not `layer.weights`: it adds nothing to count_params) and
it starts from the same Python-random draw as Keras's own Dropout. The
layer also exposes that variable to TensorFlow checkpoints (`seed_state`),
so `tf.train.Checkpoint(model=model)` saves and restores where every mask
sequence stands: a resumed run draws the masks the uninterrupted run would
have drawn.
"""

import keras
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


class SeedState(tf.Module):
  """A checkpoint node holding one seed variable.

  Keras lists a SeedGenerator's state among its layer's variables but does
  not make it a dependency of TF checkpoints; a tf.Module attribute of the
  layer is one (and Keras leaves it out of the layer's weights)."""

  def __init__(self, variable, name=None):
    super().__init__(name=name)
    self.state = variable  # int64[2]: (seed, calls so far)


@keras.saving.register_keras_serializable(package="zoo")
class HashedDropout(keras.layers.Layer):
  """float[...] -> float[...]: in training, each element (or each slice of
  `noise_shape`, whose None entries follow the input) is zeroed with
  probability `rate` and the rest scaled by 1 / (1 - rate); at inference
  the input passes unchanged. `seed` (an int, or None for one drawn from
  Python's random module, as keras.layers.Dropout does) starts the seed
  state, which advances by one on every training call."""

  def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0 <= rate <= 1:
      raise ValueError(f"rate must be in [0, 1], got {rate}")
    self.rate = rate
    self.noise_shape = None if noise_shape is None else tuple(noise_shape)
    self.seed = seed
    self.supports_masking = True
    if rate > 0:  # like keras.layers.Dropout: no seed drawn when never used
      self.seed_generator = keras.random.SeedGenerator(seed)
      self.seed_state = SeedState(self.seed_generator.state, name="seed_state")
    self.built = True  # nothing to create from the input shape

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

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
    return config
