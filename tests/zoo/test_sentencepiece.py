"""SentencePiece: the vocabulary learner and the in-graph tokenizer layer.

The layer is checked against the reference `sentencepiece` processor on the
same model, so ids are the library's own, not whatever the layer happens to do.
"""

import gzip
import itertools
import os
import unicodedata

import keras
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from tests.conftest import REPO_ROOT
from zoo.tokenizers.sentencepiece import (BOS_ID, EOS_ID, PAD_ID, UNK_ID,
                                          SentencePieceLMTokenizer,
                                          SentencePieceTokenizer,
                                          learn_sentencepiece, write_model)

VOCAB = 300
LENGTH = 96


def corpus_lines(language, rows):
  path = os.path.join(REPO_ROOT, "data", "multi30k", f"train.{language}.gz")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [line.rstrip("\n") for line in itertools.islice(f, rows)]


@pytest.fixture(scope="module")
def corpus():
  return corpus_lines("de", 800) + corpus_lines("en", 800)


@pytest.fixture(scope="module")
def model_bytes(corpus):
  return learn_sentencepiece(corpus, VOCAB)


@pytest.fixture(scope="module")
def model_file(model_bytes, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("spm") / "spm.model")
  write_model(model_bytes, path)
  return path


@pytest.fixture(scope="module")
def reference(model_bytes):
  """The sentencepiece library's own processor on the learned model."""
  return sentencepiece.SentencePieceProcessor(model_proto=model_bytes)


@pytest.fixture(scope="module")
def tokenizer(model_file):
  return SentencePieceTokenizer(model_file, sequence_length=LENGTH)


def covered(corpus, reference):
  """Corpus sentences that SentencePiece's normalisation leaves unchanged and
  that fit the layer without truncation."""
  lines = [line for line in corpus
           if line == " ".join(line.split())
           and unicodedata.normalize("NFKC", line) == line
           and len(reference.encode(line)) < LENGTH - 1]
  assert len(lines) > 0.9 * len(corpus)
  return lines


def as_text(strings):
  return [s.decode("utf-8") for s in strings.numpy()]


# The learner.

def test_learned_model_has_the_requested_size_and_special_ids(model_bytes,
                                                             model_file,
                                                             reference, corpus):
  assert isinstance(model_bytes, bytes) and model_bytes
  with open(model_file, "rb") as f:
    assert f.read() == model_bytes  # written atomically, byte for byte
  assert not os.path.exists(model_file + ".tmp")
  assert reference.get_piece_size() == VOCAB
  special = (reference.pad_id(), reference.unk_id(), reference.bos_id(),
             reference.eos_id())
  assert special == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
  # character_coverage=1.0: every character of the corpus has a piece.
  assert all(UNK_ID not in reference.encode(line) for line in corpus[:100])


def test_layer_vocabulary_size_and_missing_file(tokenizer, tmp_path):
  assert tokenizer.vocabulary_size == VOCAB
  assert tokenizer.sequence_length == LENGTH
  assert tokenizer.trainable is False and not tokenizer.weights
  with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
    SentencePieceTokenizer(str(tmp_path / "missing.model"), sequence_length=8)


# Tokenizing.

def test_ids_are_the_reference_pieces_then_eos_then_padding(tokenizer,
                                                            reference, corpus):
  lines = covered(corpus, reference)
  lines = lines[:5] + lines[-5:]
  ids = tokenizer(tf.constant(lines))
  assert ids.dtype == tf.int32 and ids.shape == (len(lines), LENGTH)
  for row, line in zip(ids.numpy(), lines):
    pieces = reference.encode(line)
    assert 0 < len(pieces) < LENGTH - 1
    expected = pieces + [EOS_ID] + [PAD_ID] * (LENGTH - len(pieces) - 1)
    assert row.tolist() == expected, line
  # tokenize: the same pieces, ragged, without EOS.
  ragged = tokenizer.tokenize(tf.constant(lines))
  assert ragged.to_list() == [reference.encode(line) for line in lines]


