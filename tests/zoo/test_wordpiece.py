"""WordPiece tokenizer layer: round trips, OOV, truncation, pipeline == layer."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.tokenizers.wordpiece import (CLS, PAD_ID, UNK, WordPieceTokenizer,
                                      learn_wordpiece_vocabulary, longest_row,
                                      row_lengths,
                                      read_vocabulary, write_vocabulary)

CORPUS = ["the movie was great", "the film was terrible", "a great cast",
          "terrible acting and a dull plot", "great fun for the whole family",
          "the plot was dull"] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  vocabulary = learn_wordpiece_vocabulary(CORPUS, vocabulary_size=200)
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  write_vocabulary(vocabulary, path)
  return WordPieceTokenizer(path, sequence_length=12)


def test_vocabulary_starts_with_reserved_tokens(tokenizer):
  vocabulary = read_vocabulary(tokenizer.vocabulary_file)
  assert vocabulary[PAD_ID] == "[PAD]"
  assert CLS in vocabulary and UNK in vocabulary
  assert "great" in vocabulary and len(vocabulary) == tokenizer.vocabulary_size


def test_round_trip_of_in_vocabulary_text(tokenizer):
  text = ["The movie was GREAT", "a dull plot"]
  ids = tokenizer(tf.constant(text))
  assert ids.shape == (2, 12) and ids.dtype == tf.int32
  assert np.all(ids[:, 0].numpy() == tokenizer.cls_id)
  words = tokenizer.detokenize(ids[:, 1:]).numpy().tolist()
  assert words == [b"the movie was great", b"a dull plot"]


def test_unknown_scripts_and_emoji_map_to_unk(tokenizer):
  ids = tokenizer(tf.constant(["电影 😀 great"])).numpy()[0]
  tokens = [t for t in ids if t != PAD_ID]
  assert tokens[0] == tokenizer.cls_id
  assert tokens[-1] != tokenizer.unk_id  # "great" is known
  assert all(t == tokenizer.unk_id for t in tokens[1:-1])
  assert len(tokens) == 5  # [CLS] 电 影 😀 great: CJK characters split


def test_empty_long_and_invalid_strings_never_fail(tokenizer):
  inputs = tf.constant(["", "great " * 10_000, b"\xff\xfe\x00 great",
                        " \t\n "])
  ids = tokenizer(inputs).numpy()
  assert ids.shape == (4, 12)
  assert list(ids[0]) == [tokenizer.cls_id] + [PAD_ID] * 11  # empty
  assert np.all(ids[1] != PAD_ID)  # truncated to exactly sequence_length
  assert ids[2][0] == tokenizer.cls_id and ids[2][-1] == PAD_ID
  assert list(ids[3]) == list(ids[0])  # whitespace only == empty


def test_tf_data_pipeline_tokenizes_like_the_layer(tokenizer):
  text = ["the film was great", "dull", "电影", ""]
  direct = tokenizer(tf.constant(text)).numpy()
  piped = np.concatenate([b.numpy() for b in tf.data.Dataset.from_tensor_slices(
      text).batch(3).map(tokenizer)])
  np.testing.assert_array_equal(direct, piped)


def test_get_config_round_trip(tokenizer):
  clone = WordPieceTokenizer.from_config(tokenizer.get_config())
  text = tf.constant(["the whole family", "terrible"])
  np.testing.assert_array_equal(clone(text).numpy(), tokenizer(text).numpy())


def test_missing_vocabulary_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="Vocabulary file not found"):
    WordPieceTokenizer(str(tmp_path / "nope.txt"), sequence_length=8)


def test_longest_row_counts_the_tokens_of_the_longest_row():
  ids = tf.constant([[2, 5, 6, 0, 0], [2, 0, 0, 0, 0], [2, 7, 8, 9, 0]])
  assert int(longest_row(ids)) == 4
  assert row_lengths(ids).numpy().tolist() == [3, 1, 4]
  assert int(row_lengths(ids[2])) == 4  # one unbatched row
  assert int(longest_row(tf.zeros([0, 5], tf.int32))) == 0
