"""zoo.tokenizers.preset_wordpiece against keras-hub's own tokenizer.

keras-hub runs its WordPieceTokenizer on one of two paths: TensorFlow ops
inside tf.function and tf.data (the path its fine-tuning pipelines use), pure
Python when called eagerly. Ours is an in-graph layer, so its reference is
the TensorFlow path (called here inside tf.function). The two keras-hub
paths disagree on text with a NUL character, which ends the string on the
TensorFlow path only; that is keras-hub's difference, reported, not ours.
"""

import random

import numpy as np
import pytest
import tensorflow as tf

from tests import presets
from zoo.tokenizers.preset_wordpiece import PresetWordPieceTokenizer
from zoo.tokenizers.wordpiece import write_vocabulary

SPECIAL = [
    "", " ", "   ", "Café naïve résumé ÀÉÎÕÜ", "東京タワー 中文字符 한국어",
    "😀👍🏽👨‍👩‍👧 emoji ❤️", "a\tb\nc\rd\x07e\x1bf", "x" * 5000,
    "ﬁne Ｆｕｌｌｗｉｄｔｈ ｶﾀｶﾅ", "İstanbul straße STRASSE ẞ",
    "\u200bzero\u00adwidth\u200d", "don't it's can't", "١٢٣ عربى שלום",
    "\ufeffbom", "ǅ Ǆ ǆ", "a--b...c!!?", "Ωmega µ ﬀ", "[CLS] [SEP] [MASK]",
    "word" * 40, "e\u0301 o\u0308", "१२३ हिन्दी", "\u2028line\u2029para",
]


def parity_strings(count):
  """At least `count` strings: bundled data, SPECIAL and random code points."""
  rng = random.Random(0)
  lines = presets.bundled_lines()
  strings = rng.sample(lines, count - 1500) + SPECIAL * 20
  for _ in range(1500 - 20 * len(SPECIAL)):
    strings.append("".join(chr(rng.choice([rng.randrange(0x20, 0x2FF),
                                           rng.randrange(0x3000, 0xA000),
                                           rng.randrange(0x1F300, 0x1FAFF)]))
                           for _ in range(rng.randrange(40))))
  return strings


@pytest.fixture(scope="module")
def vocabulary_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("wordpiece") / "vocabulary.txt")
  write_vocabulary(presets.wordpiece_vocabulary(presets.bundled_lines()[:20000]),
                   path)
  return path


@pytest.mark.parametrize("lowercase,strip_accents",
                         [(True, False), (True, True), (False, False)])
def test_ids_equal_keras_hubs_on_ten_thousand_strings(vocabulary_file,
                                                      lowercase, strip_accents):
  import keras_hub
  ours = PresetWordPieceTokenizer(vocabulary_file, 512, lower_case=lowercase,
                                  strip_accents=strip_accents)
  hub = keras_hub.models.BertTokenizer(vocabulary=vocabulary_file,
                                       lowercase=lowercase,
                                       strip_accents=strip_accents)
  hub_graph = tf.function(hub)  # keras-hub's TensorFlow path
  strings = parity_strings(10_000)
  mismatches, unknown = [], 0
  for start in range(0, len(strings), 2000):
    batch = tf.constant(strings[start:start + 2000])
    expected = hub_graph(batch).to_list()
    got = ours.tokenize(batch).to_list()
    for text, a, b in zip(strings[start:], got, expected):
      unknown += a.count(ours.unk_id)
      if a != b:
        mismatches.append((text[:40], a[:8], b[:8]))
  assert len(strings) >= 10_000
  assert mismatches == []
  assert unknown > 0  # the set reaches [UNK]: unseen scripts, long words


def test_model_inputs_equal_keras_hubs_preprocessor(vocabulary_file):
  import keras_hub
  ours = PresetWordPieceTokenizer(vocabulary_file, 24)
  hub = keras_hub.models.BertTextClassifierPreprocessor(
      keras_hub.models.BertTokenizer(vocabulary=vocabulary_file,
                                     lowercase=True), sequence_length=24)
  first = parity_strings(2000)[:600]
  second = first[300:] + first[:300]
  single = tf.function(lambda x: hub(x))(tf.constant(first))
  np.testing.assert_array_equal(ours(tf.constant(first)).numpy(),
                                single["token_ids"].numpy())
  pair = tf.function(lambda a, b: hub(x=(a, b)))(tf.constant(first),
                                               tf.constant(second))
  ids, types = ours.pair(tf.constant(first), tf.constant(second))
  np.testing.assert_array_equal(ids.numpy(), pair["token_ids"].numpy())
  np.testing.assert_array_equal(types.numpy(), pair["segment_ids"].numpy())
  # [CLS] first, [SEP] last, 0-padded; nothing raises on invalid UTF-8.
  row = ours(tf.constant(["the film", b"\xff\xfe bad"])).numpy()
  assert row[0, 0] == ours.cls_id and ours.sep_id in row[0]
  assert row[1, 0] == ours.cls_id


def test_config_round_trip(vocabulary_file):
  layer = PresetWordPieceTokenizer(vocabulary_file, 16, lower_case=False,
                                   strip_accents=True, split_on_cjk=False)
  clone = PresetWordPieceTokenizer.from_config(layer.get_config())
  text = tf.constant(["Hello Wörld 中文"])
  np.testing.assert_array_equal(layer(text).numpy(), clone(text).numpy())
  assert clone.strip_accents and not clone.split_on_cjk and not clone.lower_case
