"""Translator: causality, source padding, exact beam search and its rules.

The model is a tiny random encoder-decoder (no training): beam search has to
be exact whatever the weights. Kernels and embeddings are re-drawn at a larger
scale so next-token distributions are peaked enough for argmax decisions to be
stable under float noise (at the default scales a random decoder with tied
embeddings just repeats its input token), and the end-of-sentence logit is
raised so that hypotheses of many different lengths end: with these settings
greedy outputs of the sources below are a mix of 1, 2 and 11 tokens.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from zoo.decoding.beam_search import NEG, gnmt_length_penalty
from zoo.presets import get_preset
from zoo.tasks.translator import (BOS_ID, EOS_ID, PAD_ID, Translator,
                                  build_translator)

VOCAB = 24
CONTEXT = 12
LONGEST = CONTEXT - 2  # the largest max_output_length: room for BOS and EOS
MAX_BEAM = 4
PRESET = dict(get_preset("seq2seq", "tiny"), vocabulary_size=VOCAB,
              sequence_length=CONTEXT, hidden_dim=32, num_encoder_layers=2,
              num_decoder_layers=2, num_heads=4, intermediate_dim=64,
              dropout=0.0, max_beam_size=MAX_BEAM)
SCORE_ATOL = 1e-4  # cached graph decoding vs the full eager forward pass


def make_model(seed=1, embedding_scale=0.3, kernel_gain=3.0, eos_bias=3.0):
  """A random tiny translator with non-degenerate next-token distributions."""
  keras.utils.set_random_seed(seed)
  model = build_translator(PRESET)
  zeros = tf.zeros([1, CONTEXT], tf.int32)
  model({"source_ids": zeros, "target_ids": zeros})
  rng = np.random.default_rng(seed)
  for weight in model.weights:
    if weight.path.endswith("embeddings"):
      weight.assign(rng.normal(0.0, embedding_scale, weight.shape)
                    .astype(np.float32))
    elif weight.path.endswith("kernel"):  # dense and attention kernels
      weight.assign(rng.normal(0.0, kernel_gain / np.sqrt(weight.shape[0]),
                               weight.shape).astype(np.float32))
  # The final norm's bias along EOS's (tied) embedding adds ~eos_bias to
  # every EOS logit.
  eos = model.backbone.token_embedding.embeddings.numpy()[EOS_ID]
  model.backbone.decoder_norm.beta.assign(eos_bias * eos / eos.dot(eos))
  return model


@pytest.fixture(scope="module")
def model():
  return make_model()


def random_sources(batch, seed, min_length=2, max_length=CONTEXT - 1,
                   width=CONTEXT):
  """Tokenizer-like source ids: pieces (ids >= 4), EOS, then padding."""
  rng = np.random.default_rng(seed)
  ids = np.zeros([batch, width], np.int32)
  for row in range(batch):
    length = int(rng.integers(min_length, max_length + 1))
    ids[row, :length - 1] = rng.integers(4, VOCAB, length - 1)
    ids[row, length - 1] = EOS_ID
  return ids


def random_targets(batch, seed):
  """Decoder inputs: BOS then random pieces, full width."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, VOCAB, size=(batch, CONTEXT)).astype(np.int32)
  ids[:, 0] = BOS_ID
  return ids


def logits_of(model, sources, targets):
  return model({"source_ids": tf.constant(sources),
                "target_ids": tf.constant(targets)}).numpy()


_COMPILED = {}


def graph_translate(model):
  """model.translate as one batch-agnostic graph, as exports run it."""
  entry = _COMPILED.get(id(model))
  if entry is None or entry[0] is not model:
    def spec(dtype, shape=(None,)):
      return tf.TensorSpec(shape, dtype)
    entry = (model, tf.function(model.translate, input_signature=[
        spec(tf.int32, (None, None)), spec(tf.int32), spec(tf.int32),
        spec(tf.float32)]))
    _COMPILED[id(model)] = entry
  return entry[1]


def settings(batch, beam_size=MAX_BEAM, max_output_length=LONGEST,
             length_penalty=0.0):
  """Per-row setting arrays; scalars are repeated for every row."""
  def column(value, dtype):
    return np.broadcast_to(np.asarray(value, dtype), [batch]).copy()
  return dict(beam_size=column(beam_size, np.int32),
              max_output_length=column(max_output_length, np.int32),
              length_penalty=column(length_penalty, np.float32))


