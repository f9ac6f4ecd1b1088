"""GPT-2 byte-level BPE: the in-graph layer against keras-hub and GPT-2.

A small GPT-2 tokenizer is learned here (Hugging Face's BPE trainer over the
bundled text, every byte a token, `<|endoftext|>` the last id as in GPT-2)
and saved as a keras-hub preset, so the layer reads the files a real preset
has. Two references:
  - keras-hub's GPT2Tokenizer from that preset, on its TensorFlow path (what
    it runs inside tf.data), on the bundled text and the other strings it
    splits as GPT-2 does;
  - GPT-2's own tokenization, as Hugging Face's GPT-2 tokenizer does it
    (byte-level BPE after GPT-2's regex, `<|endoftext|>` a special token),
    on every string, including the whitespace, NUL and other cases where
    keras-hub's TF path departs from GPT-2 (see test_keras_hub_departs...).
"""

import gzip
import itertools
import json
import os
import shutil
import unicodedata

import keras
import keras_hub
from keras_hub.src.tokenizers import byte_pair_tokenizer
import numpy as np
import pytest
import tensorflow as tf
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from tests.conftest import REPO_ROOT
from tests.presets import learn_gpt2_tokenizer
from zoo.tokenizers.byte_pair import (END_OF_TEXT, NEVER_GENERATED, PAD_ID,
                                      GPT2LMTokenizer, byte_symbols,
                                      preset_tokenizer_files, read_merges)

VOCAB = 1200
LENGTH = 48
BATCH = 1024
# Written into the training text so that merges join bytes of multi-byte
# characters (accents, CJK, Arabic, emoji) too.
UNICODE_TEXT = ("Ça café naïve façade déjà vu Übermäßig größer Straße "
                "日本語のテキスト 中文文本 한국어 مرحبا بالعالم Привет мир "
                "👍🏽 👨‍👩‍👧 🏳️‍🌈 😀😀")


# Data.

def data_path(*parts):
  return os.path.join(REPO_ROOT, "data", *parts)


def shakespeare():
  with open(data_path("tinyshakespeare", "input.txt"), encoding="utf-8") as f:
    return f.read().split("\n")


def sst2(split, rows):
  with open(data_path("sst2", f"{split}.tsv"), encoding="utf-8") as f:
    next(f)
    return [line.rstrip("\n").split("\t")[0] for line in itertools.islice(f, rows)]


def multi30k(name, rows=None):
  with gzip.open(data_path("multi30k", f"{name}.gz"), "rt", encoding="utf-8") as f:
    return [line.rstrip("\n") for line in itertools.islice(f, rows)]


def gpt2_reference(vocabulary_file, merges_file):
  """GPT-2's tokenization (Hugging Face's GPT-2 tokenizer set-up)."""
  with open(vocabulary_file, encoding="utf-8") as f:
    vocabulary = json.load(f)
  reference = tokenizers.Tokenizer(
      models.BPE(vocab=vocabulary, merges=read_merges(merges_file)))
  reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                     use_regex=True)
  reference.decoder = decoders.ByteLevel()
  reference.add_special_tokens([END_OF_TEXT])
  return reference


def corpus_lines():
  """Lines of the bundled data: what keras-hub's TF path splits as GPT-2."""
  return (shakespeare()[30000:34000] + sst2("train", 3000) + sst2("dev", 872)
          + multi30k("val.de") + multi30k("val.en")
          + multi30k("test_2016_flickr.de") + multi30k("test_2016_flickr.en"))


def long_words():
  """Words of thousands of characters (keras-hub takes seconds for each, so
  it sees their first 300 characters only)."""
  text = "".join(shakespeare()[:300]).replace(" ", "")
  return ["a" * 3000, "ab" * 2000, text[:4000], "x" + "é" * 2000,
          "\U0001F600" * 1000, "9" * 2500]


