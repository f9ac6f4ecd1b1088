"""Input specs of the exported signatures: every input is a vector with the
batch on dimension 0 (one value a row), so a server can batch requests."""

import tensorflow as tf


def batch_vector(name, dtype):
  """tf.TensorSpec [None] of dtype, named as the SignatureDef input."""
  return tf.TensorSpec([None], dtype, name=name)
