"""The decoder (character LM) export: signatures, loaders, parity, bad input."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the text ops for tf.saved_model.load

from export import checks, warmup
from export.engine_signatures import ENGINE_SIGNATURES
from export.exporter import load_trained_model
from tests.conftest import SHAKESPEARE_CHARS, python_env
from tests.export.test_export import run_tf1_session

SIGNATURES = {"serving_default", "generate", "score", "engine_init",
              "engine_prefill", "engine_step"}
SCORE_ATOL = 1e-4  # float32 graph vs eager: summation order over ~30 tokens
TEXTS = ["First Citizen:\nBefore we proceed any further, hear me speak.",
         "ROMEO:", "", "电影 😀 and more", "x" * 500]


@functools.lru_cache(maxsize=None)
def trained(model_dir):
  """(model, tokenizer, context) restored in memory, as the exporter does."""
  model, tokenizer, _, _ = load_trained_model(model_dir)
  return model, tokenizer, model.backbone.sequence_length


@pytest.fixture(scope="module")
def loaded(exported_lm):
  return tf.saved_model.load(exported_lm)


def generate_request(prompts, max_new_tokens=8, temperature=0.0, top_k=0,
                     top_p=1.0, seed=0):
  """Feeds for the `generate` signature; scalars repeat for every prompt."""
  batch = len(prompts)

  def column(value, dtype):
    return np.broadcast_to(np.asarray(value, dtype), [batch]).copy()
  return {"prompt": np.array([p.encode() for p in prompts], object),
          "max_new_tokens": column(max_new_tokens, np.int32),
          "temperature": column(temperature, np.float32),
          "top_k": column(top_k, np.int32), "top_p": column(top_p, np.float32),
          "seed": column(seed, np.int64)}


def call_generate(loaded, prompts, **kwargs):
  feeds = generate_request(prompts, **kwargs)
  out = loaded.signatures["generate"](**{k: tf.constant(v)
                                         for k, v in feeds.items()})
  return ([t.decode("utf-8") for t in out["text"].numpy()],
          out["num_tokens"].numpy().tolist())


def in_memory_generate(model_dir, prompts, max_new_tokens, **kwargs):
  """The continuation texts from model.generate, prompts fitted by hand."""
  model, tokenizer, context = trained(model_dir)
  batch = len(prompts)
  ids = np.zeros([batch, context], np.int32)
  lengths = []
  for row, prompt in enumerate(prompts):
    prompt_ids = [tokenizer.start_id] + tokenizer.tokenize(
        tf.constant([prompt])).flat_values.numpy().tolist()
    prompt_ids = prompt_ids[-(context - max_new_tokens):]  # keep the end
    ids[row, :len(prompt_ids)] = prompt_ids
    lengths.append(len(prompt_ids))
  s = generate_request(prompts, max_new_tokens, **kwargs)
  tokens, generated = model.generate(
      tf.constant(ids), tf.constant(lengths, tf.int32), s["max_new_tokens"],
      s["temperature"], s["top_k"], s["top_p"], s["seed"])
  tokens, generated = tokens.numpy(), generated.numpy()
  new = np.zeros_like(tokens)
  for row in range(batch):
    new[row, :generated[row]] = tokens[row, lengths[row]:
                                       lengths[row] + generated[row]]
  texts = tokenizer.detokenize(tf.constant(new)).numpy()
  return [t.decode("utf-8") for t in texts], generated.tolist()


def test_version_layout_and_model_card(exported_lm):
  for name in ("saved_model.pb", "variables", "assets/vocab.txt",
               "assets.extra/model_card.json",
               "assets.extra/tf_serving_warmup_requests"):
    assert os.path.exists(os.path.join(exported_lm, name)), name
  with open(os.path.join(exported_lm, "assets", "vocab.txt")) as f:
    assert f.read().splitlines()[:2] == ["-1", "-2"]
  with open(os.path.join(exported_lm, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  assert card["family"] == "decoder" and card["task"] == "language_model"
  assert card["preset"] == "tiny" and card["labels"] is None
  assert card["architecture"]["sequence_length"] == 32
  assert card["limits"]["context"] == 32
  assert "0 to 31" in card["limits"]["max_new_tokens"]
  assert card["dev_metrics"]["loss"] > 0
  assert set(card["signatures"]) == SIGNATURES
  generate = card["signatures"]["generate"]
  assert generate["method"] == "tensorflow/serving/predict"
  assert generate["inputs"]["seed"] == {"dtype": "int64", "shape": [-1]}
  assert generate["outputs"]["num_tokens"] == {"dtype": "int32", "shape": [-1]}
  assert card["parameters"] > card["vocabulary_size"] * 32


def test_tf1_session_loader_runs_every_signature(exported_lm):
  signature, out = run_tf1_session(exported_lm, "serving_default",
                                   {"prompt": [b"ROMEO:", b""]})
  assert signature.method_name == "tensorflow/serving/predict"
  assert set(out) == {"text"}
  assert [len(t.decode()) for t in out["text"]] == [31, 31]  # min(100, T-1)
  signature, out = run_tf1_session(
      exported_lm, "generate",
      generate_request(["ROMEO:", "JULIET:"], max_new_tokens=[3, 7],
                       temperature=[0.0, 1.0], seed=[0, 5]))
  assert set(out) == {"text", "num_tokens"}
  assert out["num_tokens"].tolist() == [3, 7]
  assert [len(t.decode()) for t in out["text"]] == [3, 7]
  signature, out = run_tf1_session(exported_lm, "score",
                                   {"text": [t.encode() for t in TEXTS]})
  assert set(out) == {"log_likelihood", "num_tokens"}
  assert out["num_tokens"].tolist() == [31, 6, 0, 13, 31]  # cut at T-1 chars
  assert out["log_likelihood"][2] == 0.0  # the empty text scores nothing
  assert np.all(np.delete(out["log_likelihood"], 2) < 0)


def test_score_equals_in_memory_log_likelihood(loaded, trained_lm_dir):
  model, tokenizer, _ = trained(trained_lm_dir)
  out = loaded.signatures["score"](text=tf.constant(TEXTS))
  log_likelihood, count = model.log_likelihood(tokenizer(tf.constant(TEXTS)))
  np.testing.assert_allclose(out["log_likelihood"].numpy(),
                             log_likelihood.numpy(), atol=SCORE_ATOL)
  np.testing.assert_array_equal(out["num_tokens"].numpy(), count.numpy())


def test_greedy_generate_equals_in_memory_generation(loaded, trained_lm_dir):
  prompts = ["ROMEO:", "First Citizen:\nBefore we", "", "电影 x" * 40]
  texts, counts = call_generate(loaded, prompts, max_new_tokens=[6, 12, 1, 9])
  assert counts == [6, 12, 1, 9]
  assert [len(t) for t in texts] == counts
  for row, prompt in enumerate(prompts):  # each with its own budget
    expected, _ = in_memory_generate(trained_lm_dir, [prompt],
                                     [6, 12, 1, 9][row])
    assert texts[row] == expected[0], row


def test_sampled_generate_equals_in_memory_generation(loaded, trained_lm_dir):
  prompts = ["ROMEO:", "KING"]
  settings = dict(temperature=[1.0, 0.8], top_k=[0, 10], top_p=[0.95, 1.0],
                  seed=[3, 4])
  texts, counts = call_generate(loaded, prompts, max_new_tokens=10, **settings)
  expected, expected_counts = in_memory_generate(trained_lm_dir, prompts, 10,
                                                 **settings)
  assert texts == expected and counts == expected_counts == [10, 10]


def test_serving_default_is_greedy_generate(loaded):
  out = loaded.signatures["serving_default"](prompt=tf.constant(["ROMEO:",
                                                                 "KING"]))
  texts = [t.decode() for t in out["text"].numpy()]
  assert texts == call_generate(loaded, ["ROMEO:", "KING"],
                                max_new_tokens=31)[0]


def test_same_seed_same_text_through_the_export(loaded):
  prompts = ["ROMEO:"] * 3
  kwargs = dict(max_new_tokens=20, temperature=1.0, seed=[11, 11, 12])
  first, _ = call_generate(loaded, prompts, **kwargs)
  again, _ = call_generate(loaded, prompts, **kwargs)
  assert first == again
  assert first[0] == first[1]  # the same seed in one batch
  assert first[0] != first[2]  # a different seed
  alone, _ = call_generate(loaded, prompts[:1], max_new_tokens=20,
                           temperature=1.0, seed=11)
  assert alone == first[:1]


def test_unknown_characters_and_long_prompts(loaded, trained_lm_dir):
  texts, counts = call_generate(loaded, ["电影 😀", "\xff", "abc " * 100],
                                max_new_tokens=[5, 31, 31])
  assert counts == [5, 31, 31]
  assert all("\ufffd" not in t for t in texts)  # [UNK] is never generated


def bad_requests():
  yield "max_new_tokens", dict(max_new_tokens=[-1, 4])
  yield "max_new_tokens", dict(max_new_tokens=[4, 32])
  yield "top_p", dict(top_p=[0.0, 1.0])
  yield "top_p", dict(top_p=[1.0, 1.5])
  yield "temperature", dict(temperature=[0.5, -1.0])
  yield "top_k", dict(top_k=[-3, 0])


@pytest.mark.parametrize("name, bad", list(bad_requests()))
def test_bad_settings_are_invalid_argument(loaded, name, bad):
  with pytest.raises(tf.errors.InvalidArgumentError, match=name):
    call_generate(loaded, ["ROMEO:", "KING"], **bad)


@pytest.mark.parametrize("name", ["max_new_tokens", "temperature", "top_k",
                                  "top_p", "seed"])
def test_mismatched_batch_sizes_are_invalid_argument(loaded, name):
  feeds = generate_request(["ROMEO:", "KING", "JULIET"])
  feeds[name] = feeds[name][:2]
  with pytest.raises(tf.errors.InvalidArgumentError, match="batch size"):
    loaded.signatures["generate"](**{k: tf.constant(v)
                                     for k, v in feeds.items()})


def test_bad_input_in_a_tf1_session_is_invalid_argument(exported_lm):
  with pytest.raises(tf.errors.InvalidArgumentError, match="top_p"):
    run_tf1_session(exported_lm, "generate",
                    generate_request(["ROMEO:"], top_p=0.0))


def test_fresh_process_with_only_tensorflow_and_text(exported_lm, loaded):
  script = textwrap.dedent(f"""\
      import json, sys
      import tensorflow as tf
      import tensorflow_text
      loaded = tf.saved_model.load({exported_lm!r})
      out = loaded.signatures["generate"](
          prompt=tf.constant(["ROMEO:", "KING"]),
          max_new_tokens=tf.constant([5, 9]),
          temperature=tf.constant([0.0, 1.0]), top_k=tf.constant([0, 5]),
          top_p=tf.constant([1.0, 0.9]), seed=tf.constant([0, 7], tf.int64))
      score = loaded.signatures["score"](text=tf.constant(["ROMEO:"]))
      bad = [m for m in sys.modules if m.split(".")[0] in ("keras_hub",
             "zoo", "trainers", "export", "serving")]
      print(json.dumps({{
          "text": [t.decode() for t in out["text"].numpy()],
          "num_tokens": out["num_tokens"].numpy().tolist(),
          "score": score["log_likelihood"].numpy().tolist(), "bad": bad}}))
      """)
  env = python_env()
  env.pop("PYTHONPATH")  # nothing from this repo is importable
  result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  assert answer["bad"] == []
  texts, counts = call_generate(loaded, ["ROMEO:", "KING"],
                                max_new_tokens=[5, 9], temperature=[0.0, 1.0],
                                top_k=[0, 5], top_p=[1.0, 0.9], seed=[0, 7])
  assert answer["text"] == texts and answer["num_tokens"] == counts == [5, 9]
  expected = loaded.signatures["score"](text=tf.constant(["ROMEO:"]))
  np.testing.assert_allclose(answer["score"],
                             expected["log_likelihood"].numpy(), atol=1e-5)


def test_tfsmlayer_score_endpoint(exported_lm, loaded):
  score = keras.layers.TFSMLayer(exported_lm, call_endpoint="score")
  out = score(tf.constant(TEXTS[:2]))
  expected = loaded.signatures["score"](text=tf.constant(TEXTS[:2]))
  np.testing.assert_allclose(out["log_likelihood"].numpy(),
                             expected["log_likelihood"].numpy(), atol=1e-6)
  np.testing.assert_array_equal(out["num_tokens"].numpy(), [31, 6])


def test_saved_model_cli_shows_every_signature(exported_lm):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--all", "--dir", exported_lm],
                          env=python_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for key in SIGNATURES:
    assert f"signature_def['{key}']" in result.stdout
  for name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed",
               "log_likelihood", "num_tokens"):
    assert f"['{name}']" in result.stdout, name


def test_static_checks_pass_for_the_lm_export(exported_lm):
  assert checks.check_saved_model(exported_lm) == []


def test_warmup_file_has_one_record_a_signature_and_every_record_runs(
    exported_lm):
  logs = warmup.read_warmup_file(exported_lm)
  assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
  names = [log.predict_log.request.model_spec.signature_name for log in logs]
  # The stateful engine signatures are warmed up by the engine that drives them.
  assert sorted(names) == sorted(SIGNATURES - set(ENGINE_SIGNATURES))
  for log in logs:
    request = log.predict_log.request
    assert request.model_spec.name == "language_model"
    feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    _, out = run_tf1_session(exported_lm, request.model_spec.signature_name,
                             feeds)
    assert all(len(v) == 2 for v in out.values())


def test_score_over_validation_chunks_gives_the_dev_loss(loaded, exported_lm,
                                                         trained_lm_dir):
  # The run's own dev text (the last 10% of its training file, no
  # --eval_files), cut as evaluation cuts it, scored through the export.
  from trainers import language_model_data as data
  from trainers.tasks import task_for_model
  from zoo import model_dir as layout
  with open(os.path.join(exported_lm, "assets.extra", "model_card.json")) as f:
    dev_loss = json.load(f)["dev_metrics"]["loss"]
  run = layout.read_config(trained_lm_dir)
  validation = task_for_model(run["train"], run["model"]).eval_text()
  assert 0 < len(validation) < SHAKESPEARE_CHARS // 5
  chunks = data.character_chunks(validation, 32)
  out = loaded.signatures["score"](text=tf.constant(chunks))
  assert int(out["num_tokens"].numpy().sum()) == len(validation)
  loss = -out["log_likelihood"].numpy().sum() / len(validation)
  assert loss == pytest.approx(dev_loss, abs=1e-4)


def test_edge_cases_empty_batch_zero_budget_and_extreme_settings(loaded):
  empty = {k: tf.constant(v) for k, v in generate_request([]).items()}
  out = loaded.signatures["generate"](**empty)
  assert out["text"].shape == (0,) and out["num_tokens"].shape == (0,)
  out = loaded.signatures["score"](text=tf.constant([], tf.string))
  assert out["log_likelihood"].shape == (0,)
  texts, counts = call_generate(loaded, ["x" * 100], max_new_tokens=0)
  assert texts == [""] and counts == [0]
  texts, counts = call_generate(
      loaded, ["x" * 100, ""], max_new_tokens=31, temperature=[0.0, 50.0],
      top_k=[0, 10_000], seed=[-5, 2**62])
  assert counts == [31, 31] and [len(t) for t in texts] == [31, 31]
