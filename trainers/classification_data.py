"""Input pipeline for sentence classification (GLUE-style `sentence<TAB>label` TSV).

Reading validates every line and names the file and line of the first problem.
Datasets are tokenized with the model's own tokenizer layer after batching.
"""

import numpy as np
import tensorflow as tf

from trainers.errors import UserError
from zoo.tokenizers.wordpiece import longest_row, row_lengths

HEADER = ("sentence", "label")


def read_labeled_tsv(path, label_values):
  """Reads `sentence<TAB>label` lines; an optional header line is skipped.

  label_values: the allowed label strings in id order (e.g. ("0", "1")).
  Returns (sentences list[str], label ids int64 np.ndarray).
  """
  if not tf.io.gfile.exists(path):
    raise UserError(f"{path}: data file not found")
  index = {value: i for i, value in enumerate(label_values)}
  sentences, labels = [], []
  with tf.io.gfile.GFile(path, "rb") as f:
    for line_number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        raise UserError(f"{path}:{line_number}: not valid UTF-8 ({e.reason})")
      if not line.strip():
        continue
      columns = line.split("\t")
      if line_number == 1 and tuple(c.strip() for c in columns) == HEADER:
        continue
      if len(columns) != 2:
        raise UserError(
            f"{path}:{line_number}: expected 2 tab-separated columns "
            f"(sentence, label), found {len(columns)}")
      sentence, label = columns
      label = label.strip()
      if label not in index:
        raise UserError(
            f"{path}:{line_number}: label {label!r} is not one of "
            f"{list(label_values)}")
      sentences.append(sentence)
      labels.append(index[label])
  if not sentences:
    raise UserError(f"{path}: no examples")
  return sentences, np.asarray(labels, np.int64)


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


def train_dataset(sentences, labels, tokenizer, global_batch_size, seed,
                  skip_batches=0):
  """Infinite, shuffled (ids int32[B, W], labels int64[B]) batches.

  Examples are grouped by length into buckets of width 16, 32, ... L, so short
  sentences do not pay for padding to the maximum length; each batch has one
  of a few static widths (one XLA compilation each). The order depends only on
  `seed`, so a resumed run that skips the batches it already trained on sees
  exactly what an uninterrupted run would.
  """
  widths = bucket_widths(tokenizer.sequence_length)
  ds = tf.data.Dataset.from_tensor_slices((sentences, labels))
  ds = ds.shuffle(len(sentences), seed=seed, reshuffle_each_iteration=True)
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


def eval_dataset(sentences, labels, tokenizer, batch_size):
  """One pass, in file order: (ids int32[B, W], labels int64[B])."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = tf.data.Dataset.from_tensor_slices((sentences, labels)).batch(batch_size)
  ds = ds.map(lambda s, y: (trim_to_bucket(tokenizer(s), widths), y),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