def edge_cases():
  """Strings keras-hub's TF path also splits as GPT-2."""
  return [
      "", "a", "Hello world", "Hello, world!", "don't", "I'm you're we've "
      "they'll he'd it's", "DON'T I'M YOU'RE WE'VE THEY'LL HE'D IT'S 'S 'T",
      "'Tis 'twas o'er ''s '''s'", " 's 't", "x's's's", "can't've",
      "1 12 123 1234 12345 3.14159 1,000,000 $5 50% 2024-01-01", "٣٤ ५६ ²½",
      "Ça café naïve façade déjà vu", "Übermäßig größer Straße", "e\u0301",
      "日本語のテキスト", "中文 文本", "한국어 텍스트", "مرحبا بالعالم",
      "Привет, мир!", "👍🏽 👨‍👩‍👧 🏳️‍🌈 😀😀 👩🏿‍💻", "\U0001F600\U0001F601" * 20,
      "\ufeffBOM \u200b zero width", "hi!!! ... ?! (a) [b] {c} <d> #e @f",
      "word" + END_OF_TEXT + "next", END_OF_TEXT, END_OF_TEXT * 3,
      "a " + END_OF_TEXT + " b", "tab\tseparated", "line\nbreak", " a",
      "the the the", "\u00a0", "\u3000", "a\u00a0b", "x\u3000y",
  ] + [chr(c) + " x" for c in range(1, 32)] + ["\x7f\x80\x9f del c1"] + [
      word[:300] for word in long_words()]


def whitespace_cases():
  """Strings where keras-hub's TF path departs from GPT-2 (runs of whitespace
  before a word or at the end, NUL, U+096C, "Ĵ" + capital): checked against
  GPT-2's reference only."""
  lines = shakespeare()[:2000]
  chunks = ["\n".join(lines[i:i + 2 + i % 5]) for i in range(0, 2000, 4)]
  cases = [
      "a  b   c    ", "trail   ", "  leading", "x\n\n  y", "a\n\nb", "a \nb",
      "  \n  x", " \t\t", "a\t\tb", "a  's", "a \u3000b", "a\u2003\u2003 b",
      "word  " + END_OF_TEXT, "\n\n\n", "   ", "\x00", "a\x00b", "\x00 x",
      "x \x00", "foo\u096cbar", "\u0134A test", "\ue000\ue001\ue002\x00 \ue000",
      "\r\n\r\n  x\r\n", "\x0b\x0c\x1c\x1d\x85 y", "end with spaces  ",
  ]
  rng = np.random.default_rng(0)
  alphabet = [" ", " ", " ", "\n", "\t", "\u00a0", "\u3000", "\u2009", "a",
              "b", "S", "'", "s", "t", "ll", "1", "23", ".", "!", "\x00",
              "\ue000", "\ue001", "é", "日", "👍🏽", END_OF_TEXT, "\r", "-"]
  fuzz = ["".join(rng.choice(alphabet, size=rng.integers(0, 30)))
          for _ in range(1500)]
  return chunks + cases + fuzz + long_words()


def whitespace_text(lines, rows):
  """Lines wrapped in runs of whitespace, for the vocabulary to learn merges
  of whitespace (so a word split wrongly at whitespace changes the ids)."""
  rng = np.random.default_rng(1)
  runs = ["  ", "   ", "    ", "\t", "\t\t", "\n\n\n", "\n  ", " \n",
          "\u3000", "\u00a0", "\r\n"]
  return [rng.choice(runs) + line + rng.choice(runs)
          for line in rng.choice(lines, rows)]


def as_lists(ragged):
  return [list(row) for row in ragged.to_list()]


# Fixtures.

def batched_graph(tokenize):
  """tokenize (string[B] -> ragged ids) as a graph function over batches of
  BATCH strings; returns Python lists of ids."""
  fn = tf.function(tokenize, input_signature=[tf.TensorSpec([None], tf.string)])

  def run(strings):
    out = []
    for i in range(0, len(strings), BATCH):
      out += as_lists(fn(tf.constant(strings[i:i + BATCH])))
    return out
  return run


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
  lines = shakespeare()
  texts = (lines[:6000] + multi30k("train.de", 1500)
           + multi30k("train.en", 1500) + [UNICODE_TEXT] * 20
           + ["\n".join(lines[i:i + 8]) for i in range(10000, 16000, 8)]
           + whitespace_text(lines[:3000], 2000))
  vocabulary, merges = learn_gpt2_tokenizer(texts, VOCAB)
  path = str(tmp_path_factory.mktemp("gpt2_preset"))
  keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary,
                                 merges=merges).save_to_preset(path)
  return path


@pytest.fixture(scope="module")
def files(preset):
  return preset_tokenizer_files(preset)


@pytest.fixture(scope="module")
def tokenizer(files):
  return GPT2LMTokenizer(*files, sequence_length=LENGTH)


@pytest.fixture(scope="module")
def tokenize(tokenizer):
  """The layer's tokenize as a graph function (how tf.data and exports run
  it); Python lists of ids."""
  return batched_graph(tokenizer.tokenize)


@pytest.fixture(scope="module")
def reference(files):
  return gpt2_reference(*files)


