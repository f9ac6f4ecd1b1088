"""Encoder-decoder transformer backbone for translation (pre-LayerNorm).

  encoder  source ids int[B, S] -> float[B, S, D]; id 0 is padding and is
           masked out of every attention (zoo.layers.transformer_encoder).
  decoder  target ids int[B, T] + encoder output -> float[B, T, D]; causal
           self-attention (zoo.backbones.decoder.CausalSelfAttention, with its
           key/value cache for decoding) and cross-attention to the source
           (zoo.layers.attention). Decoding projects the source's
           cross-attention keys and values once per search
           (cross_attention_memory) and every step reads them.
One embedding matrix serves the source, the target and the output projection
(three-way tying over a joint vocabulary: zoo.tokenizers.sentencepiece).
Inputs are scaled by sqrt(D) and summed with sinusoidal positions, which need
no parameters and are defined at every position. Every dropout mask comes from
zoo.layers.hashed_dropout (cheap under XLA on CPU).
"""

import math

import keras
import keras_hub
import tensorflow as tf

from zoo.backbones.decoder import CausalSelfAttention, empty_cache
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.hashed_dropout import HashedDropout
from zoo.layers.transformer_encoder import TransformerEncoderBlock

PAD_ID = 0


@keras.saving.register_keras_serializable(package="zoo")
class CrossAttentionDecoderBlock(keras.layers.Layer):
  """x + self_attn(norm(x)); x + cross_attn(norm(x), source); x + mlp(norm(x))."""

  def __init__(self, hidden_dim, num_heads, intermediate_dim, dropout=0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.hidden_dim = hidden_dim
    self.num_heads = num_heads
    self.intermediate_dim = intermediate_dim
    self.dropout = dropout
    policy = self.dtype_policy
    self.self_attention_norm = keras.layers.LayerNormalization(
        epsilon=1e-5, dtype=policy, name="self_attention_norm")
    self.self_attention = CausalSelfAttention(hidden_dim, num_heads, dropout,
                                              dtype=policy, name="self_attention")
    self.cross_attention_norm = keras.layers.LayerNormalization(
        epsilon=1e-5, dtype=policy, name="cross_attention_norm")
    self.cross_attention = MultiHeadAttention(
        num_heads, hidden_dim // num_heads, dropout=dropout, dtype=policy,
        name="cross_attention")
    self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy,
                                                    name="mlp_norm")
    self.mlp_in = keras.layers.Dense(intermediate_dim, activation="relu",
                                     dtype=policy, name="mlp_in")
    self.mlp_out = keras.layers.Dense(hidden_dim, dtype=policy, name="mlp_out")
    self.residual_dropout = HashedDropout(dropout)

  def build(self, input_shape):
    self.self_attention_norm.build(input_shape)
    self.self_attention.build(input_shape)
    self.cross_attention_norm.build(input_shape)
    self.cross_attention.build(input_shape, input_shape)
    self.mlp_norm.build(input_shape)
    self.mlp_in.build(input_shape)
    self.mlp_out.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
    self.built = True

  def _cross_and_mlp(self, x, memory, source_mask, training):
    """x float[B, T, D], memory: the cross-attention (keys, values)
    float[B, S, H, Dh] of the source, source_mask bool[B, S]."""
    attention_mask = source_mask[:, None, :]  # [B, 1, S], broadcast over T
    h = self.cross_attention.attend_memory(
        self.cross_attention_norm(x), *memory, attention_mask=attention_mask,
        training=training)
    return self.mlp(x + self.residual_dropout(h, training=training), training)

  def mlp(self, x, training=False):
    """x + mlp(norm(x)), x float[..., D]."""
    h = self.mlp_out(self.mlp_in(self.mlp_norm(x)))
    return x + self.residual_dropout(h, training=training)

  def call(self, x, source, source_mask, training=None):
    """-> (float[B, T, D], keys, values [B, T, H, Dh])."""
    h, k, v = self.self_attention(self.self_attention_norm(x),
                                  training=training)
    x = x + self.residual_dropout(h, training=training)
    memory = self.cross_attention.project_memory(source)
    return self._cross_and_mlp(x, memory, source_mask, training), k, v

  def step(self, x, position, keys, values, memory, source_mask):
    """One position: x float[B, D] -> (float[B, D], keys, values); memory
    is this block's cross_attention_memory, source_mask bool[B, S]."""
    h, keys, values = self.self_attention.step(
        self.self_attention_norm(x), position, keys, values)
    x = x + h
    x = x + self.cross_attention.attend_memory_step(
        self.cross_attention_norm(x), *memory, source_mask)
    return self.mlp(x), keys, values

  def cross_attention_memory(self, source):
    """source float[B, S, D] -> its (keys float[B, H, Dh, S], values
    float[B, H, S, Dh]), as `step` reads them."""
    return self.cross_attention.step_memory(source)

  def get_config(self):
    config = super().get_config()
    config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                  intermediate_dim=self.intermediate_dim, dropout=self.dropout)
    return config


