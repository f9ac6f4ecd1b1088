"""Input pipeline for text classification: batches of token ids and labels.

The input is a streamed dataset of (text, label id) examples
(trainers.classification_task reads and checks the files). Texts are
tokenized with the model's own tokenizer layer after batching, so training
and serving tokenize identically.
"""

import tensorflow as tf

from zoo.tokenizers.wordpiece import longest_row, row_lengths

def bucket_widths(sequence_length, step=16):
  """Padded widths a batch may have: multiples of `step` up to sequence_length."""
  widths = list(range(step, sequence_length, step))
  return widths + [sequence_length]


def trim_to_bucket(ids, widths):
  """Cuts padding columns: int32[B, L] -> int32[B, W], W the smallest width in
  `widths` that holds the longest row (padding is masked, so outputs agree)."""
  longest = longest_row(ids)
  widths = tf.constant(widths, tf.int32)
  width = tf.gather(widths, tf.argmax(tf.cast(widths >= longest, tf.int32)))
  return ids[:, :width]


def train_dataset(examples, shuffle_buffer, tokenizer, global_batch_size, seed,
                  skip_batches=0):
  """Infinite, shuffled (ids int32[B, W], labels int64[B]) batches of the
  (text, label) `examples`, shuffled in a buffer of `shuffle_buffer` rows
  (all of them, when they fit: then the order is a full shuffle per epoch).

  Examples are grouped by length into buckets of width 16, 32, ... L, so short
  sentences do not pay for padding to the maximum length; each batch has one
  of a few static widths (one XLA compilation each). The order depends only on
  `seed`, so a resumed run that skips the batches it already trained on sees
  exactly what an uninterrupted run would.
  """
  widths = bucket_widths(tokenizer.sequence_length)
  ds = examples.shuffle(shuffle_buffer, seed=seed,
                        reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(1024).map(lambda s, y: (tokenizer(s), y)).unbatch()
  ds = ds.bucket_by_sequence_length(
      lambda ids, y: row_lengths(ids),
      bucket_boundaries=[w + 1 for w in widths[:-1]],
      bucket_batch_sizes=[global_batch_size] * len(widths),
      drop_remainder=True)
  ds = ds.skip(skip_batches)
  ds = ds.map(lambda ids, y: (trim_to_bucket(ids, widths), y))
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(examples, tokenizer, batch_size):
  """One pass, in file order: (ids int32[B, W], labels int64[B])."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = examples.batch(batch_size)
  ds = ds.map(lambda s, y: (trim_to_bucket(tokenizer(s), widths), y),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
