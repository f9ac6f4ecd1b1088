"""Rebuild a zoo model and its tokenizer from a plain model-config dict.

The trainer writes this dict to `model_dir/config.json` under "model"; export
and evaluation call `build_tokenizer` and `build_model` with it, so they never
need the trainer's flags. Keys:
  family: "encoder", "decoder" or "seq2seq" (a key of FAMILIES)
  head: "classifier" (default) or "masked_lm" (pretraining)
  task: the task name the model was trained for
  preset: the preset name the architecture came from
  architecture: the preset dict, with vocabulary_size set to the real vocabulary
  labels: class names in id order (classifiers)
  vocabulary_file: path relative to the model_dir (or absolute)
  tokenizer: a key of TOKENIZERS; absent = the family's (sentencepiece_lm is
    SentencePiece read after BOS, for language models; preset_wordpiece is
    a keras-hub preset's WordPiece)
  tokenizer_options: keyword arguments of that tokenizer (e.g. lower_case)
  pretrained: where a model from a keras-hub preset came from
    (zoo.pretrained.Preset.describe)
  merges_file: the BPE merges next to vocabulary_file (byte_pair)
  end_id: the token that ends generation (decoders; absent = none)
  label_values: the labels as the data writes them, in id order
  warmup_examples: {input name: [strings]}, from the training data
  start_text: the character every text is read after (decoders)
"""

import os

from zoo.tasks.causal_lm import build_causal_lm
from zoo.tasks.masked_lm import build_masked_lm
from zoo.tasks.text_classifier import build_text_classifier
from zoo.tasks.translator import build_translator
from zoo.tokenizers import byte_pair, characters, sentencepiece
from zoo.tokenizers.sentencepiece import (SentencePieceLMTokenizer,
                                          SentencePieceTokenizer)
from zoo.tokenizers.preset_wordpiece import PresetWordPieceTokenizer
from zoo.tokenizers.wordpiece import WordPieceTokenizer



def vocabulary_path(model_config, model_dir):
  path = model_config["vocabulary_file"]
  return path if os.path.isabs(path) else os.path.join(model_dir, path)


def _encoder_model(model_config):
  if model_config.get("head") == "masked_lm":  # pretraining
    return build_masked_lm(model_config["architecture"])
  return build_text_classifier(model_config["architecture"],
                               num_classes=len(model_config["labels"]))


def _decoder_model(model_config):
  tokenizer = model_config.get("tokenizer") or "characters"
  return build_causal_lm(model_config["architecture"],
                         suppressed_ids=NEVER_GENERATED[tokenizer],
                         end_id=model_config.get("end_id"))


def _wordpiece(model_config, path, length):
  return WordPieceTokenizer(path, sequence_length=length, name="tokenizer")


def _preset_wordpiece(model_config, path, length):
  return PresetWordPieceTokenizer(path, sequence_length=length,
                                  name="tokenizer",
                                  **model_config.get("tokenizer_options", {}))


def _byte_pair(model_config, path, length):
  merges = os.path.join(os.path.dirname(path), model_config["merges_file"])
  return byte_pair.GPT2LMTokenizer(path, merges, sequence_length=length,
                                   end_of_text_as_text=False, name="tokenizer")


def _characters(model_config, path, length):
  return characters.CharacterTokenizer(
      path, sequence_length=length,
      start_text=model_config.get("start_text", "\n"), name="tokenizer")


def _sentencepiece(model_config, path, length):
  return SentencePieceTokenizer(path, sequence_length=length, name="tokenizer")


def _sentencepiece_lm(model_config, path, length):
  return SentencePieceLMTokenizer(path, sequence_length=length,
                                  name="tokenizer")


# The family registry: family -> (default tokenizer, model builder, the
# names of its model inputs).
FAMILIES = {
    "encoder": ("wordpiece", _encoder_model, ("token_ids",)),
    "decoder": ("characters", _decoder_model, ("token_ids",)),
    "seq2seq": ("sentencepiece", lambda c: build_translator(c["architecture"]),
                ("source_ids", "target_ids")),
}
TOKENIZERS = {"wordpiece": _wordpiece, "preset_wordpiece": _preset_wordpiece,
              "byte_pair": _byte_pair, "characters": _characters,
              "sentencepiece": _sentencepiece,
              "sentencepiece_lm": _sentencepiece_lm}
# Ids a language model over each tokenizer never generates.
NEVER_GENERATED = {"characters": characters.NEVER_GENERATED,
                   "byte_pair": byte_pair.NEVER_GENERATED,
                   "sentencepiece_lm": sentencepiece.NEVER_GENERATED}


def _family(model_config):
  family = model_config["family"]
  if family not in FAMILIES:
    raise ValueError(f"Unknown model family {family!r}; known: "
                     f"{sorted(FAMILIES)}")
  return FAMILIES[family]


def family_tokenizer(model_config):
  """The model's tokenizer: a key of TOKENIZERS."""
  return model_config.get("tokenizer") or _family(model_config)[0]


def build_tokenizer(model_config, model_dir):
  """The in-graph tokenizer layer of the model described by model_config."""
  kind = family_tokenizer(model_config)
  return TOKENIZERS[kind](model_config, vocabulary_path(model_config, model_dir),
                          model_config["architecture"]["sequence_length"])


def build_model(model_config):
  """The (unbuilt) Keras model described by model_config."""
  return _family(model_config)[1](model_config)


def dummy_inputs(model_config):
  """Zero inputs of the model's shape (a call with them creates the variables)."""
  import tensorflow as tf
  ids = tf.zeros([1, model_config["architecture"]["sequence_length"]], tf.int32)
  names = _family(model_config)[2]
  return ids if len(names) == 1 else {name: ids for name in names}
