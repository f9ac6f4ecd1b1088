"""Causal transformer decoder backbone (GPT-style, pre-LayerNorm, GELU).

One model file to read top to bottom, nanoGPT style. Choices:
  - pre-LayerNorm blocks and a final LayerNorm: stable without warmup tricks
    at small sizes;
  - learned absolute position embeddings (keras_hub PositionEmbedding, which
    takes a start index, so one decoding step embeds position t alone);
  - token embedding tied to the output projection (keras_hub
    ReversibleEmbedding): fewer parameters, and better at this data size;
  - GPT-2's own layout, so a keras-hub GPT-2 preset converts into it
    (zoo.pretrained.gpt2) with activation="gelu_approximate";
  - our own attention with an explicit key/value cache rather than keras_hub's
    TransformerDecoder: its cache update uses `slice_update`, which the
    TensorFlow backend lowers to an XLA-only op that TF Serving cannot run.
    Here a step writes its key and value in place with `InplaceUpdate` (a
    core op) and attends over the filled positions only, so a step costs in
    proportion to the tokens so far, not to the context length.

Cache layout, per block: keys and values float[T_max, B, H, Dh], time-major,
so that one position is one contiguous row: InplaceUpdate writes a row
without copying the cache (when its buffer is not shared, as for a
while-loop variable), and the filled part [:t + 1] is a slice of the
leading dimension. The backbone's cache is a tuple of (keys, values) pairs,
one per block; every cache tensor has the batch on axis 1.
"""

import math

import keras
import keras_hub
import tensorflow as tf

from zoo.layers.activations import get_activation
from zoo.layers.hashed_dropout import HashedDropout


def empty_cache(batch_size, length, num_heads, head_dim, num_layers,
                dtype=tf.float32):
  """((keys, values) float[length, B, H, Dh] zeros, ...), one pair a layer.

  Each tensor is its own new buffer (the stateful `Empty` op, which graph
  optimisation never merges or folds, unlike tf.zeros), as write_position
  requires.
  """
  shape = tf.stack([length, batch_size, num_heads, head_dim])

  def zeros():
    return tf.raw_ops.Empty(shape=shape, dtype=dtype, init=True)
  return tuple((zeros(), zeros()) for _ in range(num_layers))


def time_major(x):
  """float[B, T, H, Dh] -> float[T, B, H, Dh] (the cache layout)."""
  return tf.transpose(x, [1, 0, 2, 3])


def write_position(cache, position, new, in_place=True):
  """cache float[T_max, B, H, Dh] with row `position` (scalar) set to new
  float[B, H, Dh], written into the cache's own buffer (InplaceUpdate
  aliases its input), so a step costs the row, not the cache.

  The old `cache` tensor must not be read again, and its buffer must be the
  cache's alone: every cache here comes from empty_cache, from a pad or a
  gather (new outputs), or from an earlier write_position.
  in_place=False writes with a scatter instead, for XLA (which has no
  InplaceUpdate kernel and updates a loop's scatter in place itself).
  """
  row = tf.cast(new, cache.dtype)[None]  # [1, B, H, Dh]
  if not in_place:
    return tf.tensor_scatter_nd_update(cache, tf.reshape(position, [1, 1]),
                                       row)
  return tf.raw_ops.InplaceUpdate(x=cache, i=tf.reshape(position, [1]), v=row)


