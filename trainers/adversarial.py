"""Adversarial training on the embedded input (Miyato et al., 2017).

`--adversarial_epsilon` (classification). Each training example is also
scored with its embedded tokens moved by epsilon, in L2 norm over the whole
example, in the direction that raises its loss fastest: the gradient of the
loss with respect to the embeddings, normalised per example. The step's loss
adds that perturbed loss to the clean one. The perturbation is a constant of
the step (no gradient flows through it), and it costs a second forward and
backward pass. In packed rows (trainers/example_packing.py) each example of
a row is normalised on its own.
"""

import tensorflow as tf

from zoo.tasks.text_classifier import MAX_SEGMENTS
from zoo.tokenizers.wordpiece import PAD_ID


def worst_case_offsets(gradient, segment_ids, epsilon):
  """float[B, T, D] loss gradient at the embeddings, int[B, T] segment ids
  (1, 2, ... per example, 0 = padding) -> float32[B, T, D] offsets along the
  gradient whose L2 norm over each example's tokens is epsilon (zero where
  the gradient is zero)."""
  gradient = tf.cast(gradient, tf.float32)
  segments = tf.one_hot(tf.cast(segment_ids, tf.int32), MAX_SEGMENTS + 1,
                        dtype=tf.float32)  # [B, T, S + 1]
  squares = tf.reduce_sum(tf.square(gradient), axis=-1)  # [B, T]
  per_segment = tf.einsum("bt,bts->bs", squares, segments)  # [B, S + 1]
  norms = tf.sqrt(tf.einsum("bs,bts->bt", per_segment, segments))  # [B, T]
  return epsilon * gradient / tf.maximum(norms, 1e-12)[:, :, None]


def segments_of(features):
  """int32[B, T] segment ids of a batch: packed rows carry them; a plain row
  is one example (1) and its padding (0), a sentence pair too."""
  if isinstance(features, dict) and "segment_ids" in features:
    return tf.cast(features["segment_ids"], tf.int32)
  ids = features["token_ids"] if isinstance(features, dict) else features
  return tf.cast(tf.not_equal(ids, PAD_ID), tf.int32)


def clean_and_adversarial_losses(model, features, loss_of, epsilon,
                                 loss_scale=1.0):
  """Returns (logits, clean loss, adversarial loss) of one replica's batch,
  where loss_of(logits) is the train step's loss of these features. Under
  mixed_float16 the embeddings' gradient is taken of the loss times
  loss_scale, so that it does not underflow in float16 (its direction is
  all that is used); if it overflows, the step's gradients are non-finite
  and the LossScaleOptimizer skips the step and lowers the scale, as for
  any overflow."""
  segment_ids = segments_of(features)  # [B, T]
  backbone = model.backbone
  offsets = tf.zeros(tf.concat([tf.shape(segment_ids), [backbone.hidden_dim]],
                               0), backbone.embedding.compute_dtype)  # [B, T, D]
  with tf.GradientTape() as offset_tape:
    offset_tape.watch(offsets)
    logits = model(features, training=True, embedding_offsets=offsets)
    loss = loss_of(logits)
    scaled_loss = loss * loss_scale
  gradient = tf.stop_gradient(offset_tape.gradient(scaled_loss, offsets))
  adversarial_logits = model(
      features, training=True,
      embedding_offsets=worst_case_offsets(gradient, segment_ids, epsilon))
  return logits, loss, loss_of(adversarial_logits)