@pytest.fixture(scope="module")
def keras_hub_tf_path(files):
  """keras-hub's GPT2Tokenizer on the preset's files (what from_preset loads
  into it), on its TensorFlow path (inside tf.function)."""
  hub = keras_hub.models.GPT2Tokenizer(vocabulary=files[0], merges=files[1])
  return batched_graph(hub.tokenize)


@pytest.fixture(scope="module")
def corpus_and_edge_cases():
  return corpus_lines() + edge_cases()


@pytest.fixture(scope="module")
def every_case(corpus_and_edge_cases):
  return corpus_and_edge_cases + whitespace_cases()


def shifted(ids):
  return [[i - 1 for i in row] for row in ids]


# The vocabulary and the id space.

def test_the_preset_has_the_files_and_merges_header_of_gpt2(files):
  vocabulary_file, merges_file = files
  with open(merges_file, encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0].startswith("#version")  # skipped by the layer
  with open(vocabulary_file, encoding="utf-8") as f:
    vocabulary = json.load(f)
  assert len(vocabulary) == VOCAB
  assert vocabulary[END_OF_TEXT] == VOCAB - 1
  assert set(byte_symbols()) <= set(vocabulary)
  assert read_merges(merges_file) == [tuple(m.split(" ")) for m in lines[1:]]


def test_ids_are_gpt2_ids_plus_one_with_pad_zero(tokenizer, files):
  with open(files[0], encoding="utf-8") as f:
    vocabulary = json.load(f)
  assert tokenizer.vocabulary_size == len(vocabulary) + 1
  assert tokenizer.start_id == vocabulary[END_OF_TEXT] + 1 == VOCAB
  assert PAD_ID == 0 and PAD_ID in NEVER_GENERATED
  ids = tokenizer.tokenize(tf.constant(["!", END_OF_TEXT]))
  assert as_lists(ids) == [[vocabulary["!"] + 1], [tokenizer.start_id]]


def test_byte_symbols_are_gpt2s_table():
  symbols = byte_symbols()
  assert len(set(symbols)) == 256
  assert symbols[ord("!")] == "!" and symbols[ord("~")] == "~"
  assert symbols[ord(" ")] == "Ġ" and symbols[ord("\n")] == "Ċ"
  assert symbols[0] == "Ā" and symbols[0xAD] == "Ń"
  assert set(symbols) == set(pre_tokenizers.ByteLevel.alphabet())
  hub_bytes, hub_symbols = byte_pair_tokenizer.bytes_to_unicode()
  assert dict(zip(hub_bytes, hub_symbols)) == {
      bytes([b]): c for b, c in enumerate(symbols)}


# Parity.

def test_tokenize_equals_keras_hub_gpt2_tokenizer(tokenize, keras_hub_tf_path,
                                                  corpus_and_edge_cases):
  strings = corpus_and_edge_cases
  assert len(strings) >= 10_000
  ours = shifted(tokenize(strings))
  # Its merge loop costs (longest word) x (words) a step: long words apart.
  corpus = len(strings) - len(edge_cases())
  theirs = keras_hub_tf_path(strings[:corpus]) + keras_hub_tf_path(
      strings[corpus:])
  mismatches = [(s, a, b) for s, a, b in zip(strings, ours, theirs) if a != b]
  assert not mismatches[:5]


def test_tokenize_equals_gpt2s_reference(tokenize, reference, every_case):
  strings = every_case
  assert len(strings) >= 12_000
  ours = shifted(tokenize(strings))
  theirs = [e.ids for e in reference.encode_batch(strings)]
  mismatches = [(s, a, b) for s, a, b in zip(strings, ours, theirs) if a != b]
  assert not mismatches[:5]


def test_keras_hub_departs_from_gpt2_where_documented(keras_hub_tf_path,
                                                     reference, files):
  # Why whitespace_cases are checked against GPT-2 only (keras-hub 0.32.0).
  for text in ["a\n\nb", "trail   ", "word  " + END_OF_TEXT, "a\x00b",
               "foo\u096cbar", "\u0134A test"]:
    assert keras_hub_tf_path([text])[0] != reference.encode(text).ids, text
  # And why its eager path (no pre-splitting) is no reference at all.
  hub = keras_hub.models.GPT2Tokenizer(vocabulary=files[0], merges=files[1])
  lines = shakespeare()[30000:32000]
  eager = [list(ids) for ids in hub.tokenize(lines)]
  gpt2 = [e.ids for e in reference.encode_batch(lines)]
  assert sum(a != b for a, b in zip(eager, gpt2)) > 0


