"""WordPiece tokenizer layer that splits text the way keras-hub's does.

A keras-hub WordPiece preset (BERT, DistilBERT) fixes its own text
pre-processing, and its vocabulary only fits text split that way. This layer
runs, in the graph, the steps keras-hub's WordPieceTokenizer runs inside
tf.data (its TensorFlow path), in the same order:
  1. with split_on_cjk, spaces around every CJK ideograph;
  2. with strip_accents, NFD normalisation, then every mark (\\p{Mn}) removed;
  3. a split on whitespace, control and format characters (dropped) and on
     ASCII and Unicode punctuation and CJK ideographs (each kept as a word);
  4. with lowercase, NFKC case folding of each word;
  5. FastWordpieceTokenizer over the words (words over 100 bytes -> [UNK]).
Model inputs are BERT's: `[CLS] text [SEP]` for one text and
`[CLS] first [SEP] second [SEP]` for pairs, cut to sequence_length and
0-padded ([PAD] is id 0 in every BERT vocabulary). Invalid UTF-8 is replaced
first, so no string raises.
"""

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from zoo.tokenizers.wordpiece import PAD_ID, WordPieceTokenizer, read_vocabulary

_WHITESPACE = r"\s|\p{Cc}|\p{Cf}"
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
_CJK = "|".join(
    rf"[\x{{{low}}}-\x{{{high}}}]" for low, high in (
        ("4E00", "9FFF"), ("3400", "4DBF"), ("20000", "2A6DF"),
        ("2A700", "2B73F"), ("2B740", "2B81F"), ("2B820", "2CEAF"),
        ("F900", "FAFF"), ("2F800", "2FA1F")))


@keras.saving.register_keras_serializable(package="zoo")
class PresetWordPieceTokenizer(WordPieceTokenizer):
  """string[B] -> int32[B, sequence_length]: `[CLS] pieces [SEP]`, 0-padded."""

  def __init__(self, vocabulary_file, sequence_length, lower_case=True,
               strip_accents=False, split_on_cjk=True, **kwargs):
    super().__init__(vocabulary_file, sequence_length, lower_case=lower_case,
                     **kwargs)
    if self.sep_id is None:
      raise ValueError(f"{self.vocabulary_file} has no [SEP]")
    self.strip_accents = bool(strip_accents)
    self.split_on_cjk = bool(split_on_cjk)
    self._wordpiece = tf_text.FastWordpieceTokenizer(
        vocab=read_vocabulary(self.vocabulary_file), suffix_indicator="##",
        unknown_token="[UNK]", token_out_type=tf.int64,
        no_pretokenization=True, support_detokenization=True)

  def words(self, strings):
    """string[B] -> the pre-tokenised words, string[B, (words)]."""
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    text = tf.strings.unicode_transcode(  # invalid UTF-8 -> U+FFFD, no error
        strings, "UTF-8", "UTF-8", errors="replace")
    if self.split_on_cjk:
      text = tf.strings.regex_replace(text, _CJK, r" \0 ")
    if self.strip_accents:
      text = tf_text.normalize_utf8(text, "NFD")
      text = tf.strings.regex_replace(text, r"\p{Mn}", "")
    keep = _PUNCTUATION + ("|" + _CJK if self.split_on_cjk else "")
    words = tf_text.regex_split(text, delim_regex_pattern=_WHITESPACE + "|" + keep,
                                keep_delim_regex_pattern=keep)
    if self.lower_case:
      words = tf_text.case_fold_utf8(words)
    return words

  def tokenize(self, strings):
    """Ragged ids without [CLS], [SEP] or truncation: int64[B, (T)]."""
    pieces = self._wordpiece.tokenize(self.words(strings))  # [B, (w), (p)]
    return pieces.merge_dims(-2, -1)  # [B, (T)]

  def call(self, strings):
    ids = self.tokenize(strings)[:, : self.sequence_length - 2]  # [B, (<=L-2)]
    ids, _ = tf_text.combine_segments(
        [ids], start_of_sequence_id=self.cls_id,
        end_of_segment_id=self.sep_id)  # [B, (<=L)]
    dense = ids.to_tensor(default_value=PAD_ID,
                          shape=[None, self.sequence_length])  # [B, L]
    return tf.cast(dense, tf.int32)

  def get_config(self):
    config = super().get_config()
    config.update(strip_accents=self.strip_accents,
                  split_on_cjk=self.split_on_cjk)
    return config
