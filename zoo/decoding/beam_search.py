"""Beam search inside the graph: one `tf.while_loop` over a key/value cache.

Each row of a batch has its own beam size (1..K, K the largest in the batch),
maximum output length and length penalty, and gets exactly the hypotheses a
search with its own beam size would find alone: at each step a row with beam
b ranks its candidates, keeps the best b that do not end alive (looking as
far as rank 2b), and collects those ending in EOS that rank among its top b
(the Hugging Face rule, so that beam size 1 is exactly greedy decoding). Scores are log-probabilities divided by
GNMT's length penalty ((5 + n) / 6) ** alpha, n the output length counting
EOS; alpha = 0 leaves the plain log-probability, larger alpha favours longer
outputs. A row stops when its output reaches max_output_length tokens (the
next token is forced to be EOS), or when no alive hypothesis can beat its b-th
finished one any more.

The model enters through `step_fn(token_ids int32[N, 1], position, cache) ->
(log_probs float32[N, V], cache)` with N = batch * K, rows beam-major
(row r's beams are r*K .. r*K + K-1); every cache tensor is time-major,
[T, N, ...] (zoo.backbones.decoder), holds the positions decoded so far
first, and is reordered as beams are chosen (only those positions move).
What is the same for every beam of a sentence (the source's cross-attention
keys and values) stays out of the cache and is never reordered.
"""

import tensorflow as tf

NEG = -1e9  # the score of an impossible hypothesis (finite: JSON-safe)


def gnmt_length_penalty(length, alpha):
  """((5 + length) / 6) ** alpha, float32; length and alpha broadcast."""
  return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def _gather_beams(x, indices):
  """x [B, M, ...], indices int32[B, K] -> [B, K, ...]."""
  return tf.gather(x, indices, batch_dims=1)


def reorder_filled(cache, rows, filled):
  """cache [T, N, ...] with its first `filled` positions taken from `rows`
  (int32[N]) and written back in place (InplaceUpdate, into the cache's own
  buffer: the step's output): the reordering moves the positions decoded so
  far, not the whole context. Later positions are stale, and the next steps
  write them before any step reads them."""
  moved = tf.gather(cache[:filled], rows, axis=1)  # [filled, N, ...]
  return tf.raw_ops.InplaceUpdate(x=cache, i=tf.range(filled), v=moved)


