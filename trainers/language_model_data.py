"""Input pipeline for language modelling on plain text.

Without eval files the text is split by position: the first 90% trains, the
last 10% validates (no shuffling across the boundary, so no validation text
leaks into training; trainers.language_model_task does the split).
Training batches are random windows of sequence_length + 1 ids, drawn with a
stateless RNG keyed by (seed, batch index): batch i is the same in every run,
so a resumed run continues exactly where it stopped. Evaluation cuts the
validation text into consecutive chunks of sequence_length - 1 characters and
scores each after the tokenizer's start token, so every validation character
is predicted exactly once, the same way the exported `score` signature does.
"""

import itertools

import numpy as np
import tensorflow as tf

VALIDATION_FRACTION = 0.1


def text_ids(tokenizer, pieces, chunk=4096):
  """The ids of every token of the text `pieces` (an iterable of str, newlines
  kept), in order: int32[N] numpy (no start token). Streamed: only the ids
  are kept, tokenized `chunk` pieces at a time."""
  ids = []
  for batch in iter(lambda: list(itertools.islice(pieces, chunk)), []):
    ids.append(tokenizer.tokenize(tf.constant(batch)).flat_values.numpy()
               .astype(np.int32))
  return np.concatenate(ids) if ids else np.zeros([0], np.int32)


def train_dataset(ids, sequence_length, global_batch_size, seed, skip_batches=0):
  """Infinite (inputs int32[B, T], targets int32[B, T]) random windows."""
  ids = tf.constant(ids)
  windows = tf.shape(ids)[0] - sequence_length  # valid window starts
  offsets_in_window = tf.range(sequence_length + 1)  # [T + 1]

  def batch(index):
    starts = tf.random.stateless_uniform(
        [global_batch_size], seed=tf.stack([tf.cast(seed, tf.int64), index]),
        maxval=windows, dtype=tf.int32)  # [B]
    window = tf.gather(ids, starts[:, None] + offsets_in_window)  # [B, T + 1]
    return window[:, :-1], window[:, 1:]

  return (tf.data.Dataset.counter(start=skip_batches)
          .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def evaluation_chunks(text, sequence_length):
  """Consecutive pieces of sequence_length - 1 characters (the last shorter)."""
  size = sequence_length - 1
  return [text[i:i + size] for i in range(0, len(text), size)]


def eval_dataset(text, tokenizer, batch_size):
  """(ids int32[B, T], ids) batches: start token + chunk, 0-padded."""
  chunks = evaluation_chunks(text, tokenizer.sequence_length)
  ds = tf.data.Dataset.from_tensor_slices(chunks).batch(batch_size)
  return ds.map(lambda s: (tokenizer(s), tokenizer(s))).cache()
