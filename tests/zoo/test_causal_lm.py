"""Causal LM: causality, cached == uncached generation, sampling rules, config.

The model is a tiny random decoder (no training): generation has to be exact
whatever the weights. Embeddings are re-drawn with a larger scale so the
next-token distributions are peaked enough for greedy decoding to be stable
under float noise, yet the model still samples varied text at temperature 1.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from zoo.decoding.generation import fit_prompts
from zoo.presets import get_preset
from zoo.tasks.causal_lm import CausalLanguageModel, build_causal_lm

VOCAB = 24
CONTEXT = 16
SUPPRESSED = (0, 1)  # padding and unknown, as zoo.model_config builds it
PRESET = dict(get_preset("decoder", "tiny"), vocabulary_size=VOCAB,
              sequence_length=CONTEXT, hidden_dim=32, num_layers=2,
              num_heads=4, intermediate_dim=64)


def make_model(seed=0, embedding_scale=0.3):
  """A random tiny LM; weights re-drawn so its outputs are neither flat nor
  one-hot (embedding_scale 0.1 gives nearly uniform next-token choices)."""
  keras.utils.set_random_seed(seed)
  model = build_causal_lm(PRESET, suppressed_ids=SUPPRESSED)
  model(tf.zeros([1, CONTEXT], tf.int32))
  rng = np.random.default_rng(seed)
  for weight in model.weights:
    if len(weight.shape) == 2:  # embeddings and kernels
      std = (embedding_scale if "embedding" in weight.path
             else 1.0 / np.sqrt(weight.shape[0]))
      weight.assign(rng.normal(0.0, std, weight.shape).astype(np.float32))
  return model


@pytest.fixture(scope="module")
def model():
  return make_model()


def random_ids(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(2, VOCAB, size=(batch, length)).astype(np.int32)


def pad_prompts(prompts):
  """Lists of ids -> (int32[B, CONTEXT] right-padded, int32[B] lengths)."""
  ids = np.zeros([len(prompts), CONTEXT], np.int32)
  for row, prompt in enumerate(prompts):
    ids[row, :len(prompt)] = prompt
  return ids, np.array([len(p) for p in prompts], np.int32)


def settings(batch, max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0,
             seed=0):
  """Per-row setting arrays; scalars are repeated for every row."""
  def column(value, dtype):
    return np.broadcast_to(np.asarray(value, dtype), [batch]).copy()
  return dict(max_new_tokens=column(max_new_tokens, np.int32),
              temperature=column(temperature, np.float32),
              top_k=column(top_k, np.int32), top_p=column(top_p, np.float32),
              seed=column(seed, np.int64))


_COMPILED = {}


def graph_generate(model, use_cache=True):
  """model.generate as one graph with batch-agnostic shapes, as exports run it."""
  key = (id(model), use_cache)
  if key not in _COMPILED:
    def spec(dtype, shape=(None,)):
      return tf.TensorSpec(shape, dtype)
    _COMPILED[key] = tf.function(
        lambda *args: model.generate(*args, use_cache=use_cache),
        input_signature=[spec(tf.int32, (None, CONTEXT)), spec(tf.int32),
                         spec(tf.int32), spec(tf.float32), spec(tf.int32),
                         spec(tf.float32), spec(tf.int64)])
  return _COMPILED[key]


def generate(model, prompts, use_cache=True, **kwargs):
  """Generates from lists of ids; returns numpy (tokens, num_generated)."""
  ids, lengths = pad_prompts(prompts)
  s = settings(len(prompts), **kwargs)
  tokens, generated = graph_generate(model, use_cache)(
      ids, lengths, s["max_new_tokens"], s["temperature"], s["top_k"],
      s["top_p"], s["seed"])
  return tokens.numpy(), generated.numpy()


def continuations(tokens, prompts, generated):
  return [tokens[row, len(p):len(p) + n].tolist()
          for row, (p, n) in enumerate(zip(prompts, generated))]


PROMPTS = [[2, 5, 7], [2, 9, 3, 11, 4, 6, 8], [2], [2, 13, 13, 20, 21]]


# (a) Causality.

@pytest.mark.parametrize("position", [0, 4, CONTEXT - 2])
def test_changing_a_token_changes_no_earlier_logits(model, position):
  ids = random_ids(2, CONTEXT, seed=position)
  changed = ids.copy()
  changed[:, position + 1] = (changed[:, position + 1] - 2 + 1) % (VOCAB - 2) + 2
  before = model(tf.constant(ids)).numpy()
  after = model(tf.constant(changed)).numpy()
  assert before.shape == (2, CONTEXT, VOCAB) and before.dtype == np.float32
  np.testing.assert_allclose(after[:, :position + 1], before[:, :position + 1],
                             atol=1e-6, rtol=0)
  # The changed position itself and every later one see the change.
  for t in range(position + 1, CONTEXT):
    assert np.abs(after[:, t] - before[:, t]).max() > 1e-4, t


def test_cached_steps_give_the_full_forward_logits(model):
  backbone = model.backbone
  ids = tf.constant(random_ids(3, CONTEXT, seed=7))
  full = model(ids).numpy()
  prefill = 5
  hidden, cache = backbone.call_with_cache(ids[:, :prefill])
  np.testing.assert_allclose(backbone.logits(hidden).numpy(),
                             full[:, :prefill], atol=1e-5)
  cache = tuple((tf.pad(k, [[0, CONTEXT - prefill], [0, 0], [0, 0], [0, 0]]),
                 tf.pad(v, [[0, CONTEXT - prefill], [0, 0], [0, 0], [0, 0]]))
                for k, v in cache)  # time-major [T, B, H, Dh]
  for position in range(prefill, CONTEXT):
    hidden, cache = backbone.call_step(ids[:, position:position + 1], position,
                                       cache)
    np.testing.assert_allclose(backbone.logits(hidden).numpy()[:, 0],
                               full[:, position], atol=1e-5, err_msg=position)


# (b) Cached == uncached, (c) greedy == a hand-written loop, (d) top_k=1.

def hand_written_greedy(model, prompt, max_new_tokens):
  ids = list(prompt)
  for _ in range(max_new_tokens):
    padded = np.zeros([1, CONTEXT], np.int32)
    padded[0, :len(ids)] = ids
    logits = model(tf.constant(padded)).numpy()[0, len(ids) - 1]
    logits[list(SUPPRESSED)] = -np.inf
    ids.append(int(np.argmax(logits)))
  return ids[len(prompt):]


def test_greedy_equals_a_hand_written_argmax_loop(model):
  tokens, generated = generate(model, PROMPTS, max_new_tokens=6)
  assert generated.tolist() == [6] * len(PROMPTS)
  got = continuations(tokens, PROMPTS, generated)
  expected = [hand_written_greedy(model, p, 6) for p in PROMPTS]
  assert got == expected
  assert all(t not in SUPPRESSED for row in got for t in row)
  # The prompts are kept in place and everything after is padding.
  for row, prompt in enumerate(PROMPTS):
    assert tokens[row, :len(prompt)].tolist() == prompt
    assert np.all(tokens[row, len(prompt) + 6:] == 0)


@pytest.mark.parametrize("kwargs", [
    dict(temperature=0.0),
    dict(temperature=1.0, seed=[3, 4, 5, 6]),
    dict(temperature=0.7, top_k=5, top_p=0.9, seed=11),
    dict(temperature=[0.0, 1.5, 1.0, 0.5], top_k=[0, 3, 0, 2],
         top_p=[1.0, 1.0, 0.6, 1.0], seed=[1, 2, 3, 4],
         max_new_tokens=[4, 8, 2, 6]),
])
def test_cached_generation_equals_uncached(model, kwargs):
  kwargs.setdefault("max_new_tokens", 8)
  cached = generate(model, PROMPTS, use_cache=True, **kwargs)
  uncached = generate(model, PROMPTS, use_cache=False, **kwargs)
  np.testing.assert_array_equal(cached[0], uncached[0])
  np.testing.assert_array_equal(cached[1], uncached[1])


def test_top_k_one_equals_greedy(model):
  greedy = generate(model, PROMPTS, max_new_tokens=8)
  for seed in (0, 1, 2):
    top1 = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0,
                    top_k=1, seed=seed)
    np.testing.assert_array_equal(top1[0], greedy[0])
  sampled = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0,
                     seed=1)
  assert not np.array_equal(sampled[0], greedy[0])  # the model can sample
  # A tiny nucleus keeps only the most likely token too.
  nucleus = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0,
                     top_p=1e-6, seed=5)
  np.testing.assert_array_equal(nucleus[0], greedy[0])


# (e) Seeds.

def test_same_seed_same_text_different_seeds_differ():
  flat = make_model(seed=3, embedding_scale=0.1)  # nearly uniform next tokens
  prompts = [[2, 5], [2, 5]]
  first = generate(flat, prompts, max_new_tokens=12, temperature=1.0,
                   seed=[42, 43])
  again = generate(flat, prompts, max_new_tokens=12, temperature=1.0,
                   seed=[42, 43])
  np.testing.assert_array_equal(first[0], again[0])
  rows = continuations(first[0], prompts, first[1])
  assert rows[0] != rows[1]  # same prompt, different seeds
  assert len(set(rows[0])) > 3  # sampling, not a repeated argmax
  seeds = [generate(flat, prompts[:1], max_new_tokens=12, temperature=1.0,
                    seed=s)[0][0].tolist() for s in range(5)]
  assert len({tuple(s) for s in seeds}) == 5


# (f) Mixed settings in one batch.

def test_each_row_gets_what_it_gets_alone(model):
  prompts = [[2, 5, 7, 9, 3], [2, 8], [2, 4, 4, 6, 10, 12, 14, 3, 5], [2, 17, 5]]
  mixed = dict(max_new_tokens=[3, 9, 5, 0], temperature=[0.0, 1.0, 0.8, 1.2],
               top_k=[0, 0, 4, 2], top_p=[1.0, 0.9, 1.0, 0.5],
               seed=[7, 8, 9, 10])
  tokens, generated = generate(model, prompts, **mixed)
  assert generated.tolist() == [3, 9, 5, 0]
  for row, prompt in enumerate(prompts):
    alone = {k: v[row] for k, v in mixed.items()}
    single_tokens, single_generated = generate(model, [prompt], **alone)
    assert single_generated.tolist() == [generated[row]]
    np.testing.assert_array_equal(tokens[row], single_tokens[0], err_msg=row)


# (g) max_new_tokens.

def test_max_new_tokens_is_respected_per_row(model):
  prompts = [[2, 5, 7], [2, 9, 3, 11], [2], [2, 6]]
  budgets = [0, 1, CONTEXT - 1, 4]
  tokens, generated = generate(model, prompts, max_new_tokens=budgets,
                               temperature=1.0, seed=[1, 2, 3, 4])
  assert generated.tolist() == budgets
  for row, (prompt, budget) in enumerate(zip(prompts, budgets)):
    assert tokens[row, :len(prompt)].tolist() == prompt
    new = tokens[row, len(prompt):len(prompt) + budget]
    assert np.all(new >= 2), row  # real tokens, never padding or unknown
    assert np.all(tokens[row, len(prompt) + budget:] == 0), row


def test_all_rows_at_zero_generate_nothing(model):
  tokens, generated = generate(model, PROMPTS, max_new_tokens=0)
  assert generated.tolist() == [0] * len(PROMPTS)
  np.testing.assert_array_equal(tokens, pad_prompts(PROMPTS)[0])


def test_fit_prompts_keeps_the_end_of_long_prompts():
  prompt = list(range(2, 2 + CONTEXT))  # fills the whole context
  ids, lengths = pad_prompts([prompt, [2, 3]])
  fitted, kept = fit_prompts(tf.constant(ids), tf.constant(lengths),
                             tf.constant([4, 4]), CONTEXT)
  assert kept.numpy().tolist() == [CONTEXT - 4, 2]
  assert fitted.numpy()[0, :CONTEXT - 4].tolist() == prompt[4:]
  assert np.all(fitted.numpy()[0, CONTEXT - 4:] == 0)
  assert fitted.numpy()[1].tolist() == ids[1].tolist()


# (h) Bad input.

BAD_SETTINGS = [
    dict(max_new_tokens=-1),
    dict(max_new_tokens=CONTEXT),
    dict(temperature=-0.5),
    dict(top_p=0.0),
    dict(top_p=1.5),
    dict(top_k=-1),
]


@pytest.mark.parametrize("bad", BAD_SETTINGS)
@pytest.mark.parametrize("in_graph", [False, True])
def test_bad_settings_raise_invalid_argument(model, bad, in_graph):
  ids, lengths = pad_prompts(PROMPTS[:2])
  # Only the first row is bad: one bad row fails the whole request.
  good = settings(2)
  for name, value in bad.items():
    good[name][0] = value
  args = (ids, lengths, good["max_new_tokens"], good["temperature"],
          good["top_k"], good["top_p"], good["seed"])
  fn = graph_generate(model) if in_graph else model.generate
  with pytest.raises(tf.errors.InvalidArgumentError):
    fn(*args)


@pytest.mark.parametrize("name", ["max_new_tokens", "temperature", "top_k",
                                  "top_p", "seed"])
@pytest.mark.parametrize("in_graph", [False, True])
def test_settings_of_the_wrong_batch_size_raise(model, name, in_graph):
  ids, lengths = pad_prompts(PROMPTS[:3])
  s = settings(3)
  s[name] = s[name][:2]
  fn = graph_generate(model) if in_graph else model.generate
  with pytest.raises(tf.errors.InvalidArgumentError, match="batch size"):
    fn(ids, lengths, s["max_new_tokens"], s["temperature"], s["top_k"],
       s["top_p"], s["seed"])


def test_empty_prompt_raises(model):
  ids, lengths = pad_prompts([[2, 3], [2]])
  lengths[1] = 0
  s = settings(2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="at least one"):
    model.generate(ids, lengths, s["max_new_tokens"], s["temperature"],
                   s["top_k"], s["top_p"], s["seed"])


def test_largest_valid_settings_are_accepted(model):
  tokens, generated = generate(model, [[2]], max_new_tokens=CONTEXT - 1,
                               temperature=100.0, top_k=VOCAB * 10, top_p=1.0)
  assert generated.tolist() == [CONTEXT - 1]
  assert np.all(tokens[0, 1:] >= 2)


# (i) log_likelihood.

def test_log_likelihood_equals_sum_of_log_softmax(model):
  ids = random_ids(3, CONTEXT, seed=5)
  ids[0, 9:] = 0  # right padding is not scored
  ids[1, 2:] = 0
  log_likelihood, count = model.log_likelihood(tf.constant(ids))
  logits = model(tf.constant(ids)).numpy().astype(np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected, expected_count = [], []
  for row in range(3):
    length = int((ids[row] != 0).sum())
    expected.append(sum(log_probs[row, t, ids[row, t + 1]]
                        for t in range(length - 1)))
    expected_count.append(length - 1)
  assert count.numpy().tolist() == expected_count == [8, 1, CONTEXT - 1]
  np.testing.assert_allclose(log_likelihood.numpy(), expected, rtol=1e-5)
  assert log_likelihood.dtype == tf.float32 and count.dtype == tf.int32


# (j) Serialization.

def test_from_config_round_trip_gives_the_same_logits(model):
  config = model.get_config()
  assert config["suppressed_ids"] == list(SUPPRESSED)
  assert config["end_id"] is None
  clone = CausalLanguageModel.from_config(config)
  ids = tf.constant(random_ids(2, CONTEXT, seed=9))
  clone(ids)
  clone.set_weights(model.get_weights())
  np.testing.assert_allclose(clone(ids).numpy(), model(ids).numpy(), atol=1e-6)
  assert clone.suppressed_ids == SUPPRESSED
  assert clone.backbone.get_config() == model.backbone.get_config()


def test_keras_saving_round_trip(model, tmp_path):
  path = str(tmp_path / "lm.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, CausalLanguageModel)
  ids = tf.constant(random_ids(2, CONTEXT, seed=10))
  np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(),
                             atol=1e-6)
  np.testing.assert_array_equal(
      generate(loaded, PROMPTS, max_new_tokens=5)[0],
      generate(model, PROMPTS, max_new_tokens=5)[0])


def test_cached_steps_under_mixed_bfloat16_follow_the_full_forward():
  """The step reads the position table outside a layer call, so it casts it
  to the compute dtype itself; under a mixed policy the cached logits stay
  within bfloat16 rounding of the full forward pass."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    keras.utils.set_random_seed(0)
    model = build_causal_lm(PRESET, suppressed_ids=SUPPRESSED)
    ids = tf.constant(random_ids(2, CONTEXT, seed=3))
    full = np.asarray(model(ids), np.float32)  # [2, T, V]
    backbone = model.backbone
    cache = backbone.empty_cache(2, tf.bfloat16)
    for position in range(CONTEXT):
      hidden, cache = backbone.step(ids[:, position], position, cache)
      assert hidden.dtype == tf.bfloat16
      got = np.asarray(tf.cast(backbone.logits(hidden), tf.float32))
      np.testing.assert_allclose(got, full[:, position], atol=0.01,
                                 err_msg=position)
  finally:
    keras.mixed_precision.set_global_policy("float32")