@keras.saving.register_keras_serializable(package="zoo")
class CausalSelfAttention(keras.layers.Layer):
  """Multi-head self-attention where position t sees positions <= t only."""

  def __init__(self, hidden_dim, num_heads, dropout=0.0, **kwargs):
    super().__init__(**kwargs)
    if hidden_dim % num_heads:
      raise ValueError(f"hidden_dim={hidden_dim} is not divisible by "
                       f"num_heads={num_heads}")
    self.hidden_dim = hidden_dim
    self.num_heads = num_heads
    self.head_dim = hidden_dim // num_heads
    self.dropout = dropout
    init = keras.initializers.RandomNormal(stddev=0.02)
    self.qkv = keras.layers.Dense(3 * hidden_dim, kernel_initializer=init,
                                  dtype=self.dtype_policy, name="qkv")
    self.output_dense = keras.layers.Dense(hidden_dim, kernel_initializer=init,
                                           dtype=self.dtype_policy, name="output")
    self.attention_dropout = HashedDropout(dropout)

  def build(self, input_shape):
    self.qkv.build(input_shape)
    self.output_dense.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
    self.built = True

  def _project(self, x):
    """x float[B, S, D] -> q, k, v float[B, S, H, Dh]."""
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    qkv = tf.reshape(self.qkv(x),
                     [batch, length, 3, self.num_heads, self.head_dim])
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

  def _attend(self, q, k, v, mask, training):
    """q [B,S,H,Dh], k/v [B,T,H,Dh], mask bool[S,T] or [B,S,T] -> [B,S,D]."""
    scores = tf.einsum("bshd,bthd->bhst", q, k) / math.sqrt(self.head_dim)
    scores = tf.cast(scores, tf.float32)  # softmax in float32 under mixed precision
    mask = mask[None, None] if mask.shape.rank == 2 else mask[:, None]
    scores = tf.where(mask, scores, tf.constant(-1e9, tf.float32))  # [B,H,S,T]
    weights = tf.cast(tf.nn.softmax(scores, axis=-1), q.dtype)
    weights = self.attention_dropout(weights, training=training)
    out = tf.einsum("bhst,bthd->bshd", weights, v)  # [B, S, H, Dh]
    batch, length = tf.shape(q)[0], tf.shape(q)[1]
    return self.output_dense(tf.reshape(out, [batch, length, self.hidden_dim]))

  def call(self, x, training=None):
    """float[B, T, D] -> (float[B, T, D], keys, values [B, T, H, Dh])."""
    q, k, v = self._project(x)
    length = tf.shape(x)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    return self._attend(q, k, v, causal, training), k, v

  def call_step(self, x, position, keys, values):
    """step for x float[B, 1, D]: returns (float[B, 1, D], keys, values)."""
    h, keys, values = self.step(x[:, 0], position, keys, values)
    return h[:, None], keys, values

  def project_step(self, x):
    """x float[B, D] (one position a row) -> q, k, v float[B, H, Dh]."""
    qkv = tf.reshape(self.qkv(x), [-1, 3, self.num_heads, self.head_dim])
    return tf.unstack(qkv, axis=1)

  def step(self, x, position, keys, values, in_place=True):
    """One position for every row: x float[B, D] at `position` (scalar).

    keys/values float[T_max, B, H, Dh] hold positions < position; returns
    (float[B, D], keys, values) with this position written in. Only the
    filled positions 0..position are read, where they lie: the products are
    elementwise over the time-major rows and summed, so no transpose copies
    the cache, and every projection is a plain 2-D matmul (few ops a step).
    """
    q, k, v = self.project_step(x)  # [B, H, Dh] each
    keys = write_position(keys, position, k, in_place)
    values = write_position(values, position, v, in_place)
    filled = position + 1
    scores = tf.reduce_sum(keys[:filled] * q[None], axis=-1) / math.sqrt(
        self.head_dim)  # [filled, B, H]
    scores = tf.cast(scores, tf.float32)
    scores = tf.exp(scores - tf.reduce_max(scores, axis=0, keepdims=True))
    weights = tf.cast(scores / tf.reduce_sum(scores, axis=0, keepdims=True),
                      q.dtype)  # [filled, B, H], softmax over positions
    out = tf.reduce_sum(weights[..., None] * values[:filled],
                        axis=0)  # [B, H, Dh]
    return self.output_dense(tf.reshape(out, [-1, self.hidden_dim])), keys, values

  def get_config(self):
    config = super().get_config()
    config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                  dropout=self.dropout)
    return config


@keras.saving.register_keras_serializable(package="zoo")
class DecoderBlock(keras.layers.Layer):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, hidden_dim, num_heads, intermediate_dim, dropout=0.0,
               activation="gelu", **kwargs):
    super().__init__(**kwargs)
    self.hidden_dim = hidden_dim
    self.num_heads = num_heads
    self.intermediate_dim = intermediate_dim
    self.dropout = dropout
    self.activation = activation
    init = keras.initializers.RandomNormal(stddev=0.02)
    policy = self.dtype_policy
    self.attention_norm = keras.layers.LayerNormalization(
        epsilon=1e-5, dtype=policy, name="attention_norm")
    self.attention = CausalSelfAttention(hidden_dim, num_heads, dropout,
                                         dtype=policy, name="attention")
    self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy,
                                                    name="mlp_norm")
    self.mlp_in = keras.layers.Dense(intermediate_dim,
                                     activation=get_activation(activation),
                                     kernel_initializer=init, dtype=policy,
                                     name="mlp_in")
    self.mlp_out = keras.layers.Dense(hidden_dim, kernel_initializer=init,
                                      dtype=policy, name="mlp_out")
    self.residual_dropout = HashedDropout(dropout)

  def build(self, input_shape):
    self.attention_norm.build(input_shape)
    self.attention.build(input_shape)
    self.mlp_norm.build(input_shape)
    self.mlp_in.build(input_shape)
    self.mlp_out.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
    self.built = True

  def mlp(self, x, training=False):
    """x + mlp(norm(x)), x float[..., D]."""
    h = self.mlp_out(self.mlp_in(self.mlp_norm(x)))
    return x + self.residual_dropout(h, training=training)

  def call(self, x, training=None):
    """float[B, T, D] -> (float[B, T, D], keys, values [B, T, H, Dh])."""
    h, k, v = self.attention(self.attention_norm(x), training=training)
    x = x + self.residual_dropout(h, training=training)
    return self.mlp(x, training), k, v

  def step(self, x, position, keys, values, in_place=True):
    """One position: x float[B, D] -> (float[B, D], keys, values)."""
    h, keys, values = self.attention.step(self.attention_norm(x), position,
                                          keys, values, in_place)
    return self.mlp(x + h), keys, values

  def get_config(self):
    config = super().get_config()
    config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                  intermediate_dim=self.intermediate_dim, dropout=self.dropout,
                  activation=self.activation)
    return config


