"""Decoding over fixed slots: the model side of iteration-level scheduling.

A serving engine (JetStream's prefill / insert / generate, Orca's
iteration-level batching) keeps S independent sequences, one a slot, each at
its own position, and advances all of them by one token a call. Here the
key/value cache of those slots lives in variables, one pair a block, each
float[T_max, S, H, Dh] (time-major, the layout of zoo.backbones.decoder):

  write_prompt  writes the keys and values of B prompts into B slots
                (a scatter into the variables, in place);
  step_logits   feeds every slot's current token at that slot's own position,
                writes its key and value in place (one row a slot), attends
                over the filled positions of the longest slot with the
                positions past each slot's own masked, and returns the
                next-token logits of every slot.

Reads are gathers of the filled rows (`sparse_read`), never a plain read of
the variable: once a variable has been scattered into, TensorFlow keeps it in
copy-on-read mode, and each ReadVariableOp would copy the whole cache
(measured: 20 of a 54 ms step at 32 slots of the small preset).

The arithmetic is the backbone's own (call_with_cache for prompts, the
einsums of CausalSelfAttention.call_step for a step), so a slot chooses the
tokens `generation.generate` chooses for the same prompt and settings.
"""

import math

import tensorflow as tf

NEG_INF = -1e9


def slot_cache_shape(backbone):
  """[T_max, None, H, Dh]: the shape of each slot cache variable."""
  heads = backbone.num_heads
  return [backbone.sequence_length, None, heads, backbone.hidden_dim // heads]


def write_prompt(cache_variables, cache, slots):
  """Writes prompt keys and values into their slots, in place.

  cache_variables: ((keys, values) tf.Variable float[T_max, S, H, Dh], ...);
  cache: ((keys, values) float[P, B, H, Dh], ...) from call_with_cache;
  slots int32[B]: the slot of each prompt. Positions >= P keep what they held
  (a step writes a position before any read of it).
  """
  length = tf.shape(cache[0][0])[0]  # P
  batch = tf.shape(slots)[0]  # B
  times = tf.repeat(tf.range(length), batch)  # [P * B]
  columns = tf.tile(slots, [length])  # [P * B]
  indices = tf.stack([times, columns], axis=1)  # [P * B, 2]
  ops = []
  for (key_var, value_var), (keys, values) in zip(cache_variables, cache):
    shape = tf.shape(keys)  # [P, B, H, Dh]
    rows = tf.concat([[length * batch], shape[2:]], axis=0)
    ops.append(key_var.scatter_nd_update(indices, tf.reshape(keys, rows)))
    ops.append(value_var.scatter_nd_update(indices, tf.reshape(values, rows)))
  return ops


def prompt_logits(backbone, ids, lengths):
  """ids int32[B, L] right-padded, lengths int32[B] >= 1 -> (float[B, V]
  logits of the token after each prompt, cache of max(lengths) positions)."""
  longest = tf.maximum(tf.reduce_max(lengths), 1)
  hidden, cache = backbone.call_with_cache(ids[:, :longest])  # [B, P, D]
  last = tf.gather(hidden, tf.maximum(lengths - 1, 0), batch_dims=1)  # [B, D]
  return backbone.logits(last[:, None])[:, 0], cache  # [B, V]


def _attend(attention, q, keys, values, positions):
  """q float[S, 1, H, Dh]; keys/values float[F, S, H, Dh]; positions int32[S]
  -> float[S, 1, D], slot s reading its positions 0..positions[s] only."""
  scores = tf.einsum("bshd,tbhd->bhst", q, keys) / math.sqrt(
      attention.head_dim)  # [S, H, 1, F]
  scores = tf.cast(scores, tf.float32)
  filled = tf.range(tf.shape(keys)[0])[None, :] <= positions[:, None]  # [S, F]
  scores = tf.where(filled[:, None, None, :], scores, NEG_INF)
  weights = tf.cast(tf.nn.softmax(scores, axis=-1), q.dtype)  # [S, H, 1, F]
  out = tf.einsum("bhst,tbhd->bshd", weights, values)  # [S, 1, H, Dh]
  out = tf.reshape(out, [tf.shape(q)[0], 1, attention.hidden_dim])
  return attention.output_dense(out)  # [S, 1, D]


def step_logits(backbone, cache_variables, tokens, positions, active):
  """One token for every slot: tokens, positions int32[S] -> float[S, V].

  Slot s feeds tokens[s] at positions[s], writing its key and value there;
  inactive slots compute too (a fixed batch) but write into their own column
  only and are ignored. Reads span positions 0..max over active slots.
  """
  context = backbone.sequence_length
  positions = tf.clip_by_value(positions, 0, context - 1)
  filled = tf.reduce_max(tf.where(active, positions, 0)) + 1  # F
  slots = tf.range(tf.shape(tokens)[0])
  indices = tf.stack([positions, slots], axis=1)  # [S, 2]
  position_table = backbone.position_embedding.position_embeddings  # [T, D]
  x = backbone.token_embedding(tokens[:, None])  # [S, 1, D]
  x = x + tf.gather(tf.convert_to_tensor(position_table), positions)[:, None]
  for block, (key_var, value_var) in zip(backbone.blocks, cache_variables):
    attention = block.attention
    q, k, v = attention._project(block.attention_norm(x))  # [S, 1, H, Dh]
    written = [key_var.scatter_nd_update(indices, k[:, 0]),
               value_var.scatter_nd_update(indices, v[:, 0])]
    with tf.control_dependencies(written):  # rows 0..F-1, after the writes
      keys = key_var.sparse_read(tf.range(filled))  # [F, S, H, Dh]
      values = value_var.sparse_read(tf.range(filled))
    h = _attend(attention, q, keys, values, positions)  # [S, 1, D]
    x = block._mlp(x + h, training=False)  # [S, 1, D]
  hidden = backbone.final_norm(x)  # [S, 1, D]
  return backbone.logits(hidden)[:, 0]  # [S, V]