def assigned_characters():
  """Every character Python's Unicode database assigns below U+30000 (the
  large blocks of one category sampled), surrogates excepted."""
  sampled = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
             (0xE000, 0xF8FF), (0x17000, 0x18AFF), (0x20000, 0x2FFFF)]
  keep = lambda c: not any(lo + 64 <= c <= hi for lo, hi in sampled)
  return [chr(c) for c in range(1, 0x30000)
          if keep(c) and unicodedata.category(chr(c)) not in ("Cn", "Cs")]


def test_words_split_every_character_as_gpt2(tokenizer, reference):
  # Letters, digits, whitespace and the rest as GPT-2's regex classes them
  # (Unicode versions differ only on characters newer than Python's
  # unicodedata, so those are left out).
  characters = assigned_characters()
  assert len(characters) > 30_000
  strings = ["".join(f"a{c}{c} 1{c} {c}x{c}  " for c in characters[i:i + 8])
             for i in range(0, len(characters), 8)]
  words = tf.function(tokenizer.words)(tf.constant(strings)).to_list()
  symbols = byte_symbols()
  ours = [["".join(symbols[b] for b in word) for word in row] for row in words]
  splitter = reference.pre_tokenizer
  theirs = [[w for w, _ in splitter.pre_tokenize_str(s)] for s in strings]
  mismatches = [(s, a, b) for s, a, b in zip(strings, ours, theirs) if a != b]
  assert not mismatches[:3]


def test_eager_call_equals_graph_call(tokenizer, tokenize):
  strings = ["Hello world", "x\n\n  y", "", "a" * 300, END_OF_TEXT + " hi"]
  assert as_lists(tokenizer.tokenize(tf.constant(strings))) == tokenize(strings)


def test_empty_strings_and_empty_batches_give_no_tokens(tokenizer):
  assert as_lists(tokenizer.tokenize(tf.constant(["", ""]))) == [[], []]
  empty = tokenizer(tf.constant([], tf.string))
  assert empty.shape == (0, LENGTH)


def test_invalid_utf8_is_replaced_not_an_error(tokenizer, tokenize):
  broken = [b"ab\xffcd", b"\xe2\x82", b"a \xc3 b", b"x\xed\xa0\x80y", b"\x80"]
  replaced = [b.decode("utf-8", "replace") for b in broken]  # as Python does
  assert as_lists(tokenizer.tokenize(tf.constant(broken))) == tokenize(replaced)
  text = tokenizer.detokenize(tokenizer.tokenize(tf.constant(broken[:1])))
  assert text.numpy()[0].decode("utf-8") == "ab\ufffdcd"


# Detokenize and call.

def test_detokenize_inverts_tokenize(tokenizer, tokenize, every_case):
  detokenize = tf.function(tokenizer.detokenize)
  for i in range(0, len(every_case), BATCH):
    strings = every_case[i:i + BATCH]
    ids = tf.ragged.constant(tokenize(strings), dtype=tf.int32,
                             row_splits_dtype=tf.int64)
    texts = [t.decode("utf-8") for t in detokenize(ids).numpy()]
    assert texts == strings


def test_call_starts_with_start_id_then_truncates_and_pads(tokenizer, tokenize):
  strings = ["Hello world", "", "the " * 100]
  ids = tokenizer(tf.constant(strings)).numpy()
  assert ids.shape == (3, LENGTH) and ids.dtype == np.int32
  assert np.all(ids[:, 0] == tokenizer.start_id)
  tokens = tokenize(strings)
  assert ids[0, 1:1 + len(tokens[0])].tolist() == tokens[0]
  assert np.all(ids[0, 1 + len(tokens[0]):] == PAD_ID)
  assert np.all(ids[1, 1:] == PAD_ID)
  assert ids[2, 1:].tolist() == tokens[2][:LENGTH - 1]
  assert tokenizer.compute_output_shape((3,)) == (3, LENGTH)


def test_detokenize_of_call_is_the_start_text_then_the_text(
    tokenizer, tokenize, reference, corpus_and_edge_cases):
  strings = [s for s, ids in zip(corpus_and_edge_cases[:3000],
                                 tokenize(corpus_and_edge_cases[:3000]))
             if len(ids) < LENGTH]
  assert len(strings) > 2500
  texts = tokenizer.detokenize(tokenizer(tf.constant(strings))).numpy()
  assert [t.decode("utf-8") for t in texts] == [END_OF_TEXT + s for s in strings]
  # Truncated texts keep their first LENGTH - 1 tokens.
  long = corpus_and_edge_cases[-1]
  text = tokenizer.detokenize(tokenizer(tf.constant([long])))
  first = reference.decode(reference.encode(long).ids[:LENGTH - 1])
  assert text.numpy()[0].decode() == END_OF_TEXT + first
  assert long.startswith(first) and len(first) < len(long)


