"""Causal language model: decoder backbone + tied output projection.

Token ids in, next-token logits out (float32 even under mixed precision).
`log_likelihood` scores texts; `generate` (zoo.decoding.generation) continues
them with the key/value cache. Tokenization is separate (zoo.tokenizers).
"""

import keras
import tensorflow as tf

from zoo.backbones.decoder import build_decoder_backbone
from zoo.decoding import generation
from zoo.tasks.task_model import TaskModel

PAD_ID = 0


@keras.saving.register_keras_serializable(package="zoo")
class CausalLanguageModel(TaskModel):
  """int[B, T] token ids -> float32[B, T, V]: logits for the token at t + 1."""

  def __init__(self, backbone, suppressed_ids=(), end_id=None, **kwargs):
    super().__init__(backbone, **kwargs)
    self.suppressed_ids = tuple(suppressed_ids)  # never generated (PAD, UNK)
    self.end_id = end_id  # generation stops here; None = no end token

  def call(self, token_ids, training=None):
    hidden = self.backbone(token_ids, training=training)  # [B, T, D]
    return tf.cast(self.backbone.logits(hidden), tf.float32)  # [B, T, V]

  def log_likelihood(self, token_ids):
    """Sum of log p(ids[t+1] | ids[:t+1]) over non-pad targets.

    token_ids int[B, T] right-padded, ids[:, 0] the start token ->
    (float32[B] log-likelihood in nats, int32[B] number of scored tokens).
    """
    token_ids = tf.cast(token_ids, tf.int32)
    logits = self(token_ids, training=False)[:, :-1]  # [B, T-1, V]
    targets = token_ids[:, 1:]  # [B, T-1]
    log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=logits)  # [B, T-1]
    mask = tf.cast(targets != PAD_ID, tf.float32)
    return (tf.reduce_sum(log_probs * mask, axis=-1),
            tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1))

  def generate(self, prompt_ids, prompt_lengths, max_new_tokens, temperature,
               top_k, top_p, seed, use_cache=True, jit_compile=False):
    """See zoo.decoding.generation.generate; returns (tokens, num_generated)."""
    return generation.generate(
        self, prompt_ids, prompt_lengths, max_new_tokens, temperature, top_k,
        top_p, seed, end_id=self.end_id, suppressed_ids=self.suppressed_ids,
        use_cache=use_cache, jit_compile=jit_compile)

  def get_config(self):
    config = super().get_config()
    config.update(suppressed_ids=list(self.suppressed_ids), end_id=self.end_id)
    return config


def build_causal_lm(preset, suppressed_ids=(), end_id=None):
  return CausalLanguageModel(build_decoder_backbone(preset),
                             suppressed_ids=suppressed_ids, end_id=end_id,
                             name="causal_lm")
