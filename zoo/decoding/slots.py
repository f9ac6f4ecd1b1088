"""Decoding over fixed slots: the model side of iteration-level scheduling.

A serving engine (JetStream's prefill / insert / generate, Orca's
iteration-level batching) keeps S independent sequences, one a slot, each at
its own position, and advances all of them by one token a call. Here the
key/value cache of those slots lives in variables, one pair a block, each
float[S, H, T_max, Dh] (slot-major, then heads, then positions: the layout a
batched matmul reads with no transpose):

  write_prompt  writes the keys and values of B prompts into B slots;
  step_logits   feeds every slot's current token at that slot's own position,
                writes its key and value there (one row a slot and head),
                attends over all T_max positions with the positions past each
                slot's own masked, and returns the next-token logits of every
                slot.

Writes go into the variable's own buffer: a read of the variable aliases its
buffer, and InplaceUpdate writes into the buffer it is given (as
zoo.backbones.decoder.write_position does for `generate`'s cache), so a
token costs its rows, and the attention reads the cache where it lies. No
scatter or gather ever touches these variables: either one switches
TensorFlow's variable to copy-on-read (EnsureSparseVariableAccess), after
which every read would copy the whole cache (the layout before this one
gathered the filled rows instead, and copied them and their transposes at
every token: 62.8 ms for a 4-token step at 32 slots, against 40.0 ms now;
benchmarks/engine_cache_placement.py).

The arithmetic is the backbone's own (call_with_cache for prompts, the
projections and output layer of CausalSelfAttention, the blocks' MLPs), so a slot chooses the
tokens `generation.generate` chooses for the same prompt and settings.
"""

import math

import tensorflow as tf

NEG_INF = -1e9


def slot_cache_shape(backbone):
  """[None, H, T_max, Dh]: the shape of each slot cache variable."""
  heads = backbone.num_heads
  return [None, heads, backbone.sequence_length, backbone.hidden_dim // heads]


def _write_rows(variable, rows, new):
  """The cache variable float[S, H, T, Dh] with rows (flat indices into
  [S * H * T], int32[N]) set to new float[N, Dh], written in its own buffer;
  returns the written cache, float[S, H, T, Dh]."""
  cache = variable.value()  # aliases the variable's buffer
  shape = tf.shape(cache)
  flat = tf.reshape(cache, [-1, shape[3]])  # [S * H * T, Dh], same buffer
  written = tf.raw_ops.InplaceUpdate(x=flat, i=rows,
                                     v=tf.cast(new, cache.dtype))
  return tf.reshape(written, shape)


def _flat_rows(slots, heads, context, positions):
  """slots int32[B], positions int32[B, P] -> int32[B * H * P], the flat row
  of (slot, head, position) in [S * H * T], slot-major then head."""
  head_rows = slots[:, None] * heads + tf.range(heads)[None, :]  # [B, H]
  rows = head_rows[:, :, None] * context + positions[:, None, :]  # [B, H, P]
  return tf.reshape(rows, [-1])


def write_prompt(cache_variables, cache, slots):
  """Writes prompt keys and values into their slots, in place.

  cache_variables: ((keys, values) tf.Variable float[S, H, T_max, Dh], ...);
  cache: ((keys, values) float[P, B, H, Dh] time-major) from call_with_cache;
  slots int32[B]: the slot of each prompt. Positions >= P keep what they held
  (a step writes a position before any read of it). Returns the written
  caches (run them: control dependencies).
  """
  length = tf.shape(cache[0][0])[0]  # P
  heads, context = cache_variables[0][0].shape[1], cache_variables[0][0].shape[2]
  batch = tf.shape(slots)[0]
  positions = tf.tile(tf.range(length)[None, :], [batch, 1])  # [B, P]
  rows = _flat_rows(slots, heads, context, positions)  # [B * H * P]
  ops = []
  for (key_var, value_var), (keys, values) in zip(cache_variables, cache):
    for variable, new in ((key_var, keys), (value_var, values)):
      by_slot = tf.transpose(new, [1, 2, 0, 3])  # [B, H, P, Dh]
      ops.append(_write_rows(variable, rows,
                             tf.reshape(by_slot, [-1, tf.shape(new)[3]])))
  return ops


def prompt_logits(backbone, ids, lengths):
  """ids int32[B, L] right-padded, lengths int32[B] >= 1 -> (float[B, V]
  logits of the token after each prompt, cache of max(lengths) positions)."""
  longest = tf.maximum(tf.reduce_max(lengths), 1)
  hidden, cache = backbone.call_with_cache(ids[:, :longest])  # [B, P, D]
  last = tf.gather(hidden, tf.maximum(lengths - 1, 0), batch_dims=1)  # [B, D]
  return backbone.logits(last[:, None])[:, 0], cache  # [B, V]


def _attend(attention, q, keys, values, positions):
  """q float[S, H, Dh]; keys/values float[S, H, T, Dh]; positions int32[S]
  -> float[S, D], slot s reading its positions 0..positions[s] only."""
  q = q[:, :, None]  # [S, H, 1, Dh]
  scores = tf.matmul(q, keys, transpose_b=True) / math.sqrt(
      attention.head_dim)  # [S, H, 1, T]
  scores = tf.cast(scores, tf.float32)
  filled = tf.range(tf.shape(keys)[2])[None, :] <= positions[:, None]  # [S, T]
  scores = tf.where(filled[:, None, None, :], scores, NEG_INF)
  weights = tf.cast(tf.nn.softmax(scores, axis=-1), q.dtype)  # [S, H, 1, T]
  out = tf.matmul(weights, values)  # [S, H, 1, Dh]
  return attention.output_dense(
      tf.reshape(out, [-1, attention.hidden_dim]))  # [S, D]


def step_logits(backbone, cache_variables, tokens, positions):
  """One token for every slot: tokens, positions int32[S] -> float[S, V].

  Slot s feeds tokens[s] at positions[s], writing its key and value there;
  slots not advancing compute too (a fixed batch) but write only into their
  own rows at their own position, which a later step overwrites before
  reading, and their logits are ignored. Every tensor is [S, ...] (one
  position a slot), so each projection is one 2-D matmul.
  """
  context = backbone.sequence_length
  positions = tf.clip_by_value(positions, 0, context - 1)  # [S]
  slots = tf.range(tf.shape(tokens)[0])  # [S]
  rows = _flat_rows(slots, backbone.num_heads, context,
                    positions[:, None])  # [S * H]
  x = backbone.embed_step(tokens, positions)  # [S, D]
  for block, (key_var, value_var) in zip(backbone.blocks, cache_variables):
    attention = block.attention
    q, k, v = attention.project_step(block.attention_norm(x))  # [S, H, Dh]
    head_dim = attention.head_dim
    keys = _write_rows(key_var, rows, tf.reshape(k, [-1, head_dim]))
    values = _write_rows(value_var, rows, tf.reshape(v, [-1, head_dim]))
    h = _attend(attention, q, keys, values, positions)  # [S, D]
    x = block.mlp(x + h)  # [S, D]
  return backbone.logits(backbone.final_norm(x))  # [S, V]
