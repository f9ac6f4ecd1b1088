"""Character tokenizer layer: round trips, unknown characters, truncation, file."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.tokenizers.characters import (PAD_ID, UNK_ID, CharacterTokenizer,
                                       learn_character_vocabulary,
                                       read_character_vocabulary,
                                       write_character_vocabulary)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
LENGTH = 16
REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def vocabulary_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("chars") / "vocab.txt")
  write_character_vocabulary(learn_character_vocabulary(TEXT), path)
  return path


@pytest.fixture(scope="module")
def tokenizer(vocabulary_file):
  return CharacterTokenizer(vocabulary_file, sequence_length=LENGTH)


def texts_of(tokenizer, ids):
  return [t.decode("utf-8") for t in tokenizer.detokenize(ids).numpy()]


def test_vocabulary_file_format(vocabulary_file, tokenizer):
  with open(vocabulary_file) as f:
    lines = f.read().splitlines()
  code_points = sorted({ord(c) for c in TEXT})
  assert lines == ["-1", "-2"] + [str(c) for c in code_points]
  assert read_character_vocabulary(vocabulary_file) == code_points
  assert tokenizer.vocabulary_size == len(code_points) + 2
  # Line N is id N: the newline (the default start text) is the lowest code point.
  assert tokenizer.start_id == 2 + code_points.index(ord("\n")) == 2


def test_vocabulary_file_without_reserved_lines_is_refused(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_text("10\n32\n97\n")
  with pytest.raises(ValueError, match="-1 and -2"):
    read_character_vocabulary(str(path))
  with pytest.raises(ValueError):
    CharacterTokenizer(str(path), sequence_length=8)


def test_missing_file_and_bad_start_text(tmp_path, vocabulary_file):
  with pytest.raises(FileNotFoundError):
    CharacterTokenizer(str(tmp_path / "none.txt"), sequence_length=8)
  with pytest.raises(ValueError, match="start_text"):
    CharacterTokenizer(vocabulary_file, sequence_length=8, start_text="Z")
  with pytest.raises(ValueError, match="start_text"):
    CharacterTokenizer(vocabulary_file, sequence_length=8, start_text="ab")


def test_round_trip_of_vocabulary_text(tokenizer):
  texts = [TEXT, "hear me", "", "a"]
  ragged = tokenizer.tokenize(tf.constant(texts))
  assert ragged.dtype == tf.int32
  assert ragged.row_lengths().numpy().tolist() == [len(t) for t in texts]
  ids = ragged.to_tensor()
  assert np.all(ids.numpy() != UNK_ID)
  assert texts_of(tokenizer, ids) == texts
  # Distinct characters get distinct ids.
  single = tokenizer.tokenize(tf.constant([TEXT])).flat_values.numpy()
  assert len(set(single.tolist())) == len(set(TEXT))


def test_call_prepends_the_start_id_and_pads(tokenizer):
  ids = tokenizer(tf.constant(["hear", ""])).numpy()
  assert ids.shape == (2, LENGTH) and ids.dtype == np.int32
  assert ids[:, 0].tolist() == [tokenizer.start_id] * 2
  body = tokenizer.tokenize(tf.constant(["hear"])).flat_values.numpy()
  assert ids[0, 1:5].tolist() == body.tolist()
  assert np.all(ids[0, 5:] == PAD_ID)
  assert np.all(ids[1, 1:] == PAD_ID)
  # The start character decodes back to itself.
  assert texts_of(tokenizer, ids) == ["\nhear", "\n"]


def test_unknown_characters_become_unk_and_decode_to_replacement(tokenizer):
  text = "电影 😀 me"
  ids = tokenizer.tokenize(tf.constant([text])).flat_values.numpy()
  assert ids.tolist()[:2] == [UNK_ID, UNK_ID]
  assert ids[3] == UNK_ID  # the emoji is one code point, one id
  assert ids[2] != UNK_ID and ids[4] != UNK_ID  # spaces are known
  assert len(ids) == len(text)
  decoded = texts_of(tokenizer, ids[None, :])
  assert decoded == [REPLACEMENT * 2 + " " + REPLACEMENT + " me"]


def test_invalid_utf8_and_empty_strings_do_not_raise(tokenizer):
  inputs = tf.constant([b"\xff\xfe me", b"", b"\xc3", b"hear\x80"])
  ids = tokenizer(inputs).numpy()
  assert ids.shape == (4, LENGTH)
  assert ids[0, 1:3].tolist() == [UNK_ID, UNK_ID]  # each bad byte -> U+FFFD -> UNK
  assert ids[1, 0] == tokenizer.start_id and np.all(ids[1, 1:] == PAD_ID)
  assert ids[2, 1] == UNK_ID and np.all(ids[2, 2:] == PAD_ID)
  assert ids[3, 5] == UNK_ID
  assert texts_of(tokenizer, ids[:, 1:]) == [
      REPLACEMENT * 2 + " me", "", REPLACEMENT, "hear" + REPLACEMENT]
  empty = tokenizer.tokenize(tf.constant([""]))
  assert empty.row_lengths().numpy().tolist() == [0]


def test_long_strings_are_truncated_to_sequence_length(tokenizer):
  long_text = "hear me speak " * 1000
  ids = tokenizer(tf.constant([long_text, "me"])).numpy()
  assert ids.shape == (2, LENGTH)
  assert np.all(ids[0] != PAD_ID)
  assert texts_of(tokenizer, ids[:1, 1:]) == [long_text[:LENGTH - 1]]


def test_scalar_shape_and_batch_of_one(tokenizer):
  assert tokenizer.compute_output_shape((3,)) == (3, LENGTH)
  assert tokenizer(tf.constant(["a"])).shape == (1, LENGTH)


def test_get_config_round_trip(tokenizer, vocabulary_file):
  config = tokenizer.get_config()
  assert config["vocabulary_file"] == vocabulary_file
  assert config["sequence_length"] == LENGTH and config["start_text"] == "\n"
  clone = CharacterTokenizer.from_config(config)
  texts = tf.constant([TEXT, "电 me", ""])
  np.testing.assert_array_equal(clone(texts).numpy(), tokenizer(texts).numpy())
  assert clone.start_id == tokenizer.start_id
  other = CharacterTokenizer(vocabulary_file, sequence_length=4, start_text=" ")
  assert other.start_id != tokenizer.start_id
  assert CharacterTokenizer.from_config(other.get_config())(
      tf.constant(["hear"])).numpy().tolist() == other(
          tf.constant(["hear"])).numpy().tolist()
