"""A transformer encoder block with every dropout drawn by HashedDropout.
Pre-LayerNorm (normalize_first=True, our models):

    x = x + dropout(attention(norm(x)))
    x = x + dropout(mlp_out(activation(mlp_in(norm(x)))))

or post-LayerNorm (normalize_first=False, BERT and DistilBERT):

    x = norm(x + dropout(attention(x)))
    x = norm(x + dropout(mlp_out(activation(mlp_in(x)))))

It computes exactly what keras_hub's TransformerEncoder with the same
normalize_first computes (same sublayers, shapes, initializer clones,
epsilon and op order), so a model built with it after
`keras.utils.set_random_seed` starts from the same weights and gives the
same outputs, bit for bit. As there, the sublayers are created in build(),
in the order that fixes both the initializers' seeds and the order of the
weights (attention first, then the norms and the feed-forward network).
"""

import keras
from keras import ops

from zoo.layers.attention import MultiHeadAttention, clone_initializer
from zoo.layers.hashed_dropout import HashedDropout


@keras.saving.register_keras_serializable(package="zoo")
class TransformerEncoderBlock(keras.layers.Layer):
  """float[B, T, D] -> float[B, T, D]. padding_mask bool[B, T] (True = a
  real token) hides padded keys; attention_mask bool[B, T, T] (True = may
  attend) restricts attention further; each head has D // num_heads
  channels."""

  def __init__(self, intermediate_dim, num_heads, dropout=0.0,
               activation="relu", layer_norm_epsilon=1e-5,
               kernel_initializer="glorot_uniform", bias_initializer="zeros",
               normalize_first=True, **kwargs):
    super().__init__(**kwargs)
    self.normalize_first = bool(normalize_first)
    self.intermediate_dim = intermediate_dim
    self.num_heads = num_heads
    self.dropout = dropout
    self.activation = keras.activations.get(activation)
    self.layer_norm_epsilon = layer_norm_epsilon
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)

  def build(self, input_shape):
    hidden_dim = input_shape[-1]
    key_dim = hidden_dim // self.num_heads
    if key_dim == 0:
      raise ValueError(f"hidden_dim={hidden_dim} is smaller than "
                       f"num_heads={self.num_heads}")
    policy = self.dtype_policy
    self.attention = MultiHeadAttention(
        self.num_heads, key_dim, dropout=self.dropout,
        kernel_initializer=clone_initializer(self.kernel_initializer),
        bias_initializer=clone_initializer(self.bias_initializer),
        dtype=policy, name="attention")
    self.attention.build(input_shape, input_shape)
    self.attention_norm = keras.layers.LayerNormalization(
        epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm")
    self.attention_norm.build(input_shape)
    self.attention_dropout = HashedDropout(self.dropout, dtype=policy,
                                           name="attention_dropout")
    self.mlp_norm = keras.layers.LayerNormalization(
        epsilon=self.layer_norm_epsilon, dtype=policy, name="mlp_norm")
    self.mlp_norm.build(input_shape)
    self.mlp_in = keras.layers.Dense(
        self.intermediate_dim, activation=self.activation,
        kernel_initializer=clone_initializer(self.kernel_initializer),
        bias_initializer=clone_initializer(self.bias_initializer),
        dtype=policy, name="mlp_in")
    self.mlp_in.build(input_shape)
    self.mlp_out = keras.layers.Dense(
        hidden_dim,
        kernel_initializer=clone_initializer(self.kernel_initializer),
        bias_initializer=clone_initializer(self.bias_initializer),
        dtype=policy, name="mlp_out")
    self.mlp_out.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
    self.mlp_dropout = HashedDropout(self.dropout, dtype=policy,
                                     name="mlp_dropout")
    self.built = True

  def call(self, x, padding_mask=None, attention_mask=None, training=None):
    mask = None  # bool[B, 1 or T, T]: may query t attend to key s
    if padding_mask is not None:
      mask = ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)  # [B, 1, T]
    if attention_mask is not None:
      attention_mask = ops.cast(attention_mask, "bool")  # [B, T, T]
      mask = (attention_mask if mask is None
              else ops.logical_and(mask, attention_mask))
    if not self.normalize_first:  # post-LayerNorm
      h = self.attention(x, x, attention_mask=mask, training=training)
      x = self.attention_norm(
          self.attention_dropout(h, training=training) + x)  # [B, T, D]
      h = self.mlp_out(self.mlp_in(x))  # [B, T, F] -> [B, T, D]
      return self.mlp_norm(self.mlp_dropout(h, training=training) + x)
    h = self.attention_norm(x)  # [B, T, D]
    h = self.attention(h, h, attention_mask=mask, training=training)
    x = self.attention_dropout(h, training=training) + x  # [B, T, D]
    h = self.mlp_out(self.mlp_in(self.mlp_norm(x)))  # [B, T, F] -> [B, T, D]
    return self.mlp_dropout(h, training=training) + x  # [B, T, D]

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(
        intermediate_dim=self.intermediate_dim, num_heads=self.num_heads,
        dropout=self.dropout,
        activation=keras.activations.serialize(self.activation),
        layer_norm_epsilon=self.layer_norm_epsilon,
        kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        bias_initializer=keras.initializers.serialize(self.bias_initializer),
        normalize_first=self.normalize_first)
    return config