def test_detokenize_drops_pad_and_unknown_ids_keeps_partial_bytes(tokenizer):
  ids = tokenizer.tokenize(tf.constant(["é日"])).to_list()[0]
  text = tokenizer.detokenize(tf.constant(
      [[0] + ids + [0, -5, tokenizer.vocabulary_size, 0]]))
  assert text.numpy()[0].decode() == "é日"
  # A token of one byte of a multi-byte character comes back as that byte.
  with open(tokenizer.vocabulary_file, encoding="utf-8") as f:
    vocabulary = json.load(f)
  lead = vocabulary[byte_symbols()[0xE6]] + 1  # first byte of 日 (E6 97 A5)
  assert tokenizer.detokenize(tf.constant([[lead, 0]])).numpy()[0] == b"\xe6"


# Keras and tf.data.

def test_config_round_trip(tokenizer):
  config = tokenizer.get_config()
  clone = GPT2LMTokenizer.from_config(config)
  assert clone.get_config() == config
  assert clone.start_id == tokenizer.start_id
  assert clone.vocabulary_size == tokenizer.vocabulary_size
  layer = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(tokenizer))
  assert isinstance(layer, GPT2LMTokenizer)
  assert not tokenizer.trainable and tokenizer.weights == []


def test_runs_in_tf_data(tokenizer):
  strings = ["Hello world", "x\n\n  y", END_OF_TEXT, ""]
  dataset = tf.data.Dataset.from_tensor_slices(strings).batch(2).map(tokenizer)
  ids = np.concatenate(list(dataset.as_numpy_iterator()))
  assert np.array_equal(ids, tokenizer(tf.constant(strings)).numpy())


def test_missing_files_and_bad_merges_raise(files, tmp_path):
  with pytest.raises(FileNotFoundError):
    GPT2LMTokenizer(str(tmp_path / "none.json"), files[1], LENGTH)
  bad = tmp_path / "merges.txt"
  bad.write_text("#version: 0.2\nnot_a_token zzz_not\n", encoding="utf-8")
  with pytest.raises(ValueError, match="not in the vocabulary"):
    GPT2LMTokenizer(files[0], str(bad), LENGTH)


# Export.

def test_export_loads_in_a_tf1_session_and_tf2_without_the_source_files(
    files, tmp_path):
  source = tmp_path / "tokenizer"
  source.mkdir()
  for path in files:
    shutil.copy(path, source)
  layer = GPT2LMTokenizer(str(source / os.path.basename(files[0])),
                            str(source / os.path.basename(files[1])),
                            sequence_length=LENGTH)
  strings = ["Hello world", "x\n\n  y " + END_OF_TEXT, "", "日本語 👍🏽", "a" * 500]
  expected = layer(tf.constant(strings)).numpy()
  archive = keras.export.ExportArchive()
  archive.track(layer)
  archive.add_endpoint(
      "serving_default", lambda text: {"ids": layer(text)},
      input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  archive.add_endpoint(
      "detokenize", lambda ids: {"text": layer.detokenize(ids)},
      input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
  export_dir = str(tmp_path / "export")
  archive.write_out(export_dir, verbose=False)
  # The tables travel as SavedModel assets (written once next to the
  # vocabulary, read from the export's own assets/).
  assert sorted(n.split("-")[0] for n in os.listdir(
      os.path.join(export_dir, "assets"))) == ["merges", "token_bytes"]
  shutil.rmtree(source)  # the export must not need them

  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    signature = meta.signature_def["serving_default"]
    session_ids = session.run(signature.outputs["ids"].name,
                              {signature.inputs["text"].name: strings})
    back = meta.signature_def["detokenize"]
    session_texts = session.run(back.outputs["text"].name,
                                {back.inputs["ids"].name: session_ids})
  np.testing.assert_array_equal(session_ids, expected)
  assert [t.decode() for t in session_texts[:4]] == [
      END_OF_TEXT + s for s in strings[:4]]
  np.testing.assert_array_equal(session_texts,
                                layer.detokenize(expected).numpy())

  loaded = tf.saved_model.load(export_dir)
  ids = loaded.signatures["serving_default"](text=tf.constant(strings))["ids"]
  np.testing.assert_array_equal(ids.numpy(), expected)
