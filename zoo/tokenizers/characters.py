"""Character tokenizer layer and vocabulary learner (for the character-level LM).

The layer maps raw UTF-8 strings to ids inside the graph with
`tf.strings.unicode_decode` and a lookup table, so the tf.data pipeline and
every export tokenize identically. The vocabulary file (a SavedModel asset)
holds one Unicode code point a line, in decimal; line N is id N. Two reserved
lines come first: `-1` is padding (id 0) and `-2` the unknown character
(id 1), keys no real character can have. Characters outside the vocabulary
(other scripts, emoji) become the unknown id; invalid UTF-8 is replaced
first. Nothing a string can contain raises an error.

Every text is read as if it followed a start character (a newline by default:
the training text is line-structured, so "start of a line" is the natural
beginning); `call` prepends it.
"""

import os

import keras
import tensorflow as tf

PAD_ID = 0
UNK_ID = 1
NEVER_GENERATED = (PAD_ID, UNK_ID)  # by a language model
_RESERVED_KEYS = (-1, -2)  # the vocabulary file's first two lines
REPLACEMENT_CHARACTER = 0xFFFD


def learn_character_vocabulary(text):
  """Sorted code points of every character in `text` (the training split)."""
  return sorted({ord(c) for c in text})


def write_character_vocabulary(code_points, path):
  tmp_path = path + ".tmp"
  with tf.io.gfile.GFile(tmp_path, "w") as f:
    f.write("\n".join(str(k) for k in (*_RESERVED_KEYS, *code_points)) + "\n")
  tf.io.gfile.rename(tmp_path, path, overwrite=True)


def read_character_vocabulary(path):
  """The code points of ids 2.. (the reserved lines dropped)."""
  with tf.io.gfile.GFile(path) as f:
    keys = [int(line) for line in f if line.strip()]
  if tuple(keys[:2]) != _RESERVED_KEYS:
    raise ValueError(f"{path}: expected -1 and -2 on the first two lines")
  return keys[2:]


@keras.saving.register_keras_serializable(package="zoo")
class CharacterTokenizer(keras.layers.Layer):
  """string[B] -> int32[B, sequence_length]: start id, then one id a character."""

  def __init__(self, vocabulary_file, sequence_length, start_text="\n", **kwargs):
    kwargs.setdefault("trainable", False)
    kwargs.setdefault("dtype", "int32")
    super().__init__(**kwargs)
    if not tf.io.gfile.exists(vocabulary_file):
      raise FileNotFoundError(f"Vocabulary file not found: {vocabulary_file}")
    self.vocabulary_file = os.fspath(vocabulary_file)
    self.sequence_length = int(sequence_length)
    self.start_text = start_text
    code_points = read_character_vocabulary(self.vocabulary_file)
    self.vocabulary_size = len(code_points) + len(_RESERVED_KEYS)
    if len(start_text) != 1 or ord(start_text) not in code_points:
      raise ValueError(f"start_text {start_text!r} must be one character of "
                       "the vocabulary")
    self.start_id = code_points.index(ord(start_text)) + len(_RESERVED_KEYS)
    line = tf.lookup.TextFileIndex.LINE_NUMBER
    self._to_id = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        self.vocabulary_file, tf.int64, 0, tf.int64, line), default_value=UNK_ID)
    self._to_code_point = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        self.vocabulary_file, tf.int64, line, tf.int64, 0),
        default_value=REPLACEMENT_CHARACTER)
    self.built = True  # no weights: usable (and exportable) as constructed

  def tokenize(self, strings):
    """Ragged ids without the start id or truncation: int32[B, (T)]."""
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    code_points = tf.strings.unicode_decode(  # invalid UTF-8 -> U+FFFD
        strings, "UTF-8", errors="replace")  # int32[B, (T)]
    ids = tf.ragged.map_flat_values(
        lambda c: self._to_id.lookup(tf.cast(c, tf.int64)), code_points)
    return tf.cast(ids, tf.int32)

  def call(self, strings):
    """Start id + the first sequence_length - 1 characters, 0-padded."""
    ids = self.tokenize(strings)  # [B, (T)]
    start = tf.fill([ids.nrows(), 1], self.start_id)  # [B, 1]
    ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
    ids = ids[:, : self.sequence_length]  # [B, (<=L)]
    return ids.to_tensor(default_value=PAD_ID,
                         shape=[None, self.sequence_length])  # [B, L]

  def detokenize(self, ids):
    """int[B, T] -> string[B]; padding is dropped, [UNK] becomes U+FFFD."""
    ids = tf.cast(ids, tf.int64)
    ragged = tf.RaggedTensor.from_tensor(ids, padding=PAD_ID)  # [B, (T)]
    code_points = tf.ragged.map_flat_values(self._to_code_point.lookup, ragged)
    return tf.strings.unicode_encode(tf.cast(code_points, tf.int32), "UTF-8")

  def compute_output_shape(self, input_shape):
    return tuple(input_shape) + (self.sequence_length,)

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_file=self.vocabulary_file,
                  sequence_length=self.sequence_length,
                  start_text=self.start_text)
    return config