def translate(model, sources, **kwargs):
  """Beam search in a graph: numpy (tokens [B, K, T-1], scores [B, K])."""
  s = settings(len(sources), **kwargs)
  tokens, scores = graph_translate(model)(
      tf.constant(sources, tf.int32), s["beam_size"], s["max_output_length"],
      s["length_penalty"])
  return tokens.numpy(), scores.numpy()


def hypothesis(ids):
  """One beam's tokens up to and including EOS, as a list."""
  return ids[:int((ids != PAD_ID).sum())].tolist()


def log_softmax(logits):
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# (a) Causality and the source.

@pytest.mark.parametrize("position", [0, 4, CONTEXT - 2])
def test_changing_a_target_token_changes_no_earlier_logits(model, position):
  sources = random_sources(2, seed=1)
  targets = random_targets(2, seed=position)
  changed = targets.copy()
  changed[:, position + 1] = (changed[:, position + 1] - 3) % (VOCAB - 4) + 4
  before = logits_of(model, sources, targets)
  after = logits_of(model, sources, changed)
  assert before.shape == (2, CONTEXT, VOCAB) and before.dtype == np.float32
  np.testing.assert_allclose(after[:, :position + 1], before[:, :position + 1],
                             atol=1e-5, rtol=0)
  for t in range(position + 1, CONTEXT):  # the change is seen from t + 1 on
    assert np.abs(after[:, t] - before[:, t]).max() > 1e-4, t


def test_every_target_position_sees_the_whole_source(model):
  sources = random_sources(2, seed=2, min_length=6)
  targets = random_targets(2, seed=2)
  changed = sources.copy()
  changed[:, 3] = (changed[:, 3] - 4 + 1) % (VOCAB - 4) + 4  # a middle piece
  before = logits_of(model, sources, targets)
  after = logits_of(model, changed, targets)
  for t in range(CONTEXT):
    assert np.abs(after[:, t] - before[:, t]).max() > 1e-4, t


def test_cached_decoding_steps_give_the_full_forward_logits(model):
  backbone = model.backbone
  sources = tf.constant(random_sources(3, seed=3))
  targets = random_targets(3, seed=3)
  full = logits_of(model, sources.numpy(), targets)
  encoded, mask = backbone.encode(sources, training=False)
  memory = backbone.cross_attention_memory(encoded)
  cache = backbone.empty_cache(3)
  for position in range(CONTEXT):
    hidden, cache = backbone.decode_step(
        tf.constant(targets[:, position:position + 1]), position, cache,
        memory, mask)
    np.testing.assert_allclose(backbone.logits(hidden).numpy()[:, 0],
                               full[:, position], atol=1e-5, rtol=1e-5,
                               err_msg=position)


def test_log_probability_is_the_sum_of_the_target_log_softmax(model):
  sources = random_sources(3, seed=4)
  pieces = random_targets(3, seed=4)[:, 1:]  # [3, T-1]: no BOS here
  lengths = [4, 1, CONTEXT - 1]
  targets = np.zeros_like(pieces)
  for row, n in enumerate(lengths):  # pieces, EOS, padding
    targets[row, :n - 1] = pieces[row, :n - 1]
    targets[row, n - 1] = EOS_ID
  got = model.log_probability(tf.constant(sources), tf.constant(targets))
  assert got.dtype == tf.float32 and got.shape == (3,)
  inputs = np.concatenate([np.full([3, 1], BOS_ID, np.int32),
                           targets[:, :-1]], axis=1)
  log_probs = log_softmax(logits_of(model, sources, inputs))
  expected = [sum(log_probs[row, t, targets[row, t]] for t in range(n))
              for row, n in enumerate(lengths)]
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


# (b) Source padding.

def test_trailing_source_padding_changes_nothing(model):
  sources = random_sources(3, seed=5, max_length=7)
  narrow, wide = sources[:, :7], sources  # same rows, 5 more pad columns
  targets = random_targets(3, seed=5)
  np.testing.assert_allclose(logits_of(model, narrow, targets),
                             logits_of(model, wide, targets), atol=1e-5,
                             rtol=1e-5)
  kwargs = dict(beam_size=[1, 3, 4], length_penalty=[0.0, 0.6, 1.0])
  narrow_tokens, narrow_scores = translate(model, narrow, **kwargs)
  wide_tokens, wide_scores = translate(model, wide, **kwargs)
  np.testing.assert_array_equal(narrow_tokens, wide_tokens)
  np.testing.assert_allclose(narrow_scores, wide_scores, atol=1e-5)


# (c) Beam size 1 is greedy decoding.

