"""BERT's masked-LM masking, drawn from a stateless RNG keyed by (seed, batch).

Each real token (not padding, not a [..] special token) is chosen with
probability `rate`; a row keeps its first `max_predictions` chosen tokens.
Of those, 80% become [MASK], 10% a random vocabulary token and 10% stay (the
model must still predict them). Every draw depends only on (seed, batch
index), so batch i is masked the same way in every run: a resumed run that
skips the batches it trained on masks the next ones exactly as an
uninterrupted run does.
"""

import tensorflow as tf


def mask_tokens(ids, batch_index, seed, rate, max_predictions, mask_id,
                vocabulary_size, unselectable_ids):
  """ids int32[B, W] -> ({token_ids int32[B, W], mask_positions int32[B, P]},
  {ids int32[B, P] (the original tokens), weights float32[B, P]}), with
  P = max_predictions; unused prediction slots have position 0, weight 0."""
  ids = tf.cast(ids, tf.int32)
  width = tf.shape(ids)[1]
  batch_index = tf.cast(batch_index, tf.int64)

  def draw(offset, shape, **kwargs):  # the offset-th draw of this batch
    key = tf.stack([tf.cast(seed, tf.int64), batch_index * 4 + offset])
    return tf.random.stateless_uniform(shape, seed=key, **kwargs)

  selectable = tf.reduce_all(
      ids[:, :, None] != tf.constant(unselectable_ids, tf.int32)[None, None, :],
      axis=-1)  # [B, W]
  chosen = selectable & (draw(1, tf.shape(ids)) < rate)  # [B, W]
  # The first max_predictions chosen positions of each row, in order.
  positions = tf.range(width)[None, :]  # [1, W]
  order = tf.argsort(tf.where(chosen, positions, width + positions),
                     axis=1, stable=True)  # [B, W], chosen ones first
  slots = tf.minimum(max_predictions, width)
  mask_positions = order[:, :slots]  # [B, p]
  weights = tf.cast(tf.gather(chosen, mask_positions, batch_dims=1),
                    tf.float32)  # [B, p]
  mask_positions = tf.where(weights > 0, mask_positions, 0)
  padding = [[0, 0], [0, max_predictions - slots]]
  mask_positions = tf.pad(mask_positions, padding)  # [B, P]
  weights = tf.pad(weights, padding)  # [B, P]
  originals = tf.gather(ids, mask_positions, batch_dims=1)  # [B, P]
  # 80% [MASK], 10% a random token, 10% unchanged.
  action = draw(2, tf.shape(originals))  # [B, P]
  random_ids = draw(3, tf.shape(originals), minval=0,
                    maxval=vocabulary_size, dtype=tf.int32)  # [B, P]
  replaced = tf.where(action < 0.8, mask_id,
                      tf.where(action < 0.9, random_ids, originals))  # [B, P]
  rows = tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None],
                         tf.shape(mask_positions))  # [B, P]
  live = weights > 0
  indices = tf.stack([tf.boolean_mask(rows, live),
                      tf.boolean_mask(mask_positions, live)], axis=1)  # [N, 2]
  token_ids = tf.tensor_scatter_nd_update(
      ids, indices, tf.boolean_mask(replaced, live))  # [B, W]
  return ({"token_ids": token_ids, "mask_positions": mask_positions},
          {"ids": originals, "weights": weights})
