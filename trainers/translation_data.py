"""Input pipeline for translation: batches of (source, target) sentence pairs.

The input is a streamed dataset of (source, target) strings
(trainers.translation_task reads and checks the files). Batches are
(features, targets):
  features  source_ids int32[B, W] (pieces, EOS, padding) and target_ids
            int32[B, W] (BOS, pieces: the decoder's input)
  targets   int32[B, W] (pieces, EOS, padding: what the decoder predicts)
Training groups pairs of similar length into batches of width 16, 32, ... L
(a few static shapes, one XLA compilation each); the order depends only on
the seed, so a resumed run that skips the batches it trained on continues
exactly.
"""

import tensorflow as tf

from trainers.classification_data import bucket_widths
from zoo.tokenizers.sentencepiece import BOS_ID


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


def train_dataset(pairs, shuffle_buffer, tokenizer, global_batch_size, seed,
                  skip_batches=0):
  """Infinite, shuffled, length-bucketed (features, targets) batches of the
  (source, target) `pairs`, shuffled in a buffer of `shuffle_buffer`."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(1024).map(make_example(tokenizer)).unbatch()
  ds = ds.bucket_by_sequence_length(
      _length, bucket_boundaries=[w + 1 for w in widths[:-1]],
      bucket_batch_sizes=[global_batch_size] * len(widths),
      drop_remainder=True)
  ds = ds.skip(skip_batches)
  ds = ds.map(_trim(widths))
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(pairs, tokenizer, batch_size):
  """One pass in file order: (features, targets) batches, trimmed."""
  widths = bucket_widths(tokenizer.sequence_length)
  ds = pairs.batch(batch_size)
  ds = ds.map(make_example(tokenizer)).map(_trim(widths))
  return ds.cache().prefetch(tf.data.AUTOTUNE)
