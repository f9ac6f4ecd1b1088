"""Input pipeline for character-level language modelling on one text file.

The text is split by position: the first 90% trains, the last 10% validates
(no shuffling across the boundary, so no validation text leaks into training).
Training batches are random windows of sequence_length + 1 ids, drawn with a
stateless RNG keyed by (seed, batch index): batch i is the same in every run,
so a resumed run continues exactly where it stopped. Evaluation cuts the
validation text into consecutive chunks of sequence_length - 1 characters and
scores each after the tokenizer's start token, so every validation character
is predicted exactly once, the same way the exported `score` signature does.
"""

import tensorflow as tf

from trainers.errors import UserError

VALIDATION_FRACTION = 0.1


def read_text(path):
  if not tf.io.gfile.exists(path):
    raise UserError(f"{path}: data file not found")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: not valid UTF-8 at byte {e.start} ({e.reason})")
  if len(text) < 100:
    raise UserError(f"{path}: only {len(text)} characters; need at least 100")
  return text


def split_text(text):
  """(train text, validation text): the first 90% and the last 10%."""
  boundary = int(len(text) * (1 - VALIDATION_FRACTION))
  return text[:boundary], text[boundary:]


def text_ids(tokenizer, text):
  """The ids of every character of `text`: int32[N] (no start token)."""
  return tokenizer.tokenize(tf.constant([text])).flat_values


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
