"""Masked language model: encoder backbone + keras_hub MaskedLMHead.

Used to pretrain the encoder on the training split's own text before
classification fine-tuning (self-pretraining). The output projection is tied
to the backbone's token embedding.
"""

import keras
import keras_hub

from zoo.backbones.encoder import build_encoder_backbone
from zoo.tasks.task_model import TaskModel


@keras.saving.register_keras_serializable(package="zoo")
class MaskedLanguageModel(TaskModel):
  """{token_ids int[B, T], mask_positions int[B, P]} -> logits float32[B, P, V]."""

  def __init__(self, backbone, **kwargs):
    super().__init__(backbone, **kwargs)
    self.mlm_head = keras_hub.layers.MaskedLMHead(
        token_embedding=backbone.embedding.token_embedding,
        intermediate_activation="gelu", dtype="float32", name="mlm_head")

  def call(self, inputs, training=None):
    sequence = self.backbone(inputs["token_ids"], training=training)  # [B, T, D]
    return self.mlm_head(sequence, mask_positions=inputs["mask_positions"])


def build_masked_lm(preset):
  """Pretraining uses no token dropout: masking is its own noise."""
  return MaskedLanguageModel(
      build_encoder_backbone(dict(preset, token_dropout=0.0)), name="masked_lm")
