"""Autoregressive generation inside the graph: one `tf.while_loop` over a cache.

`generate` takes right-padded prompts (each at least one token long) and
per-row settings, and returns the prompt plus the continuation in one buffer
of the model's full context. It follows keras_hub's scheme for prompts of
different lengths: the loop starts at the end of the shortest prompt, and rows
whose prompt is longer keep their own prompt token at each position until it
runs out; only then do they sample. A row stops after max_new_tokens tokens,
at `end_id` (when the vocabulary has one; it is kept), or at the end of the
context. Every step feeds one position through the model with the key/value
cache (`use_cache=True`) or, as a baseline for benchmarks and tests, the whole
buffer again (`use_cache=False`); the two choose the same tokens.

Invalid settings fail with InvalidArgumentError from graph asserts (a gRPC
INVALID_ARGUMENT when served), never with a crash.
"""

import tensorflow as tf

from zoo.decoding.sampling import choose_next, suppress

PAD_ID = 0


def validate_settings(batch_size, context, max_new_tokens, temperature, top_k,
                      top_p, seed):
  """Graph asserts for the per-row settings; returns the assert ops."""
  checks = []
  for name, value in (("max_new_tokens", max_new_tokens),
                      ("temperature", temperature), ("top_k", top_k),
                      ("top_p", top_p), ("seed", seed)):
    checks.append(tf.debugging.assert_equal(
        tf.shape(value)[0], batch_size,
        message=f"{name} must have one value per prompt (batch size)"))
  checks += [
      tf.debugging.assert_non_negative(
          max_new_tokens, message="max_new_tokens must be >= 0"),
      tf.debugging.assert_less_equal(
          max_new_tokens, tf.constant(context - 1, tf.int32),
          message=f"max_new_tokens must be <= {context - 1} (the context "
                  "minus the start token)"),
      tf.debugging.Assert(tf.reduce_all(temperature >= 0.0),
                          ["temperature must be >= 0 (0 = greedy)"]),
      tf.debugging.assert_non_negative(
          top_k, message="top_k must be >= 0 (0 = no limit)"),
      tf.debugging.Assert(tf.reduce_all((top_p > 0.0) & (top_p <= 1.0)),
                          ["top_p must be in (0, 1] (1 = no limit)"]),
  ]
  return checks


def fit_prompts(ids, lengths, max_new_tokens, context):
  """Keeps the last context - max_new_tokens tokens of each prompt.

  ids int32[B, L] right-padded, lengths int32[B] -> (int32[B, context]
  right-padded, int32[B] new lengths). Row b keeps its first token (the start
  token) only when it fits whole: long prompts lose their beginning.
  """
  keep = tf.minimum(lengths, context - max_new_tokens)  # [B]
  begin = lengths - keep  # [B]
  positions = tf.range(context)[None, :]  # [1, context]
  source = tf.minimum(begin[:, None] + positions,
                      tf.maximum(tf.shape(ids)[1] - 1, 0))  # [B, context]
  padded = tf.pad(ids, [[0, 0], [0, 1]])  # room for an empty prompt
  gathered = tf.gather(padded, source, batch_dims=1)  # [B, context]
  return tf.where(positions < keep[:, None], gathered, PAD_ID), keep


def continuation(tokens, prompt_lengths, num_generated):
  """The generated tokens of each row, left-aligned: int32[B, T], 0-padded."""
  context = tf.shape(tokens)[1]
  positions = tf.range(context)[None, :]  # [1, T]
  source = tf.minimum(prompt_lengths[:, None] + positions, context - 1)
  gathered = tf.gather(tokens, source, batch_dims=1)  # [B, T]
  return tf.where(positions < num_generated[:, None], gathered, PAD_ID)


def _pad_cache(cache, length):
  """Pads every (keys, values) [S, B, H, Dh] along S to `length`."""
  def pad(x):
    return tf.pad(x, [[0, length - tf.shape(x)[0]], [0, 0], [0, 0], [0, 0]])
  return tuple((pad(k), pad(v)) for k, v in cache)


