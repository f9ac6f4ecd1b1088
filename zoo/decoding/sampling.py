"""Per-row next-token choice: greedy, temperature, top-k and top-p (nucleus).

Every row of a batch carries its own settings, and its own random stream
seeded by (seed[row], position), so a row samples the same token whether it is
decoded alone or in a batch with others, and the same seed gives the same
text. Rules, applied in this order (the Hugging Face / keras_hub order):
  temperature  0 = greedy (argmax; top_k and top_p are then irrelevant);
               t > 0 divides the logits by t.
  top_k        0 = no limit; k keeps the k most likely tokens (k >= V: all).
  top_p        in (0, 1]; keeps the smallest set of most likely tokens whose
               probability reaches top_p (always at least one); 1 = no limit.
Sampling is the Gumbel-max trick: argmax(logits + Gumbel noise) is a draw
from softmax(logits), and with one token left it is that token, so top_k=1
equals greedy.
"""

import tensorflow as tf

NEG_INF = -1e9


def suppress(logits, token_ids):
  """Makes `token_ids` (e.g. padding, unknown) impossible: float32[B, V]."""
  if not token_ids:
    return logits
  vocabulary_size = logits.shape[-1] or tf.shape(logits)[-1]
  banned = tf.reduce_any(tf.one_hot(list(token_ids), vocabulary_size,
                                    on_value=True, off_value=False), axis=0)
  return tf.where(banned[None, :], tf.constant(NEG_INF, logits.dtype), logits)


def top_k_top_p_filter(logits, top_k, top_p):
  """logits float32[B, V], top_k int32[B], top_p float32[B] -> float32[B, V]."""
  vocabulary_size = tf.shape(logits)[-1]
  ordered = tf.sort(logits, axis=-1, direction="DESCENDING")  # [B, V]
  k = tf.where((top_k <= 0) | (top_k > vocabulary_size), vocabulary_size, top_k)
  kth = tf.gather(ordered, k - 1, batch_dims=1)  # [B]
  ranks = tf.range(vocabulary_size)[None, :]  # [1, V]
  ordered = tf.where(ranks < k[:, None], ordered, NEG_INF)  # top-k of sorted
  probabilities = tf.nn.softmax(ordered, axis=-1)  # [B, V]
  mass_before = tf.cumsum(probabilities, axis=-1, exclusive=True)  # [B, V]
  keep = (mass_before < top_p[:, None]) & (ranks < k[:, None])  # [B, V]
  keep = keep | (ranks == 0)  # the most likely token always stays
  count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1)  # [B]
  threshold = tf.maximum(tf.gather(ordered, count - 1, batch_dims=1), kth)  # [B]
  return tf.where(logits >= threshold[:, None], logits, NEG_INF)


def row_uniform_noise(seed, position, vocabulary_size):
  """Uniform (0, 1) float32[B, V]; row b depends only on (seed[b], position)
  (position: a scalar, or int[B], one a row)."""
  seeds = tf.stack([tf.cast(seed, tf.int64),
                    tf.broadcast_to(tf.cast(position, tf.int64),
                                    tf.shape(seed))],
                   axis=1)  # [B, 2]
  return tf.map_fn(
      lambda s: tf.random.stateless_uniform([vocabulary_size], seed=s,
                                            minval=1e-7, maxval=1.0),
      seeds, fn_output_signature=tf.TensorSpec([vocabulary_size], tf.float32))


def choose_next(logits, temperature, top_k, top_p, seed, position):
  """The next token of each row: int32[B].

  logits float32[B, V]; temperature, top_p float32[B]; top_k int32[B];
  seed int64[B]; position: scalar int (or int[B]), the position being chosen.
  """
  logits = tf.cast(logits, tf.float32)
  greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B]
  scaled = logits / tf.maximum(temperature, 1e-6)[:, None]  # [B, V]
  filtered = top_k_top_p_filter(scaled, top_k, top_p)  # [B, V]
  uniform = row_uniform_noise(seed, position, logits.shape[-1])  # [B, V]
  gumbel = -tf.math.log(-tf.math.log(uniform))  # [B, V]
  sampled = tf.argmax(filtered + gumbel, axis=-1, output_type=tf.int32)  # [B]
  return tf.where(temperature > 0, sampled, greedy)
