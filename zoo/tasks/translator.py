"""Translator: encoder-decoder backbone + tied output projection + beam search.

Training: {"source_ids" int[B, S], "target_ids" int[B, T]} (target input:
BOS then the target pieces) -> float32[B, T, V] next-token logits.
Inference: `translate` runs zoo.decoding.beam_search on the decoder's
key/value cache with per-row beam size, maximum output length and length
penalty. Tokenization is separate (zoo.tokenizers.sentencepiece).
"""

import keras
import tensorflow as tf

from zoo.backbones.seq2seq import build_seq2seq_backbone
from zoo.decoding.beam_search import beam_search
from zoo.tasks.task_model import TaskModel
from zoo.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID


@keras.saving.register_keras_serializable(package="zoo")
class Translator(TaskModel):
  """Source and target-input ids -> float32[B, T, V] logits."""

  def __init__(self, backbone, max_beam_size=8, **kwargs):
    super().__init__(backbone, **kwargs)
    self.max_beam_size = int(max_beam_size)  # translate's largest beam

  def get_config(self):
    config = super().get_config()
    config["max_beam_size"] = self.max_beam_size
    return config

  def validate_settings(self, batch_size, beam_size, max_output_length,
                        length_penalty):
    """Graph asserts for translate's per-row settings; returns the ops."""
    longest = self.backbone.sequence_length - 2  # room for BOS and EOS
    checks = [tf.debugging.assert_equal(
        tf.shape(value)[0], batch_size,
        message=f"{name} must have one value per source (batch size)")
        for name, value in (("beam_size", beam_size),
                            ("max_output_length", max_output_length),
                            ("length_penalty", length_penalty))]
    checks += [
        tf.debugging.assert_greater_equal(
            beam_size, 1, message="beam_size must be >= 1"),
        tf.debugging.assert_less_equal(
            beam_size, self.max_beam_size,
            message=f"beam_size must be <= {self.max_beam_size} (this "
                    "model's maximum)"),
        tf.debugging.assert_greater_equal(
            max_output_length, 1, message="max_output_length must be >= 1"),
        tf.debugging.assert_less_equal(
            max_output_length, longest,
            message=f"max_output_length must be <= {longest}"),
        tf.debugging.Assert(tf.reduce_all(length_penalty >= 0.0),
                            ["length_penalty must be >= 0"]),
    ]
    return checks

  def call(self, inputs, training=None):
    hidden = self.backbone(inputs, training=training)  # [B, T, D]
    return tf.cast(self.backbone.logits(hidden), tf.float32)

  def log_probability(self, source_ids, target_ids):
    """Sum of log p(target) per row: float32[B].

    target_ids int[B, T]: the pieces then EOS, 0-padded (what translate
    returns); BOS is prepended here.
    """
    target_ids = tf.cast(target_ids, tf.int32)
    bos = tf.fill([tf.shape(target_ids)[0], 1], BOS_ID)
    inputs = tf.concat([bos, target_ids[:, :-1]], axis=1)  # [B, T]
    logits = self({"source_ids": source_ids, "target_ids": inputs})
    token_logp = -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=target_ids, logits=logits)  # [B, T]
    mask = tf.cast(target_ids != PAD_ID, tf.float32)
    return tf.reduce_sum(token_logp * mask, axis=-1)

  def translate(self, source_ids, beam_size, max_output_length, length_penalty):
    """Beam search; returns (tokens int32[B, K, T-1], scores float32[B, K]).

    K = max(beam_size); see zoo.decoding.beam_search for the contract.
    """
    backbone = self.backbone
    beam_size = tf.cast(beam_size, tf.int32)
    max_output_length = tf.cast(max_output_length, tf.int32)
    length_penalty = tf.cast(length_penalty, tf.float32)
    checks = self.validate_settings(tf.shape(source_ids)[0], beam_size,
                                    max_output_length, length_penalty)
    with tf.control_dependencies(checks):  # nothing runs before the checks
      source_ids = tf.identity(source_ids)
      beam_size = tf.identity(beam_size)
      max_output_length = tf.identity(max_output_length)
      length_penalty = tf.identity(length_penalty)
    beams = tf.maximum(tf.reduce_max(beam_size), 1)  # K (1 for no rows)
    # The source is encoded, and its cross-attention keys and values
    # projected, once per sentence; the beams of a sentence share them.
    source, source_mask = backbone.encode(source_ids, training=False)
    memory = tf.nest.map_structure(  # [B*K, ...] each, beam-major
        lambda m: tf.repeat(m, beams, axis=0),
        backbone.cross_attention_memory(source))
    source_mask = tf.repeat(source_mask, beams, axis=0)  # [B*K, S]
    cache = backbone.empty_cache(tf.shape(source_mask)[0], source.dtype)

    def step(token_ids, position, cache):
      hidden, cache = backbone.step(token_ids[:, 0], position, cache, memory,
                                    source_mask)  # [N, D]
      logits = tf.cast(backbone.logits(hidden), tf.float32)  # [N, V]
      log_probs = tf.nn.log_softmax(logits, axis=-1)  # the model's own
      # PAD and BOS are never output; masked after the softmax, so scores
      # stay the model's log-probabilities (log_probability agrees).
      never = tf.one_hot([PAD_ID, BOS_ID], tf.shape(logits)[-1]) > 0
      return tf.where(tf.reduce_any(never, axis=0)[None], -1e9,
                      log_probs), cache

    return beam_search(step, cache, beam_size, max_output_length,
                       length_penalty, backbone.sequence_length, BOS_ID,
                       EOS_ID)


def build_translator(preset):
  return Translator(build_seq2seq_backbone(preset),
                    max_beam_size=preset.get("max_beam_size", 8),
                    name="translator")
