"""keras-hub BERT and DistilBERT presets converted into zoo encoders.

A tiny preset of each class is built with random weights; the converted
TextClassifier's backbone must give keras-hub's sequence output (and BERT's
pooler its pooled output) on the same token ids, to 1e-5 (float32 graph
noise only; dropout off).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import presets
from zoo import pretrained
from zoo.tasks.text_classifier import build_text_classifier

ATOL = 1e-5


def converted(preset, sequence_length):
  architecture = preset.converter.architecture(preset.backbone)
  architecture["sequence_length"] = sequence_length
  model = build_text_classifier(architecture, num_classes=3)
  model(tf.zeros([1, sequence_length], tf.int32))
  preset.converter.copy_weights(preset.backbone, model, sequence_length)
  return model, architecture


@pytest.fixture(scope="module")
def vocabulary():
  return presets.wordpiece_vocabulary(presets.bundled_lines()[:3000], 500)


@pytest.mark.parametrize("kind", ["bert", "distil_bert"])
def test_converted_backbone_equals_keras_hub(kind, vocabulary, tmp_path):
  path = presets.make_wordpiece_preset(tmp_path / kind, vocabulary, kind=kind)
  preset = pretrained.read_preset(path)
  length = 24  # fewer positions than the preset's 64: the table is cut
  model, architecture = converted(preset, length)
  assert architecture["num_token_types"] == (2 if kind == "bert" else 0)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, len(vocabulary), size=(4, length)).astype("int32")
  ids[:, 0] = 2  # [CLS]
  lengths = [length, 17, 5, 1]
  for row, n in enumerate(lengths):
    ids[row, n:] = 0
  mask = (ids != 0).astype("int32")
  types = np.zeros_like(ids)
  types[0, 10:] = 1
  inputs = {"token_ids": ids, "padding_mask": mask}
  if kind == "bert":
    inputs["segment_ids"] = types
  expected = preset.backbone(inputs, training=False)
  if kind == "bert":
    got = model.encode(ids, type_ids=types, training=False)
    sequence = expected["sequence_output"].numpy()
    pooled = model.pooler(got["sequence"][:, 0, :]).numpy()
    np.testing.assert_allclose(pooled, expected["pooled_output"].numpy(),
                               atol=ATOL)
  else:
    got = model.encode(ids, training=False)
    sequence = expected.numpy()
  np.testing.assert_allclose(got["sequence"].numpy() * mask[..., None],
                             sequence * mask[..., None], atol=ATOL)


def test_other_poolings_drop_the_pooler(vocabulary, tmp_path):
  path = presets.make_wordpiece_preset(tmp_path / "bert", vocabulary)
  preset = pretrained.read_preset(path)
  architecture = preset.converter.architecture(preset.backbone)
  architecture["pooling"] = "mean"
  model = build_text_classifier(architecture, num_classes=2)
  model(tf.zeros([1, architecture["sequence_length"]], tf.int32))
  preset.converter.copy_weights(preset.backbone, model,
                                architecture["sequence_length"])


def test_what_is_not_a_convertible_preset(tmp_path, vocabulary):
  with pytest.raises(pretrained.PresetError, match="cannot read keras-hub preset"):
    pretrained.read_preset(str(tmp_path / "missing"))
  import keras_hub
  backbone = keras_hub.models.RobertaBackbone(
      vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
      intermediate_dim=16, max_sequence_length=16)
  backbone.save_to_preset(str(tmp_path / "roberta"))  # a byte-level BPE encoder
  with pytest.raises(pretrained.PresetError, match="RobertaBackbone"):
    pretrained.read_preset(str(tmp_path / "roberta"))
  # A model whose shape differs from the preset's is refused, naming both.
  preset = pretrained.read_preset(
      presets.make_wordpiece_preset(tmp_path / "bert", vocabulary))
  architecture = preset.converter.architecture(preset.backbone)
  architecture["hidden_dim"] = 16
  model = build_text_classifier(architecture, num_classes=2)
  model(tf.zeros([1, 8], tf.int32))
  with pytest.raises(pretrained.PresetError, match="has shape"):
    preset.converter.copy_weights(preset.backbone, model, 8)