@keras.saving.register_keras_serializable(package="zoo")
class DecoderBackbone(keras.Model):
  """int[B, T] token ids -> float[B, T, D]; position t depends on ids[:, :t+1]."""

  def __init__(self, vocabulary_size, sequence_length, hidden_dim, num_layers,
               num_heads, intermediate_dim, dropout=0.0, activation="gelu",
               **kwargs):
    super().__init__(**kwargs)
    self.activation = activation
    self.vocabulary_size = vocabulary_size
    self.sequence_length = sequence_length
    self.hidden_dim = hidden_dim
    self.num_layers = num_layers
    self.num_heads = num_heads
    self.intermediate_dim = intermediate_dim
    self.dropout = dropout
    init = keras.initializers.RandomNormal(stddev=0.02)
    self.token_embedding = keras_hub.layers.ReversibleEmbedding(
        vocabulary_size, hidden_dim, tie_weights=True,
        embeddings_initializer=init, name="token_embedding")
    self.position_embedding = keras_hub.layers.PositionEmbedding(
        sequence_length, initializer=init, name="position_embedding")
    self.embedding_dropout = HashedDropout(dropout)
    # One attribute per block (not a list): TF checkpoints track attributes.
    for i in range(num_layers):
      setattr(self, f"block_{i}", DecoderBlock(
          hidden_dim, num_heads, intermediate_dim, dropout,
          activation=activation, name=f"block_{i}"))
    self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                      name="final_norm")

  @property
  def blocks(self):
    return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

  def _embed(self, token_ids, start_index=0):
    x = self.token_embedding(token_ids)  # [B, S, D]
    return x + self.position_embedding(x, start_index=start_index)

  def embed_step(self, token_ids, positions):
    """ids int[B] at positions (a scalar, or int[B]: one a row) -> float[B,
    D]: the embedding of one position a row. It reads the position table
    outside the layer's call, so it casts it to the compute dtype itself."""
    table = tf.convert_to_tensor(self.position_embedding.position_embeddings)
    x = self.token_embedding(token_ids)  # [B, D]
    return x + tf.cast(tf.gather(table, positions), x.dtype)  # [D] or [B, D]

  def call(self, token_ids, training=None):
    return self.call_with_cache(token_ids, training=training)[0]

  def call_with_cache(self, token_ids, training=None):
    """ids int[B, T] -> (float[B, T, D], cache of T positions: (keys,
    values) float[T, B, H, Dh] a block)."""
    x = self.embedding_dropout(self._embed(token_ids), training=training)
    cache = []
    for block in self.blocks:
      x, k, v = block(x, training=training)
      cache.append((time_major(k), time_major(v)))
    return self.final_norm(x), tuple(cache)

  def call_step(self, token_ids, position, cache):
    """ids int[B, 1] at scalar `position` -> (float[B, 1, D], updated cache).

    `cache` holds every block's (keys, values) float[T_max, B, H, Dh] for
    positions < position; positions >= position are ignored.
    """
    hidden, cache = self.step(token_ids[:, 0], position, cache)
    return hidden[:, None], cache

  def step(self, token_ids, position, cache, in_place=True):
    """call_step on 2-D tensors: ids int[B] -> (float[B, D], updated cache).

    What the generation loop runs a token: every tensor is [B, ...], so
    each layer is one op (no reshapes around 3-D matmuls). in_place: see
    write_position.
    """
    x = self.embed_step(token_ids, position)  # [B, D]
    new_cache = []
    for block, (keys, values) in zip(self.blocks, cache):
      x, keys, values = block.step(x, position, keys, values, in_place)
      new_cache.append((keys, values))
    return self.final_norm(x), tuple(new_cache)

  def empty_cache(self, batch_size, dtype=tf.float32):
    """Zeros for every block: ((keys, values) float[T_max, B, H, Dh], ...)."""
    return empty_cache(batch_size, self.sequence_length, self.num_heads,
                       self.hidden_dim // self.num_heads, self.num_layers,
                       dtype)

  def logits(self, hidden):
    """float[B, T, D] -> float[B, T, V] through the tied embedding."""
    return self.token_embedding(hidden, reverse=True)

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_size=self.vocabulary_size,
                  sequence_length=self.sequence_length,
                  hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                  num_heads=self.num_heads,
                  intermediate_dim=self.intermediate_dim, dropout=self.dropout,
                  activation=self.activation)
    return config


def build_decoder_backbone(preset):
  """A DecoderBackbone from a preset dict (see zoo.presets)."""
  return DecoderBackbone(
      vocabulary_size=preset["vocabulary_size"],
      sequence_length=preset["sequence_length"],
      hidden_dim=preset["hidden_dim"], num_layers=preset["num_layers"],
      num_heads=preset["num_heads"], intermediate_dim=preset["intermediate_dim"],
      dropout=preset["dropout"], activation=preset.get("activation", "gelu"),
      name="backbone")