def hand_written_greedy(model, source, max_output_length):
  """(tokens ending in EOS, log-probability): the argmax of the full forward
  pass at each step, PAD and BOS never chosen, EOS forced once the output
  holds max_output_length pieces."""
  output, log_probability = [], 0.0
  while True:
    targets = np.zeros([1, CONTEXT], np.int32)
    targets[0, 0] = BOS_ID
    targets[0, 1:len(output) + 1] = output
    logits = logits_of(model, source[None], targets)[0, len(output)]
    log_probs = log_softmax(logits)
    allowed = log_probs.copy()
    allowed[[PAD_ID, BOS_ID]] = -np.inf
    token = (EOS_ID if len(output) == max_output_length
             else int(np.argmax(allowed)))
    output.append(token)
    log_probability += log_probs[token]
    if token == EOS_ID:
      return output, log_probability


@pytest.mark.parametrize("max_output_length", [1, 3, LONGEST])
def test_beam_size_one_equals_a_hand_written_greedy_loop(model,
                                                         max_output_length):
  sources = random_sources(6, seed=6)
  tokens, scores = translate(model, sources, beam_size=1,
                             max_output_length=max_output_length)
  assert tokens.shape == (6, 1, CONTEXT - 1) and scores.shape == (6, 1)
  lengths = []
  for row in range(6):
    expected, log_probability = hand_written_greedy(model, sources[row],
                                                    max_output_length)
    assert hypothesis(tokens[row, 0]) == expected, row
    assert np.all(tokens[row, 0, len(expected):] == PAD_ID)
    assert scores[row, 0] == pytest.approx(log_probability, abs=SCORE_ATOL)
    lengths.append(len(expected))
  if max_output_length == LONGEST:  # some end early: EOS is really chosen
    assert min(lengths) < LONGEST + 1 == max(lengths)
    assert any(len(set(hypothesis(tokens[row, 0]))) > 2 for row in range(6))


def test_beam_size_one_with_length_penalty_is_never_worse_than_greedy(model):
  """With alpha > 0 a single beam still follows the argmax path, but a later
  ending may beat the first one once the penalty is applied."""
  sources = random_sources(6, seed=7)
  alpha = 1.0
  tokens, scores = translate(model, sources, beam_size=1, length_penalty=alpha)
  for row in range(6):
    greedy, log_probability = hand_written_greedy(model, sources[row], LONGEST)
    greedy_score = log_probability / ((5 + len(greedy)) / 6) ** alpha
    got = hypothesis(tokens[row, 0])
    if got == greedy:
      assert scores[row, 0] == pytest.approx(greedy_score, abs=SCORE_ATOL)
    else:
      assert len(got) > len(greedy) and got[:len(greedy) - 1] == greedy[:-1]
      assert scores[row, 0] > greedy_score


# (d) Scores.

def beams_of(tokens, beam_sizes):
  """(row index, beam index) arrays of every real beam."""
  pairs = [(row, j) for row, b in enumerate(beam_sizes) for j in range(b)]
  return tuple(np.array(x) for x in zip(*pairs))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_scores_are_log_probability_over_the_length_penalty(model, alpha):
  sources = random_sources(4, seed=8)
  beam_sizes = [4, 3, 2, 1]
  tokens, scores = translate(model, sources, beam_size=beam_sizes,
                             length_penalty=alpha)
  rows, beams = beams_of(tokens, beam_sizes)
  chosen = tokens[rows, beams]  # [N, T-1]
  log_probability = model.log_probability(tf.constant(sources[rows]),
                                          tf.constant(chosen)).numpy()
  n = (chosen != PAD_ID).sum(axis=-1)  # output length, EOS included
  expected = log_probability / ((5.0 + n) / 6.0) ** alpha
  np.testing.assert_allclose(scores[rows, beams], expected, atol=SCORE_ATOL,
                             rtol=1e-6)
  if alpha == 0.0:
    np.testing.assert_allclose(scores[rows, beams], log_probability,
                               atol=SCORE_ATOL, rtol=1e-6)


def test_gnmt_length_penalty_values():
  lengths = tf.constant([1, 7, 25])
  np.testing.assert_allclose(gnmt_length_penalty(lengths, 0.0).numpy(),
                             [1.0, 1.0, 1.0])
  np.testing.assert_allclose(gnmt_length_penalty(lengths, 1.0).numpy(),
                             [1.0, 2.0, 5.0], rtol=1e-6)
  np.testing.assert_allclose(gnmt_length_penalty(lengths, 0.5).numpy(),
                             np.sqrt([1.0, 2.0, 5.0]), rtol=1e-6)
  assert gnmt_length_penalty(7, 1.0).dtype == tf.float32


# (e) Length penalty.