def beam_search(step_fn, cache, beam_size, max_output_length, alpha, context,
                bos_id, eos_id):
  """Returns (tokens int32[B, K, context - 1], scores float32[B, K]).

  Beams are sorted by score; beam j of row r is real when j < beam_size[r]
  (the others have score NEG and no tokens). Tokens exclude BOS and end with
  EOS when there is room, then padding (0).
  beam_size, max_output_length int32[B]; alpha float32[B];
  max_output_length <= context - 2 so that EOS always fits.
  """
  batch_size = tf.shape(beam_size)[0]
  beams = tf.maximum(tf.reduce_max(beam_size), 1)  # K (1 for an empty batch)
  alpha = alpha[:, None]  # [B, 1]
  ranks = tf.range(2 * beams)[None, :]  # [1, 2K]
  beam_index = tf.range(beams)[None, :]  # [1, K]
  positions = tf.range(context)[None, None, :]  # [1, 1, T]
  max_penalty = gnmt_length_penalty(max_output_length[:, None] + 1, alpha)

  sequences = tf.tile(tf.one_hot(tf.zeros([1, 1], tf.int32), context,
                                 on_value=bos_id, off_value=0, dtype=tf.int32),
                      [batch_size, beams, 1])  # [B, K, T]: BOS then padding
  alive_logp = tf.where(beam_index == 0, 0.0, NEG) * tf.ones(
      [batch_size, 1])  # [B, K]: only beam 0 starts alive
  finished = tf.zeros_like(sequences)  # [B, K, T]
  finished_scores = tf.fill([batch_size, beams], NEG)  # [B, K]

  def body(t, sequences, alive_logp, finished, finished_scores, cache, done):
    tokens = tf.reshape(sequences[:, :, t], [-1, 1])  # [B*K, 1]
    log_probs, cache = step_fn(tokens, t, cache)  # [B*K, V]
    vocabulary_size = tf.shape(log_probs)[-1]
    log_probs = tf.reshape(log_probs, [batch_size, beams, vocabulary_size])
    length = t + 1  # output tokens after this step, EOS included
    is_eos_token = tf.equal(tf.range(vocabulary_size), eos_id)[None, None, :]
    force_eos = (length > max_output_length)[:, None, None]  # [B, 1, 1]
    log_probs = tf.where(force_eos & ~is_eos_token, NEG, log_probs)

    candidates = alive_logp[:, :, None] + log_probs  # [B, K, V]
    flat = tf.reshape(candidates, [batch_size, -1])  # [B, K*V]
    candidate_logp, index = tf.math.top_k(flat, k=2 * beams)  # [B, 2K]
    valid = (ranks < 2 * beam_size[:, None]) & (candidate_logp > NEG / 2)
    candidate_logp = tf.where(valid, candidate_logp, NEG)
    source_beam = index // vocabulary_size  # [B, 2K]
    token = index % vocabulary_size  # [B, 2K]
    candidate_sequences = tf.where(
        positions == length, token[:, :, None],
        _gather_beams(sequences, source_beam))  # [B, 2K, T]
    is_eos = tf.equal(token, eos_id)

    # Alive: the best K candidates that did not end; beams >= b stay empty.
    alive_logp, chosen = tf.math.top_k(
        tf.where(is_eos, NEG, candidate_logp), k=beams)  # [B, K]
    alive_logp = tf.where(beam_index < beam_size[:, None], alive_logp, NEG)
    sequences = _gather_beams(candidate_sequences, chosen)
    parent = _gather_beams(source_beam, chosen)  # [B, K]
    rows = (tf.range(batch_size)[:, None] * beams + parent)  # [B, K]
    cache = tf.nest.map_structure(
        lambda c: reorder_filled(c, tf.reshape(rows, [-1]), t + 1), cache)

    # Finished: merge candidates that ended with the best so far.
    top_b = ranks < beam_size[:, None]  # [1|B, 2K]
    new_scores = tf.where(is_eos & valid & top_b,
                          candidate_logp / gnmt_length_penalty(length, alpha),
                          NEG)  # [B, 2K]
    finished_scores, best = tf.math.top_k(
        tf.concat([finished_scores, new_scores], axis=1), k=beams)
    finished = _gather_beams(tf.concat([finished, candidate_sequences], 1), best)

    # Done: forced to end, or no alive hypothesis can beat the b-th finished.
    worst_kept = tf.gather(finished_scores, beam_size - 1, batch_dims=1)  # [B]
    best_possible = alive_logp[:, 0] / max_penalty[:, 0]  # [B]
    done = done | (length > max_output_length) | (
        (worst_kept > NEG / 2) & (worst_kept >= best_possible)) | (
            alive_logp[:, 0] <= NEG / 2)
    return t + 1, sequences, alive_logp, finished, finished_scores, cache, done

  def cond(t, unused_sequences, unused_alive, unused_finished, unused_scores,
           unused_cache, done):
    return (t < context - 1) & ~tf.reduce_all(done)

  done = tf.zeros([batch_size], tf.bool)
  _, _, _, finished, finished_scores, _, _ = tf.while_loop(
      cond, body, (tf.constant(0), sequences, alive_logp, finished,
                   finished_scores, cache, done),
      maximum_iterations=context)
  real = beam_index < beam_size[:, None]  # [B, K]
  finished_scores = tf.where(real, finished_scores, NEG)
  tokens = tf.where(real[:, :, None], finished[:, :, 1:], 0)  # [B, K, T-1]
  return tokens, finished_scores