@keras.saving.register_keras_serializable(package="zoo")
class Seq2SeqBackbone(keras.Model):
  """Source ids and target-input ids -> float[B, T, D] decoder states."""

  def __init__(self, vocabulary_size, sequence_length, hidden_dim,
               num_encoder_layers, num_decoder_layers, num_heads,
               intermediate_dim, dropout=0.1, **kwargs):
    super().__init__(**kwargs)
    self.vocabulary_size = vocabulary_size
    self.sequence_length = sequence_length  # max source and target length
    self.hidden_dim = hidden_dim
    self.num_encoder_layers = num_encoder_layers
    self.num_decoder_layers = num_decoder_layers
    self.num_heads = num_heads
    self.intermediate_dim = intermediate_dim
    self.dropout = dropout
    self.token_embedding = keras_hub.layers.ReversibleEmbedding(
        vocabulary_size, hidden_dim, tie_weights=True,
        embeddings_initializer=keras.initializers.RandomNormal(
            stddev=hidden_dim ** -0.5), name="token_embedding")
    self.position_encoding = keras_hub.layers.SinePositionEncoding(
        name="position_encoding")
    self.embedding_dropout = HashedDropout(dropout)
    # One attribute per block (not a list): TF checkpoints track attributes.
    for i in range(num_encoder_layers):
      setattr(self, f"encoder_block_{i}", TransformerEncoderBlock(
          intermediate_dim=intermediate_dim, num_heads=num_heads,
          dropout=dropout, activation="relu", name=f"encoder_block_{i}"))
    for i in range(num_decoder_layers):
      setattr(self, f"decoder_block_{i}", CrossAttentionDecoderBlock(
          hidden_dim, num_heads, intermediate_dim, dropout,
          name=f"decoder_block_{i}"))
    self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                        name="encoder_norm")
    self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                        name="decoder_norm")

  @property
  def encoder_blocks(self):
    return [getattr(self, f"encoder_block_{i}")
            for i in range(self.num_encoder_layers)]

  @property
  def decoder_blocks(self):
    return [getattr(self, f"decoder_block_{i}")
            for i in range(self.num_decoder_layers)]

  def _embed(self, ids, start_index=0):
    x = self.token_embedding(ids) * math.sqrt(self.hidden_dim)  # [B, L, D]
    return x + tf.cast(self.position_encoding(x, start_index=start_index),
                       x.dtype)

  def encode(self, source_ids, training=None):
    """source int[B, S] -> (float[B, S, D], bool[B, S] non-padding mask)."""
    mask = tf.not_equal(source_ids, PAD_ID)  # [B, S]
    x = self.embedding_dropout(self._embed(source_ids), training=training)
    for block in self.encoder_blocks:
      x = block(x, padding_mask=mask, training=training)
    return self.encoder_norm(x), mask

  def decode(self, target_ids, source, source_mask, training=None):
    """target int[B, T] -> float[B, T, D] (causal; padding at the end only)."""
    x = self.embedding_dropout(self._embed(target_ids), training=training)
    for block in self.decoder_blocks:
      x, _, _ = block(x, source, source_mask, training=training)
    return self.decoder_norm(x)

  def call(self, inputs, training=None):
    source, source_mask = self.encode(inputs["source_ids"], training=training)
    return self.decode(inputs["target_ids"], source, source_mask,
                       training=training)

  def cross_attention_memory(self, source):
    """Encoder output float[B, S, D] -> every decoder block's cross-attention
    (keys [B, H, Dh, S], values [B, H, S, Dh]): computed once per search."""
    return tuple(block.cross_attention_memory(source)
                 for block in self.decoder_blocks)

  def decode_step(self, token_ids, position, cache, memory, source_mask):
    """ids int[B, 1] at scalar `position` -> (float[B, 1, D], new cache).

    memory: cross_attention_memory of the encoded source (rows as ids).
    """
    hidden, cache = self.step(token_ids[:, 0], position, cache, memory,
                              source_mask)
    return hidden[:, None], cache

  def step(self, token_ids, position, cache, memory, source_mask):
    """decode_step on 2-D tensors: ids int[B] -> (float[B, D], new cache),
    what the search runs a token (few ops: no reshapes around 3-D matmuls)."""
    x = self._embed(token_ids[:, None], start_index=position)[:, 0]  # [B, D]
    new_cache = []
    for block, (keys, values), block_memory in zip(self.decoder_blocks, cache,
                                                   memory):
      x, keys, values = block.step(x, position, keys, values, block_memory,
                                   source_mask)
      new_cache.append((keys, values))
    return self.decoder_norm(x), tuple(new_cache)

  def empty_cache(self, batch_size, dtype=tf.float32):
    """Zeros for every decoder block: ((keys, values) float[T, B, H, Dh], ...)."""
    return empty_cache(batch_size, self.sequence_length, self.num_heads,
                       self.hidden_dim // self.num_heads,
                       self.num_decoder_layers, dtype)

  def logits(self, hidden):
    """float[B, T, D] -> float[B, T, V] through the tied embedding."""
    return self.token_embedding(hidden, reverse=True)

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_size=self.vocabulary_size,
                  sequence_length=self.sequence_length,
                  hidden_dim=self.hidden_dim,
                  num_encoder_layers=self.num_encoder_layers,
                  num_decoder_layers=self.num_decoder_layers,
                  num_heads=self.num_heads,
                  intermediate_dim=self.intermediate_dim, dropout=self.dropout)
    return config


def build_seq2seq_backbone(preset):
  """A Seq2SeqBackbone from a preset dict (see zoo.presets)."""
  return Seq2SeqBackbone(
      vocabulary_size=preset["vocabulary_size"],
      sequence_length=preset["sequence_length"],
      hidden_dim=preset["hidden_dim"],
      num_encoder_layers=preset["num_encoder_layers"],
      num_decoder_layers=preset["num_decoder_layers"],
      num_heads=preset["num_heads"], intermediate_dim=preset["intermediate_dim"],
      dropout=preset["dropout"], name="backbone")