def generate(model, prompt_ids, prompt_lengths, max_new_tokens, temperature,
             top_k, top_p, seed, end_id=None, suppressed_ids=(),
             use_cache=True, jit_compile=False):
  """Continues each prompt; returns (tokens int32[B, T], num_generated int32[B]).

  model: a CausalLanguageModel (its backbone has call_with_cache/step).
  prompt_ids int32[B, T] right-padded to the model's context T, prompt_lengths
  int32[B] >= 1 (use fit_prompts); settings are per row, see sampling.py.
  jit_compile=True runs the loop as one XLA-compiled function (the settings
  are still checked outside it, since XLA drops graph asserts), with the
  cache written by scatters, which XLA updates in place (InplaceUpdate has
  no XLA kernel). XLA may round differently, so sampled tokens can differ.
  """
  context = model.backbone.sequence_length
  batch_size = tf.shape(prompt_ids)[0]
  prompt_ids = tf.ensure_shape(tf.cast(prompt_ids, tf.int32), [None, context])
  prompt_lengths = tf.cast(prompt_lengths, tf.int32)
  settings = (tf.cast(max_new_tokens, tf.int32), tf.cast(temperature, tf.float32),
              tf.cast(top_k, tf.int32), tf.cast(top_p, tf.float32),
              tf.cast(seed, tf.int64))
  checks = validate_settings(batch_size, context, *settings)
  checks.append(tf.debugging.assert_positive(
      prompt_lengths, message="every prompt needs at least one token"))
  with tf.control_dependencies(checks):  # nothing runs before the checks
    inputs = [tf.identity(x) for x in (prompt_ids, prompt_lengths) + settings]

  def loop(*inputs):
    return decode_loop(model, *inputs, end_id=end_id,
                       suppressed_ids=suppressed_ids, use_cache=use_cache,
                       in_place=not jit_compile)
  if jit_compile:
    loop = tf.function(loop, jit_compile=True)
  return loop(*inputs)


def decode_loop(model, prompt_ids, prompt_lengths, max_new_tokens, temperature,
                top_k, top_p, seed, end_id=None, suppressed_ids=(),
                use_cache=True, in_place=True):
  """generate's loop on checked inputs: (tokens int32[B, T], int32[B])."""
  backbone = model.backbone
  context = backbone.sequence_length
  batch_size = tf.shape(prompt_ids)[0]
  first = tf.reduce_min(prompt_lengths) - 1  # last prompt position all share
  positions = tf.range(context)[None, :]  # [1, T]

  def next_logits(tokens, position, cache):
    if use_cache:
      hidden, cache = backbone.step(tokens[:, position], position, cache,
                                    in_place=in_place)  # [B, D]
      return backbone.logits(hidden), cache  # [B, V]
    hidden = backbone(tokens, training=False)  # [B, T, D]
    return tf.gather(backbone.logits(hidden), position, axis=1), cache

  if use_cache:
    _, cache = backbone.call_with_cache(prompt_ids[:, :first])  # prefill
    cache = _pad_cache(cache, context)
  else:
    cache = ()

  def body(position, tokens, cache, generated, done):
    logits, cache = next_logits(tokens, position, cache)  # [B, V]
    logits = suppress(tf.cast(logits, tf.float32), suppressed_ids)
    sampled = choose_next(logits, temperature, top_k, top_p, seed,
                          position + 1)  # [B]
    in_prompt = position + 1 < prompt_lengths  # [B]
    prompt_token = tf.gather(tokens, position + 1, axis=1)  # [B]
    new = tf.where(in_prompt, prompt_token, tf.where(done, PAD_ID, sampled))
    generating = ~in_prompt & ~done  # [B]
    generated += tf.cast(generating, tf.int32)
    finished = generated >= max_new_tokens
    if end_id is not None:
      finished |= tf.equal(new, end_id)
    done |= generating & finished
    tokens = tf.where(positions == position + 1, new[:, None], tokens)
    return position + 1, tokens, cache, generated, done

  def cond(position, unused_tokens, unused_cache, unused_generated, done):
    return (position < context - 1) & ~tf.reduce_all(done)

  generated = tf.zeros([batch_size], tf.int32)
  done = max_new_tokens <= 0
  _, tokens, _, generated, _ = tf.while_loop(
      cond, body, (first, prompt_ids, cache, generated, done),
      maximum_iterations=context)
  return tokens, generated
