"""SentencePiece tokenizer layers and vocabulary learner (translation and LMs).

One joint vocabulary for source and target, learned with the `sentencepiece`
trainer from the training split of both languages, applied in the graph by
tensorflow-text's SentencepieceTokenizer (its serialized model travels inside
the SavedModel; the `.model` file sits next to the checkpoints). Why joint: the
two languages share names, numbers and many subwords, and one vocabulary lets
the source embedding, the target embedding and the output projection be one
matrix (three-way tying), which matters at Multi30k's 29,000 pairs.

Ids: 0 padding, 1 unknown, 2 begin-of-sentence, 3 end-of-sentence. Characters
the vocabulary has never seen become the unknown id; nothing a string can
contain raises an error (invalid UTF-8 is first replaced by U+FFFD, which
SentencePiece's normalisation then drops). Detokenization is
exact for text the vocabulary covers (SentencePiece keeps spaces as pieces).

Language models use `SentencePieceLMTokenizer` (BOS first, no EOS: the text
is read after a start token, like the character LM) over a vocabulary learned
with `exact_text=True`: no normalisation, whitespace kept as it is, no dummy
space before the first word and a newline piece of its own, so the text a
model generates detokenizes exactly, line breaks included, and a
continuation detokenized on its own keeps its leading space. No piece spans
a newline, so the ids of a text are the ids of its lines, concatenated.
"""

import io
import os

import keras
import tensorflow as tf
import tensorflow_text as tf_text

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
NEVER_GENERATED = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)  # by a language model
# Trainer options that make the text round-trip exactly (language models).
EXACT_TEXT_OPTIONS = dict(normalization_rule_name="identity",
                          remove_extra_whitespaces=False,
                          add_dummy_prefix=False, user_defined_symbols=["\n"])


def learn_sentencepiece(texts, vocabulary_size, model_type="unigram",
                        exact_text=False):
  """Trains a SentencePiece model on an iterable of strings; returns its bytes.

  exact_text: keep the text exactly as it is (see the module docstring).
  """
  import sentencepiece
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model,
      vocab_size=vocabulary_size, model_type=model_type,
      character_coverage=1.0, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID,
      eos_id=EOS_ID, input_sentence_size=0, shuffle_input_sentence=False,
      num_threads=2, minloglevel=2, **(EXACT_TEXT_OPTIONS if exact_text else {}))
  return model.getvalue()


def write_model(model_bytes, path):
  tmp_path = path + ".tmp"
  with tf.io.gfile.GFile(tmp_path, "wb") as f:
    f.write(model_bytes)
  tf.io.gfile.rename(tmp_path, path, overwrite=True)


@keras.saving.register_keras_serializable(package="zoo")
class SentencePieceTokenizer(keras.layers.Layer):
  """string[B] -> int32[B, sequence_length]: pieces then EOS, 0-padded."""

  def __init__(self, model_file, sequence_length, **kwargs):
    kwargs.setdefault("trainable", False)
    kwargs.setdefault("dtype", "int32")
    super().__init__(**kwargs)
    if not tf.io.gfile.exists(model_file):
      raise FileNotFoundError(f"SentencePiece model not found: {model_file}")
    self.model_file = os.fspath(model_file)
    self.sequence_length = int(sequence_length)
    with tf.io.gfile.GFile(self.model_file, "rb") as f:
      model = f.read()
    self._sentencepiece = tf_text.SentencepieceTokenizer(model=model,
                                                         out_type=tf.int32)
    self.vocabulary_size = int(self._sentencepiece.vocab_size())
    self.built = True  # no weights: usable (and exportable) as constructed

  def tokenize(self, strings):
    """Ragged ids without EOS or truncation: int32[B, (T)]."""
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    strings = tf.strings.unicode_transcode(  # invalid UTF-8 -> U+FFFD, no error
        strings, "UTF-8", "UTF-8", errors="replace")
    return self._sentencepiece.tokenize(strings)

  def call(self, strings):
    """The first sequence_length - 1 pieces, then EOS; 0-padded."""
    ids = self.tokenize(strings)[:, : self.sequence_length - 1]  # [B, (<L)]
    eos = tf.fill([ids.nrows(), 1], EOS_ID)
    ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
    return ids.to_tensor(default_value=PAD_ID,
                         shape=[None, self.sequence_length])  # [B, L]

  def detokenize(self, ids):
    """int[B, T] -> string[B]: everything before the first EOS, BOS/PAD dropped."""
    ids = tf.cast(ids, tf.int32)
    before_eos = tf.cumsum(tf.cast(ids == EOS_ID, tf.int32), axis=1) == 0
    keep = before_eos & (ids != PAD_ID) & (ids != BOS_ID)
    ragged = tf.ragged.boolean_mask(ids, keep)  # [B, (T)]
    return self._sentencepiece.detokenize(ragged)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape) + (self.sequence_length,)

  def get_config(self):
    config = super().get_config()
    config.update(model_file=self.model_file,
                  sequence_length=self.sequence_length)
    return config


@keras.saving.register_keras_serializable(package="zoo")
class SentencePieceLMTokenizer(SentencePieceTokenizer):
  """string[B] -> int32[B, sequence_length]: BOS, then pieces, 0-padded.

  The language-model form: every text is read after the start token (BOS,
  `start_id`), there is no EOS, and texts are cut after sequence_length - 1
  pieces.
  """

  start_id = BOS_ID

  def call(self, strings):
    ids = self.tokenize(strings)[:, : self.sequence_length - 1]  # [B, (<L)]
    bos = tf.fill([ids.nrows(), 1], BOS_ID)
    ids = tf.concat([tf.RaggedTensor.from_tensor(bos), ids], axis=1)
    return ids.to_tensor(default_value=PAD_ID,
                         shape=[None, self.sequence_length])  # [B, L]
