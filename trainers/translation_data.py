"""Input pipeline for translation: parallel text files, one sentence a line.

A split is a pair of files `<prefix>.<src>` and `<prefix>.<tgt>` (plain or
`.gz`), line i of one translating line i of the other; a count mismatch names
both files. Batches are (features, targets):
  features  source_ids int32[B, W] (pieces, EOS, padding) and target_ids
            int32[B, W] (BOS, pieces: the decoder's input)
  targets   int32[B, W] (pieces, EOS, padding: what the decoder predicts)
Training groups pairs of similar length into batches of width 16, 32, ... L
(a few static shapes, one XLA compilation each); the order depends only on
the seed, so a resumed run that skips the batches it trained on continues
exactly.
"""

import gzip
import os

import tensorflow as tf

from trainers.classification_data import bucket_widths
from trainers.errors import UserError
from zoo.tokenizers.sentencepiece import BOS_ID


def read_lines(path):
  """The lines of a UTF-8 text file (gzip if it ends in .gz), newline-stripped."""
  if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
    path += ".gz"
  if not os.path.isfile(path):
    raise UserError(f"{path}: data file not found")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      return [line.rstrip("\r\n") for line in f], path
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: not valid UTF-8 ({e.reason})")
  except (OSError, EOFError) as e:
    raise UserError(f"{path}: cannot read ({e})")


def read_parallel(source_path, target_path):
  """(source lines, target lines); UserError if the counts differ or are 0."""
  sources, source_path = read_lines(source_path)
  targets, target_path = read_lines(target_path)
  if len(sources) != len(targets):
    raise UserError(f"{source_path} has {len(sources)} lines but "
                    f"{target_path} has {len(targets)}; parallel files must "
                    "match line for line")
  if not sources:
    raise UserError(f"{source_path}: no sentences")
  return sources, targets


def make_example(tokenizer):
  """(source strings, target strings)[B] -> (features, targets), full width."""
  def example(sources, targets):
    target_out = tokenizer(targets)  # [B, L]: pieces, EOS, 0...
    bos = tf.fill([tf.shape(target_out)[0], 1], BOS_ID)
    target_in = tf.concat([bos, target_out[:, :-1]], axis=1)  # [B, L]
    target_in = tf.where(target_out == 0, 0, target_in)  # pad where no target
    return {"source_ids": tokenizer(sources), "target_ids": target_in}, target_out
  return example


def _length(features, targets):
  return tf.maximum(tf.reduce_sum(tf.cast(features["source_ids"] != 0, tf.int32)),
                    tf.reduce_sum(tf.cast(targets != 0, tf.int32)))


def _trim(widths):
  """Cuts a batch to the smallest width in `widths` that holds every row."""
  def trim(features, targets):
    longest = tf.maximum(
        tf.reduce_max(tf.reduce_sum(tf.cast(features["source_ids"] != 0,
                                            tf.int32), axis=1)),
        tf.reduce_max(tf.reduce_sum(tf.cast(targets != 0, tf.int32), axis=1)))
    width_list = tf.constant(widths, tf.int32)
    width = tf.gather(width_list,
                      tf.argmax(tf.cast(width_list >= longest, tf.int32)))
    return ({k: v[:, :width] for k, v in features.items()}, targets[:, :width])
  return trim


def train_dataset(sources, targets, tokenizer, global_batch_size, seed,
                  skip_batches=0):
  """Infinite, shuffled, length-bucketed (features, targets) batches."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = tf.data.Dataset.from_tensor_slices((sources, targets))
  ds = ds.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(1024).map(make_example(tokenizer)).unbatch()
  ds = ds.bucket_by_sequence_length(
      _length, bucket_boundaries=[w + 1 for w in widths[:-1]],
      bucket_batch_sizes=[global_batch_size] * len(widths),
      drop_remainder=True)
  ds = ds.skip(skip_batches)
  ds = ds.map(_trim(widths))
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(sources, targets, tokenizer, batch_size):
  """One pass in file order: (features, targets) batches, trimmed."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = tf.data.Dataset.from_tensor_slices((sources, targets)).batch(batch_size)
  ds = ds.map(make_example(tokenizer)).map(_trim(widths))
  return ds.cache().prefetch(tf.data.AUTOTUNE)
