"""Input pipeline for text classification: batches of token ids and labels.

The input is a streamed dataset of (text, label id) examples
(trainers.classification_task reads and checks the files). Texts are
tokenized with the model's own tokenizer layer after batching, so training
and serving tokenize identically.
"""

import tensorflow as tf

from zoo.tokenizers.wordpiece import longest_row, row_lengths

def tokenize_examples(tokenizer):
  """Batched (text, label) or (text, pair, label) strings -> (features,
  labels): features are ids int32[B, L], or for sentence pairs
  {"token_ids", "type_ids"} int32[B, L] (WordPieceTokenizer.pair)."""
  def tokenize(*example):
    if len(example) == 3:
      ids, types = tokenizer.pair(example[0], example[1])
      return {"token_ids": ids, "type_ids": types}, example[2]
    return tokenizer(example[0]), example[1]
  return tokenize


def token_ids(features):
  """The token ids of plain or pair features."""
  return features["token_ids"] if isinstance(features, dict) else features


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


def trim_features(features, widths):
  """trim_to_bucket for plain or pair features (both cut to one width)."""
  if not isinstance(features, dict):
    return trim_to_bucket(features, widths)
  ids = trim_to_bucket(features["token_ids"], widths)
  return {"token_ids": ids,
          "type_ids": features["type_ids"][:, :tf.shape(ids)[1]]}


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
  ds = ds.batch(1024).map(tokenize_examples(tokenizer)).unbatch()
  ds = ds.bucket_by_sequence_length(
      lambda features, y: row_lengths(token_ids(features)),
      bucket_boundaries=[w + 1 for w in widths[:-1]],
      bucket_batch_sizes=[global_batch_size] * len(widths),
      drop_remainder=True)
  ds = ds.skip(skip_batches)
  ds = ds.map(lambda features, y: (trim_features(features, widths), y))
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(examples, tokenizer, batch_size):
  """One pass, in file order: (features, labels int64[B]), features as in
  tokenize_examples, cut to a bucket width."""
  widths = bucket_widths(tokenizer.sequence_length)
  tokenize = tokenize_examples(tokenizer)

  def batch(*example):
    features, labels = tokenize(*example)
    return trim_features(features, widths), labels

  ds = examples.batch(batch_size).map(batch,
                                      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