def test_long_inputs_are_truncated_and_still_end_with_eos(model_file, corpus,
                                                          reference):
  short = SentencePieceTokenizer(model_file, sequence_length=16)
  long_text = " ".join(corpus[:10])
  pieces = reference.encode(long_text)
  assert len(pieces) > 100
  ids = short(tf.constant([long_text, corpus[0]])).numpy()
  assert ids.shape == (2, 16)
  assert ids[0].tolist() == pieces[:15] + [EOS_ID]  # the first pieces kept
  assert PAD_ID not in ids[0].tolist()
  # A text of exactly sequence_length - 1 pieces is not cut.
  exact = reference.decode(pieces[:15])
  if reference.encode(exact) == pieces[:15]:
    assert short(tf.constant([exact])).numpy()[0].tolist() == (pieces[:15] +
                                                              [EOS_ID])


def test_anything_a_string_can_hold_tokenizes_without_error(tokenizer,
                                                            reference):
  strings = tf.constant([
      "".encode(), "电影 😀".encode(), b"Hund \xff\xfe Katze", "   ".encode(),
      "\u0000\t\n".encode(), ("ein Hund " * 200).encode(),
      "Zwei Männer".encode()])
  ids = tokenizer(strings).numpy()
  assert ids.shape == (7, LENGTH)
  lengths = (ids != PAD_ID).sum(axis=1)
  for row in ids:  # pieces, then exactly one EOS, then padding only
    n = int((row != PAD_ID).sum())
    assert row[n - 1] == EOS_ID and np.all(row[n:] == PAD_ID)
    assert np.all(row[:n - 1] != EOS_ID) and np.all(row[:n] != PAD_ID)
    assert np.all(row[:n - 1] != BOS_ID)
  assert ids[0].tolist() == [EOS_ID] + [PAD_ID] * (LENGTH - 1)  # empty
  assert UNK_ID in ids[1].tolist()  # unseen script and emoji
  # Invalid UTF-8 becomes U+FFFD first, then tokenizes as the library does
  # (its normalisation drops U+FFFD: the text around it keeps its pieces).
  assert ids[2].tolist()[:lengths[2]] == reference.encode(
      "Hund \ufffd\ufffd Katze") + [EOS_ID]
  assert ids[3].tolist()[:lengths[3]] == reference.encode("   ") + [EOS_ID]
  assert lengths[5] == LENGTH  # truncated
  assert ids[6].tolist()[:lengths[6]] == reference.encode("Zwei Männer") + [
      EOS_ID]
  hund = reference.encode("Hund")
  assert ids[2].tolist()[:len(hund)] == hund
  # detokenize never fails either.
  assert tokenizer.detokenize(ids).shape == (7,)


def test_empty_batch(tokenizer):
  ids = tokenizer(tf.constant([], tf.string))
  assert ids.shape == (0, LENGTH)
  assert tokenizer.detokenize(ids).shape == (0,)


def test_batch_agnostic_graph_has_a_static_width(tokenizer):
  fn = tf.function(lambda strings: tokenizer(strings),
                   input_signature=[tf.TensorSpec([None], tf.string)])
  concrete = fn.get_concrete_function()
  assert concrete.structured_outputs.shape.as_list() == [None, LENGTH]
  assert tokenizer.compute_output_shape((None,)) == (None, LENGTH)
  np.testing.assert_array_equal(fn(tf.constant(["Ein Hund."])).numpy(),
                                tokenizer(tf.constant(["Ein Hund."])).numpy())


# Detokenizing.

def test_detokenize_inverts_tokenize_for_covered_text(tokenizer, corpus,
                                                     reference):
  lines = covered(corpus, reference)[:200]
  texts = as_text(tokenizer.detokenize(tokenizer(tf.constant(lines))))
  assert texts == lines


def test_detokenize_stops_at_the_first_eos_and_drops_bos_and_padding(
    tokenizer, reference):
  a = reference.encode("Ein Hund läuft.")
  b = reference.encode("Zwei Katzen.")
  rows = [
      [BOS_ID] + a + [EOS_ID] + b + [EOS_ID],  # BOS dropped, stops at EOS
      a[:2] + [PAD_ID, BOS_ID] + a[2:],  # no EOS: everything but PAD/BOS
      [EOS_ID] + a,  # EOS first: nothing
      [PAD_ID] * 3,  # padding only
      a + [EOS_ID, UNK_ID, EOS_ID],
  ]
  width = max(len(r) for r in rows)
  ids = np.array([r + [PAD_ID] * (width - len(r)) for r in rows], np.int64)
  texts = as_text(tokenizer.detokenize(tf.constant(ids)))
  assert texts == ["Ein Hund läuft.", "Ein Hund läuft.", "", "",
                   "Ein Hund läuft."]