def test_scores_are_sorted_and_larger_alpha_prefers_longer_outputs(model):
  """The alive beams do not depend on alpha, only the ranking of the ended
  hypotheses does (and when the search may stop, which is exact): so the best
  output's length can only grow with alpha, and does for some sources."""
  sources = random_sources(16, seed=9)
  alphas = (0.0, 0.6, 1.5, 4.0)
  best_lengths, best = [], []
  for alpha in alphas:
    tokens, scores = translate(model, sources, beam_size=MAX_BEAM,
                               length_penalty=alpha)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), alpha  # best first
    best_lengths.append((tokens[:, 0] != PAD_ID).sum(axis=-1))
    best.append([hypothesis(t) for t in tokens[:, 0]])
    # Rescoring the returned hypotheses by logp / lp ranks them as returned.
    log_probability = model.log_probability(
        tf.constant(np.repeat(sources, MAX_BEAM, axis=0)),
        tf.constant(tokens.reshape(-1, CONTEXT - 1))).numpy()
    n = (tokens != PAD_ID).sum(axis=-1).reshape(-1)
    rescored = (log_probability / ((5.0 + n) / 6.0) ** alpha).reshape(
        -1, MAX_BEAM)
    for row in range(len(sources)):
      assert np.all(np.diff(rescored[row]) <= SCORE_ATOL), (alpha, row)
  best_lengths = np.array(best_lengths)  # [alphas, B]
  assert np.all(np.diff(best_lengths, axis=0) >= 0), best_lengths
  changed = best_lengths[-1] > best_lengths[0]
  assert changed.any(), best_lengths
  # Where alpha 0 preferred a shorter output, it also scores that output
  # higher than the longer one alpha 4 chose, and alpha 4 the reverse.
  for row in np.flatnonzero(changed):
    short, long = best[0][row], best[-1][row]
    logp = model.log_probability(tf.constant(sources[[row, row]]), tf.constant(
        [short + [0] * (CONTEXT - 1 - len(short)),
         long + [0] * (CONTEXT - 1 - len(long))], tf.int32)).numpy()
    assert logp[0] >= logp[1] - SCORE_ATOL
    lp = ((5.0 + np.array([len(short), len(long)])) / 6.0) ** alphas[-1]
    assert (logp / lp)[1] >= (logp / lp)[0] - SCORE_ATOL


# (f) Mixed settings in one batch.

def test_each_row_gets_what_it_gets_alone(model):
  sources = random_sources(5, seed=10)
  mixed = dict(beam_size=[1, 4, 2, 3, 4], max_output_length=[10, 3, 7, 1, 5],
               length_penalty=[0.0, 0.6, 1.0, 0.0, 2.0])
  tokens, scores = translate(model, sources, **mixed)
  assert tokens.shape == (5, MAX_BEAM, CONTEXT - 1)
  for row in range(5):
    b = mixed["beam_size"][row]
    width = int((sources[row] != PAD_ID).sum())  # alone, without padding
    alone_tokens, alone_scores = translate(
        model, sources[row:row + 1, :width],
        **{k: v[row] for k, v in mixed.items()})
    assert alone_tokens.shape == (1, b, CONTEXT - 1)
    np.testing.assert_array_equal(tokens[row, :b], alone_tokens[0],
                                  err_msg=row)
    np.testing.assert_allclose(scores[row, :b], alone_scores[0],
                               atol=SCORE_ATOL)
    assert np.all(scores[row, b:] == np.float32(NEG))
    assert np.all(tokens[row, b:] == PAD_ID)


# (g) Outputs.

@pytest.mark.parametrize("max_output_length", [1, 4, LONGEST])
def test_outputs_are_well_formed_and_respect_max_output_length(
    model, max_output_length):
  sources = random_sources(4, seed=11)
  beam_sizes = [2, 3, 1, 3]
  tokens, scores = translate(model, sources, beam_size=beam_sizes,
                             max_output_length=max_output_length,
                             length_penalty=0.6)
  assert tokens.shape == (4, 3, CONTEXT - 1) and tokens.dtype == np.int32
  assert scores.shape == (4, 3) and scores.dtype == np.float32
  for row, b in enumerate(beam_sizes):
    assert np.all(scores[row, b:] == np.float32(NEG)), row
    assert np.all(tokens[row, b:] == PAD_ID), row
    assert np.all(scores[row, :b] > NEG / 2), row
    assert np.all(np.diff(scores[row, :b]) <= 1e-6), row
    seen = set()
    for j in range(b):
      ids = tokens[row, j]
      n = int((ids != PAD_ID).sum())
      assert 1 <= n <= max_output_length + 1, (row, j)
      assert ids[n - 1] == EOS_ID and np.all(ids[n:] == PAD_ID), (row, j)
      assert EOS_ID not in ids[:n - 1] and BOS_ID not in ids[:n], (row, j)
      seen.add(tuple(ids[:n]))
    assert len(seen) == b  # distinct hypotheses


