"""Small keras-hub presets built in the test, with random weights.

No network: each builder makes a keras-hub backbone and tokenizer of a
real preset class (BertBackbone, DistilBertBackbone) at a tiny size and
writes them with `save_to_preset`, the files a downloaded preset has
(config.json, model.weights.h5, tokenizer.json, assets/tokenizer/...).
"""

import collections
import gzip
import os
import re

from tests.conftest import REPO_ROOT

RESERVED = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SHAKESPEARE = os.path.join(REPO_ROOT, "data", "tinyshakespeare", "input.txt")


def bundled_lines():
  """Lines of every bundled dataset: SST-2 sentences, Multi30k German and
  English, tiny-shakespeare."""
  data = os.path.join(REPO_ROOT, "data")
  lines = []
  for name in ("train.tsv", "dev.tsv"):
    with open(os.path.join(data, "sst2", name), encoding="utf-8") as f:
      lines += [row.split("\t")[0] for row in f.read().splitlines()[1:]]
  for name in ("train.de.gz", "train.en.gz"):
    with gzip.open(os.path.join(data, "multi30k", name), "rt",
                   encoding="utf-8") as f:
      lines += f.read().splitlines()
  with open(os.path.join(data, "tinyshakespeare", "input.txt"),
            encoding="utf-8") as f:
    lines += f.read().splitlines()
  return lines


def wordpiece_vocabulary(texts, words=3000):
  """A BERT-style vocabulary: the reserved tokens, every character seen
  (alone and as a ##suffix), then the most frequent lower-cased words."""
  counts = collections.Counter()
  characters = set()
  for text in texts:
    characters.update(text.lower())
    counts.update(re.findall(r"\w+", text.lower()))
  characters = sorted(c for c in characters if not c.isspace())
  vocabulary = RESERVED + characters + ["##" + c for c in characters]
  seen = set(vocabulary)
  for word, _ in counts.most_common():
    if len(vocabulary) >= len(RESERVED) + 2 * len(characters) + words:
      break
    for token in (word, "##" + word):
      if token not in seen:
        vocabulary.append(token)
        seen.add(token)
  return vocabulary


def make_wordpiece_preset(folder, vocabulary, kind="bert", lowercase=True,
                          strip_accents=False, max_sequence_length=64,
                          hidden_dim=32, num_layers=2, num_heads=2,
                          intermediate_dim=64, seed=0):
  """Writes a tiny BERT or DistilBERT preset to folder; returns its path."""
  import keras
  import keras_hub
  keras.utils.set_random_seed(seed)
  backbone_class, tokenizer_class = {
      "bert": (keras_hub.models.BertBackbone, keras_hub.models.BertTokenizer),
      "distil_bert": (keras_hub.models.DistilBertBackbone,
                      keras_hub.models.DistilBertTokenizer)}[kind]
  backbone = backbone_class(
      vocabulary_size=len(vocabulary), num_layers=num_layers,
      num_heads=num_heads, hidden_dim=hidden_dim,
      intermediate_dim=intermediate_dim,
      max_sequence_length=max_sequence_length)
  tokenizer = tokenizer_class(vocabulary=vocabulary, lowercase=lowercase,
                              strip_accents=strip_accents)
  path = str(folder)
  backbone.save_to_preset(path)
  tokenizer.save_to_preset(path)
  return path


def keras_hub_weights(path):
  """{weight path: numpy value} of the preset's keras-hub backbone."""
  import keras_hub
  backbone = keras_hub.models.Backbone.from_preset(path)
  return {w.path: w.numpy() for w in backbone.weights}


END_OF_TEXT = "<|endoftext|>"


def learn_gpt2_tokenizer(texts, vocabulary_size):
  """A small GPT-2 tokenizer learned from texts with Hugging Face's
  `tokenizers` byte-level BPE: (vocabulary {token: id}, merges ["a b"]
  after a "#version" line, as GPT-2's merges.txt starts). Every byte is a
  token and <|endoftext|> is the last id, as in GPT-2's own vocabulary."""
  import json
  import tokenizers
  learner = tokenizers.Tokenizer(tokenizers.models.BPE())
  learner.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False)
  learner.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=vocabulary_size, special_tokens=[END_OF_TEXT],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  model = json.loads(learner.to_str())["model"]
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  tokens = [t for t in sorted(model["vocab"], key=model["vocab"].get)
            if t != END_OF_TEXT] + [END_OF_TEXT]
  return {t: i for i, t in enumerate(tokens)}, ["#version: 0.2"] + merges


def make_gpt2_preset(folder, texts, vocabulary_size=400,
                     max_sequence_length=64, hidden_dim=32, num_layers=2,
                     num_heads=2, intermediate_dim=64, seed=0):
  """Writes a tiny GPT-2 preset (backbone and tokenizer) to folder."""
  import keras
  import keras_hub
  vocabulary, merges = learn_gpt2_tokenizer(texts, vocabulary_size)
  keras.utils.set_random_seed(seed)
  backbone = keras_hub.models.GPT2Backbone(
      vocabulary_size=len(vocabulary), num_layers=num_layers,
      num_heads=num_heads, hidden_dim=hidden_dim,
      intermediate_dim=intermediate_dim,
      max_sequence_length=max_sequence_length)
  path = str(folder)
  backbone.save_to_preset(path)
  keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary,
                                 merges=merges).save_to_preset(path)
  return path
