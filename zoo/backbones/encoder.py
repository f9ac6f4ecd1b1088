"""Bidirectional transformer encoder backbone (pre-LayerNorm GELU by default).

Token ids in, one hidden vector per position out; id 0 is padding and is masked
out of every attention. Built from keras_hub's TokenAndPositionEmbedding and
zoo's TransformerEncoderBlock (zoo.layers.transformer_encoder), every dropout
mask drawn by zoo.layers.hashed_dropout; each block's attention head size is
hidden_dim // num_heads. Our own models are pre-LayerNorm with a final norm;
normalize_first=False with embedding_norm=True is the post-LayerNorm layout
of BERT and DistilBERT (a norm over the summed embeddings, none at the end),
which zoo.pretrained fills with a keras-hub preset's weights. With conv_kernel_size > 0, a residual
convolution over the unpadded positions (zoo.layers.masked_conv) runs between
the embedding and the first block.
"""

import keras
import keras_hub
from keras import ops

from zoo.layers.activations import get_activation
from zoo.layers.hashed_dropout import HashedDropout
from zoo.layers.masked_conv import MaskedConvBlock
from zoo.layers.transformer_encoder import TransformerEncoderBlock
from zoo.tokenizers.wordpiece import PAD_ID


@keras.saving.register_keras_serializable(package="zoo")
class EncoderBackbone(keras.Model):
  """int[B, T] token ids -> float[B, T, D] sequence output."""

  def __init__(self, vocabulary_size, sequence_length, hidden_dim, num_layers,
               num_heads, intermediate_dim, dropout=0.1, token_dropout=0.0,
               conv_kernel_size=0, num_token_types=0, normalize_first=True,
               embedding_norm=False, layer_norm_epsilon=1e-5,
               activation="gelu", **kwargs):
    super().__init__(**kwargs)
    if hidden_dim % num_heads:
      raise ValueError(f"hidden_dim={hidden_dim} is not divisible by "
                       f"num_heads={num_heads}")
    self.vocabulary_size = vocabulary_size
    self.sequence_length = sequence_length
    self.hidden_dim = hidden_dim
    self.num_layers = num_layers
    self.num_heads = num_heads
    self.intermediate_dim = intermediate_dim
    self.dropout = dropout
    self.token_dropout = token_dropout
    self.conv_kernel_size = conv_kernel_size
    self.num_token_types = num_token_types
    self.normalize_first = bool(normalize_first)
    self.embedding_norm = bool(embedding_norm)
    self.layer_norm_epsilon = layer_norm_epsilon
    self.activation = activation
    self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=vocabulary_size, sequence_length=sequence_length,
        embedding_dim=hidden_dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
        name="embedding")
    # Word dropout: zeroes whole token vectors (a regulariser for small data).
    self.token_dropout_layer = HashedDropout(
        token_dropout, noise_shape=(None, None, 1), name="token_dropout")
    self.embedding_dropout = HashedDropout(dropout, name="embedding_dropout")
    # Sentence pairs: a learned vector per token type (0 = the first text and
    # [CLS], 1 = the second), added to the embedded tokens, as in BERT.
    # Attributes created only when used, so models without them are unchanged.
    if num_token_types:
      self.type_embedding = keras.layers.Embedding(
          num_token_types, hidden_dim,
          embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
          name="type_embedding")
    if embedding_norm:
      self.embedding_layer_norm = keras.layers.LayerNormalization(
          epsilon=layer_norm_epsilon, name="embedding_layer_norm")
    if conv_kernel_size:
      self.conv_block = MaskedConvBlock(conv_kernel_size, dropout=dropout,
                                        name="conv_block")
    # One attribute per block (not a list): TF checkpoints track attributes.
    for i in range(num_layers):
      setattr(self, f"block_{i}", TransformerEncoderBlock(
          intermediate_dim=intermediate_dim, num_heads=num_heads,
          dropout=dropout, activation=get_activation(activation),
          layer_norm_epsilon=layer_norm_epsilon,
          normalize_first=normalize_first, name=f"block_{i}"))
    if normalize_first:  # post-LayerNorm blocks end normalised already
      self.final_norm = keras.layers.LayerNormalization(
          epsilon=layer_norm_epsilon, name="final_norm")

  @property
  def blocks(self):
    return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

  def call(self, token_ids, segment_ids=None, positions=None,
           embedding_offsets=None, type_ids=None, training=None):
    """token_ids int[B, T] -> float[B, T, D]. For packed rows (several
    examples per row, trainers/example_packing.py) also segment_ids int[B, T]
    (1, 2, ... per example, 0 = padding) and positions int[B, T] (each
    token's position inside its example): attention and the convolution then
    stay inside each example, which gets the outputs it would get alone.
    embedding_offsets float[B, T, D], if given, is added to the embedded
    tokens (adversarial training perturbs the input there). type_ids
    int[B, T] (sentence pairs, num_token_types > 0): 0 for [CLS], the first
    text and its [SEP], 1 for the second text and its [SEP]."""
    if segment_ids is None:
      padding_mask = ops.not_equal(token_ids, PAD_ID)  # [B, T] bool
      segments = ops.cast(padding_mask, "int32")  # [B, T]: one segment a row
      attention_mask = None  # the padding mask is enough
      x = self.embedding(token_ids)  # [B, T, D]
    else:
      segments = ops.cast(segment_ids, "int32")  # [B, T]
      padding_mask = ops.greater(segments, 0)  # [B, T] bool
      attention_mask = ops.logical_and(
          ops.equal(segments[:, :, None], segments[:, None, :]),
          padding_mask[:, None, :])  # [B, T(query), T(key)] bool
      x = self.embedding(token_ids, positions=positions)  # [B, T, D]
    if self.num_token_types:
      if type_ids is None:
        type_ids = ops.zeros_like(token_ids)
      x = x + ops.cast(self.type_embedding(type_ids), x.dtype)  # [B, T, D]
    if embedding_offsets is not None:
      x = x + ops.cast(embedding_offsets, x.dtype)  # [B, T, D]
    if self.embedding_norm:
      x = self.embedding_layer_norm(x)  # [B, T, D]
    x = self.token_dropout_layer(x, training=training)
    x = self.embedding_dropout(x, training=training)
    if self.conv_kernel_size:
      x = self.conv_block(x, segment_ids=segments,
                          training=training)  # [B, T, D]
    for block in self.blocks:
      x = block(x, padding_mask=padding_mask, attention_mask=attention_mask,
                training=training)  # [B, T, D]
    return self.final_norm(x) if self.normalize_first else x  # [B, T, D]

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_size=self.vocabulary_size,
                  sequence_length=self.sequence_length,
                  hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                  num_heads=self.num_heads,
                  intermediate_dim=self.intermediate_dim, dropout=self.dropout,
                  token_dropout=self.token_dropout,
                  conv_kernel_size=self.conv_kernel_size,
                  num_token_types=self.num_token_types,
                  normalize_first=self.normalize_first,
                  embedding_norm=self.embedding_norm,
                  layer_norm_epsilon=self.layer_norm_epsilon,
                  activation=self.activation)
    return config


def build_encoder_backbone(preset):
  """An EncoderBackbone from a preset dict (see zoo.presets)."""
  return EncoderBackbone(
      vocabulary_size=preset["vocabulary_size"],
      sequence_length=preset["sequence_length"],
      hidden_dim=preset["hidden_dim"], num_layers=preset["num_layers"],
      num_heads=preset["num_heads"], intermediate_dim=preset["intermediate_dim"],
      dropout=preset["dropout"], token_dropout=preset.get("token_dropout", 0.0),
      conv_kernel_size=preset.get("conv_kernel_size", 0),
      num_token_types=preset.get("num_token_types", 0),
      normalize_first=preset.get("normalize_first", True),
      embedding_norm=preset.get("embedding_norm", False),
      layer_norm_epsilon=preset.get("layer_norm_epsilon", 1e-5),
      activation=preset.get("activation", "gelu"), name="backbone")