def test_an_empty_batch_gives_empty_outputs(model):
  tokens, scores = translate(model, np.zeros([0, CONTEXT], np.int32))
  assert tokens.shape[0] == 0 and tokens.shape[-1] == CONTEXT - 1
  assert scores.shape[0] == 0


# (h) Bad settings.

BAD_SETTINGS = [
    ("beam_size", 0, "beam_size must be >= 1"),
    ("beam_size", MAX_BEAM + 1, f"beam_size must be <= {MAX_BEAM}"),
    ("max_output_length", 0, "max_output_length must be >= 1"),
    ("max_output_length", LONGEST + 1,
     f"max_output_length must be <= {LONGEST}"),
    ("length_penalty", -0.1, "length_penalty must be >= 0"),
]


def call(model, in_graph, sources, s):
  fn = graph_translate(model) if in_graph else model.translate
  return fn(tf.constant(sources), tf.constant(s["beam_size"]),
            tf.constant(s["max_output_length"]),
            tf.constant(s["length_penalty"]))


@pytest.mark.parametrize("name, value, message", BAD_SETTINGS)
@pytest.mark.parametrize("in_graph", [False, True])
def test_bad_settings_raise_invalid_argument(model, name, value, message,
                                             in_graph):
  s = settings(2)
  s[name][1] = value  # only the second row is bad: the request fails
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    call(model, in_graph, random_sources(2, seed=12), s)


@pytest.mark.parametrize("name", ["beam_size", "max_output_length",
                                  "length_penalty"])
@pytest.mark.parametrize("in_graph", [False, True])
def test_settings_of_the_wrong_batch_size_raise(model, name, in_graph):
  s = settings(3)
  s[name] = s[name][:2]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"{name} must have one value per source"):
    call(model, in_graph, random_sources(3, seed=13), s)


def test_largest_valid_settings_are_accepted(model):
  tokens, scores = translate(model, random_sources(2, seed=14),
                             beam_size=MAX_BEAM, max_output_length=LONGEST,
                             length_penalty=10.0)
  assert tokens.shape == (2, MAX_BEAM, CONTEXT - 1)
  assert np.all(scores > NEG / 2)


# (i) Serialization.

def test_from_config_round_trip_gives_the_same_logits_and_translations(model):
  config = model.get_config()
  assert config["max_beam_size"] == MAX_BEAM
  clones = [Translator.from_config(config),
            keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(model))]
  sources = random_sources(2, seed=15)
  targets = random_targets(2, seed=15)
  expected_logits = logits_of(model, sources, targets)
  expected = translate(model, sources, beam_size=[2, 3], length_penalty=0.6)
  for clone in clones:
    assert isinstance(clone, Translator)
    assert clone.max_beam_size == MAX_BEAM
    assert clone.backbone.get_config() == model.backbone.get_config()
    logits_of(clone, sources, targets)  # creates the variables
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(logits_of(clone, sources, targets),
                               expected_logits, atol=1e-6)
    got = translate(clone, sources, beam_size=[2, 3], length_penalty=0.6)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-6)


def test_cached_steps_under_mixed_bfloat16_follow_the_full_forward():
  """The cross-attention step reads its projection kernels directly, so it
  casts them to the compute dtype itself; under a mixed policy the cached
  logits stay within bfloat16 rounding of the full forward pass."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    keras.utils.set_random_seed(2)
    model = build_translator(PRESET)
    sources = tf.constant(random_sources(2, seed=5))
    targets = random_targets(2, seed=5)
    full = np.asarray(model({"source_ids": sources,
                             "target_ids": tf.constant(targets)}), np.float32)
    backbone = model.backbone
    encoded, mask = backbone.encode(sources, training=False)
    memory = backbone.cross_attention_memory(encoded)
    cache = backbone.empty_cache(2, tf.bfloat16)
    for position in range(CONTEXT):
      hidden, cache = backbone.step(tf.constant(targets[:, position]),
                                    position, cache, memory, mask)
      assert hidden.dtype == tf.bfloat16
      got = np.asarray(tf.cast(backbone.logits(hidden), tf.float32))
      np.testing.assert_allclose(got, full[:, position], atol=0.05,
                                 err_msg=position)
  finally:
    keras.mixed_precision.set_global_policy("float32")
