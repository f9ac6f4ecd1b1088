"""Input pipeline for language modelling on plain text.

Without eval files the text is split by position: the first 90% trains, the
last 10% validates (no shuffling across the boundary, so no validation text
leaks into training; trainers.language_model_task does the split).
Training batches are random windows of sequence_length + 1 ids, drawn with a
stateless RNG keyed by (seed, batch index): batch i is the same in every run,
so a resumed run continues exactly where it stopped.

The training ids live in a file on disk (`TokenFile`), not in memory: the
text is tokenized in a streamed pass and written out, and each batch reads
its windows back with positioned reads, so a corpus larger than memory
trains and the process holds no more than a batch of ids.

Evaluation cuts the validation text into chunks and scores each after the
tokenizer's start token, so every validation token is predicted exactly
once, the same way the exported `score` signature does. A character
tokenizer's chunks are consecutive pieces of sequence_length - 1 characters;
a subword tokenizer's are runs of whole lines of at most sequence_length - 1
tokens (a longer line is cut into pieces of sequence_length - 1 characters).
"""

import itertools
import os
import tempfile

import numpy as np
import tensorflow as tf

VALIDATION_FRACTION = 0.1
ID_BYTES = 4  # int32


class TokenFile:
  """Token ids written once to an unlinked temporary file, read by position.

  The file is deleted from the directory as soon as it is open, so it
  vanishes when the process ends however it ends (kill -9 included).
  """

  def __init__(self, directory=None):
    if directory and "://" in directory:  # a remote model_dir: local temp
      directory = None
    if directory:
      os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=".train-ids-", suffix=".int32",
                                dir=directory or None)
    os.unlink(path)
    self._fd, self.length = fd, 0

  def append(self, ids):
    ids = np.ascontiguousarray(ids, dtype="<i4")
    os.pwrite(self._fd, ids.tobytes(), self.length * ID_BYTES)
    self.length += len(ids)

  def read(self, start, count):
    """ids[start:start + count]: int32[count]."""
    data = os.pread(self._fd, count * ID_BYTES, int(start) * ID_BYTES)
    return np.frombuffer(data, "<i4").astype(np.int32)

  def windows(self, starts, size):
    """int32[B, size]: the ids at starts[b], starts[b] + 1, ..."""
    return np.stack([self.read(start, size) for start in starts])

  def close(self):
    os.close(self._fd)


def write_text_ids(tokenizer, pieces, token_file, chunk=4096):
  """Tokenizes the text `pieces` (an iterable of str, newlines kept) into
  token_file, in order, `chunk` pieces at a time (no start token). The
  tokenizer runs as one graph (5x faster than eagerly for the byte-level
  BPE, whose merge loop is a tf.while_loop)."""
  tokenize = tf.function(lambda texts: tokenizer.tokenize(texts).flat_values,
                         reduce_retracing=True)
  for batch in iter(lambda: list(itertools.islice(pieces, chunk)), []):
    token_file.append(tokenize(tf.constant(batch)).numpy())
  return token_file


def train_dataset(token_file, sequence_length, global_batch_size, seed,
                  skip_batches=0):
  """Infinite (inputs int32[B, T], targets int32[B, T]) random windows."""
  windows = token_file.length - sequence_length  # valid window starts

  def read(starts):
    return token_file.windows(starts, sequence_length + 1)

  def batch(index):
    starts = tf.random.stateless_uniform(
        [global_batch_size], seed=tf.stack([tf.cast(seed, tf.int64), index]),
        maxval=windows, dtype=tf.int32)  # [B]
    window = tf.numpy_function(read, [starts], tf.int32, stateful=False)
    window = tf.ensure_shape(window, [global_batch_size,
                                      sequence_length + 1])  # [B, T + 1]
    return window[:, :-1], window[:, 1:]

  return (tf.data.Dataset.counter(start=skip_batches)
          .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def character_chunks(text, sequence_length):
  """Consecutive pieces of sequence_length - 1 characters (the last shorter)."""
  size = sequence_length - 1
  return [text[i:i + size] for i in range(0, len(text), size)]


def line_chunks(text, sequence_length, token_counts):
  """Runs of whole lines of at most sequence_length - 1 tokens.

  token_counts(lines) -> the tokens of each line, capped at sequence_length
  - 1 (what `score` reports); a line at the cap is cut into pieces of
  sequence_length - 1 characters (each fits: a token has >= 1 character).
  Relies on the tokenizer never joining characters across a newline.
  """
  size = sequence_length - 1
  lines = text.splitlines(keepends=True)
  counts = list(token_counts(lines)) if lines else []
  chunks, current, used = [], "", 0
  for line, count in zip(lines, counts):
    if count >= size:
      chunks += [current] if current else []
      chunks += character_chunks(line, sequence_length)
      current, used = "", 0
    elif used + count > size:
      chunks.append(current)
      current, used = line, count
    else:
      current, used = current + line, used + count
  return chunks + ([current] if current else [])


def tokenizer_counts(tokenizer, batch_size=256):
  """token_counts for line_chunks from an in-graph tokenizer."""
  cap = tokenizer.sequence_length - 1

  def counts(lines):
    for start in range(0, len(lines), batch_size):
      lengths = tokenizer.tokenize(tf.constant(
          lines[start:start + batch_size])).row_lengths().numpy()
      yield from np.minimum(lengths, cap).tolist()
  return counts


def eval_dataset(chunks, tokenizer, batch_size):
  """(ids int32[B, T], ids) batches: start token + chunk, 0-padded."""
  ds = tf.data.Dataset.from_tensor_slices(chunks).batch(batch_size)
  return ds.map(lambda s: (tokenizer(s), tokenizer(s))).cache()