# Serialization.

def test_get_config_round_trip(tokenizer, model_file):
  config = tokenizer.get_config()
  assert config["model_file"] == model_file
  assert config["sequence_length"] == LENGTH
  clone = SentencePieceTokenizer.from_config(config)
  revived = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(tokenizer))
  assert isinstance(revived, SentencePieceTokenizer)
  strings = tf.constant(["Ein Hund läuft.", "", "电影"])
  expected = tokenizer(strings).numpy()
  for other in (clone, revived):
    assert other.sequence_length == LENGTH
    assert other.vocabulary_size == VOCAB
    np.testing.assert_array_equal(other(strings).numpy(), expected)


def shakespeare_lines(count):
  path = os.path.join(REPO_ROOT, "data", "tinyshakespeare", "input.txt")
  with open(path, encoding="utf-8") as f:
    return list(itertools.islice(f, count))  # newlines kept


@pytest.fixture(scope="module")
def lm_tokenizer(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sp_lm") / "lm.model")
  write_model(learn_sentencepiece(shakespeare_lines(3000), VOCAB,
                                  exact_text=True), path)
  return SentencePieceLMTokenizer(path, sequence_length=16)


def test_exact_text_vocabulary_round_trips_whitespace_and_line_breaks(
    lm_tokenizer):
  texts = ["First Citizen:\nBefore we  proceed any further,\n\n  hear me.\n",
           " leading space", "trailing  \n", ""]  # characters it has seen
  ids = lm_tokenizer.tokenize(tf.constant(texts))
  back = lm_tokenizer.detokenize(ids.to_tensor()).numpy()
  assert [b.decode() for b in back] == texts
  newline = lm_tokenizer.tokenize(tf.constant(["\n"])).to_list()
  assert len(newline[0]) == 1  # a piece of its own
  unseen = lm_tokenizer.tokenize(tf.constant(["\t"])).to_list()
  assert unseen == [[UNK_ID]]  # no tab in the sample: unknown


def test_lm_tokenizer_reads_after_bos_and_cuts_without_eos(lm_tokenizer):
  ids = lm_tokenizer(tf.constant(["hear me speak.\n", "x" * 200, ""])).numpy()
  assert ids.shape == (3, 16)
  assert list(ids[:, 0]) == [BOS_ID] * 3
  assert EOS_ID not in ids
  pieces = lm_tokenizer.tokenize(tf.constant(["hear me speak.\n"])).to_list()[0]
  assert list(ids[0, 1:1 + len(pieces)]) == pieces
  assert np.all(ids[0, 1 + len(pieces):] == PAD_ID)
  assert np.all(ids[1] != PAD_ID)  # cut after 15 pieces
  assert list(ids[2, 1:]) == [PAD_ID] * 15
  assert lm_tokenizer.start_id == BOS_ID


def test_lm_pieces_never_cross_a_line_break(lm_tokenizer):
  """The ids of a text are the ids of its lines, concatenated (what the
  language model's evaluation chunks rely on), and a continuation
  detokenized on its own keeps its leading space."""
  lines = shakespeare_lines(400)
  whole = lm_tokenizer.tokenize(tf.constant(["".join(lines)])).to_list()[0]
  each = lm_tokenizer.tokenize(tf.constant(lines)).to_list()
  assert whole == [i for line in each for i in line]
  ids = lm_tokenizer.tokenize(tf.constant(["hear me"])).to_list()[0]
  tail = lm_tokenizer.detokenize(tf.constant([ids[1:]])).numpy()[0].decode()
  assert "hear me".endswith(tail) and tail.startswith((" ", "e", "a", "r"))


def test_lm_tokenizer_get_config_round_trip(lm_tokenizer):
  clone = SentencePieceLMTokenizer.from_config(lm_tokenizer.get_config())
  text = tf.constant(["What, ho!\n"])
  np.testing.assert_array_equal(clone(text), lm_tokenizer(text))
