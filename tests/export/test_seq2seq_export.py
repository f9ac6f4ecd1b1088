"""The seq2seq (translator) export: signatures, loaders, parity, bad input."""

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
from export.exporter import load_trained_model
from export.seq2seq_export import translate_text
from tests.conftest import MULTI30K_EVAL_ROWS, python_env, run_module
from tests.export.test_export import run_tf1_session

SIGNATURES = {"serving_default", "translate"}
MAX_BEAM = 4  # the tiny preset's max_beam_size
LONGEST = 30  # sequence_length 32 - 2
NEG = np.float32(-1e9)
SCORE_ATOL = 1e-4  # the export's graph vs the in-memory model
SOURCES = ["Ein Hund läuft durch den Park.",
           "Zwei Männer spielen Fußball auf einer Wiese.", "", "电影 😀",
           "Hund " * 500]


@functools.lru_cache(maxsize=None)
def trained(model_dir):
  """(model, tokenizer, translate graph) restored in memory, as export does."""
  model, tokenizer, _, _ = load_trained_model(model_dir)
  fn = tf.function(lambda **kwargs: translate_text(model, tokenizer, **kwargs))
  return model, tokenizer, fn


@pytest.fixture(scope="module")
def loaded(exported_mt):
  return tf.saved_model.load(exported_mt)


def request(sources, beam_size=MAX_BEAM, max_output_length=LONGEST,
            length_penalty=0.6):
  """Feeds for the `translate` signature; scalars repeat for every source."""
  batch = len(sources)

  def column(value, dtype):
    return np.broadcast_to(np.asarray(value, dtype), [batch]).copy()
  return {"source": np.array([s if isinstance(s, bytes) else s.encode()
                              for s in sources], object).reshape([batch]),
          "beam_size": column(beam_size, np.int32),
          "max_output_length": column(max_output_length, np.int32),
          "length_penalty": column(length_penalty, np.float32)}


def tensors(feeds):
  return {k: tf.constant(v, tf.string if k == "source" else None)
          for k, v in feeds.items()}


def decoded(translations):
  return [[t.decode("utf-8") for t in row] for row in translations]


def call_translate(loaded, sources, **kwargs):
  out = loaded.signatures["translate"](**tensors(request(sources, **kwargs)))
  return decoded(out["translations"].numpy()), out["scores"].numpy()


def test_version_layout_and_model_card(exported_mt):
  base = os.path.dirname(exported_mt)
  assert os.path.basename(exported_mt).isdigit()
  assert os.listdir(base) == [os.path.basename(exported_mt)]  # no temp dirs
  for name in ("saved_model.pb", "variables", "assets.extra/model_card.json",
               "assets.extra/tf_serving_warmup_requests"):
    assert os.path.exists(os.path.join(exported_mt, name)), name
  with open(os.path.join(exported_mt, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  assert card["family"] == "seq2seq" and card["task"] == "translation"
  assert card["preset"] == "tiny" and card["labels"] is None
  assert card["architecture"]["sequence_length"] == 32
  assert card["checkpoint"].startswith("best" + os.sep)
  assert card["dev_metrics"]["loss"] > 0
  limits = card["limits"]
  assert limits["max_beam_size"] == MAX_BEAM
  assert limits["max_source_pieces"] == 32
  assert limits["max_output_length"] == f"1 to {LONGEST} pieces"
  assert limits["languages"] == "de -> en"
  assert set(card["signatures"]) == SIGNATURES
  translate = card["signatures"]["translate"]
  assert translate["method"] == "tensorflow/serving/predict"
  assert translate["inputs"] == {
      "beam_size": {"dtype": "int32", "shape": [-1]},
      "length_penalty": {"dtype": "float32", "shape": [-1]},
      "max_output_length": {"dtype": "int32", "shape": [-1]},
      "source": {"dtype": "string", "shape": [-1]}}
  assert set(translate["outputs"]) == {"translations", "scores"}
  assert translate["outputs"]["translations"]["dtype"] == "string"
  assert translate["outputs"]["scores"]["dtype"] == "float32"
  assert card["signatures"]["serving_default"]["outputs"] == {
      "translation": {"dtype": "string", "shape": [-1]}}
  assert card["parameters"] > card["vocabulary_size"] * 32


def test_tf1_session_loader_runs_both_signatures(exported_mt, loaded):
  signature, out = run_tf1_session(exported_mt, "serving_default",
                                   {"source": [s.encode() for s in SOURCES]})
  assert signature.method_name == "tensorflow/serving/predict"
  assert set(out) == {"translation"} and out["translation"].shape == (5,)
  # serving_default is the best of translate at beam 4, alpha 0.6, full length.
  texts, _ = call_translate(loaded, SOURCES)
  assert [t.decode() for t in out["translation"]] == [row[0] for row in texts]
  signature, out = run_tf1_session(
      exported_mt, "translate",
      request(SOURCES[:2], beam_size=[1, 3], max_output_length=[5, 20],
              length_penalty=[0.0, 1.0]))
  assert set(out) == {"translations", "scores"}
  assert out["translations"].shape == out["scores"].shape == (2, MAX_BEAM)
  assert out["translations"][0, 1:].tolist() == [b""] * 3
  assert np.all(out["scores"][0, 1:] == NEG) and out["scores"][0, 0] > NEG / 2
  assert out["translations"][1, 3] == b"" and out["scores"][1, 3] == NEG
  assert np.all(out["scores"][1, :3] > NEG / 2)
  assert np.all(np.diff(out["scores"][1, :3]) <= 0)


def test_translate_equals_in_memory_translate_text(loaded, trained_mt_dir):
  settings = dict(beam_size=[1, 4, 2, 3, 4],
                  max_output_length=[LONGEST, 10, LONGEST, 5, LONGEST],
                  length_penalty=[0.0, 0.6, 1.0, 0.6, 0.0])
  texts, scores = call_translate(loaded, SOURCES, **settings)
  _, _, fn = trained(trained_mt_dir)
  expected = fn(**tensors(request(SOURCES, **settings)))
  assert texts == decoded(expected["translations"].numpy())
  np.testing.assert_allclose(scores, expected["scores"].numpy(),
                             atol=SCORE_ATOL)
  for row, b in enumerate(settings["beam_size"]):
    assert texts[row][b:] == [""] * (MAX_BEAM - b)
    assert np.all(scores[row, b:] == NEG) and np.all(scores[row, :b] > NEG / 2)


def test_scores_are_the_model_log_probability_over_the_length_penalty(
    loaded, trained_mt_dir):
  model, tokenizer, _ = trained(trained_mt_dir)
  sources = SOURCES[:2]
  alpha = 0.6
  texts, scores = call_translate(loaded, sources, beam_size=3,
                                 length_penalty=alpha)
  tokens, _ = model.translate(tokenizer(tf.constant(sources)),
                              tf.constant([3, 3]), tf.constant([LONGEST] * 2),
                              tf.constant([alpha] * 2))
  tokens = tokens.numpy()  # [2, 3, T - 1]
  for row in range(2):
    for j in range(3):  # the texts are the detokenized beams
      assert texts[row][j] == tokenizer.detokenize(
          tokens[row, j:j + 1]).numpy()[0].decode()
  log_probability = model.log_probability(
      tokenizer(tf.constant(np.repeat(sources, 3))),
      tf.constant(tokens.reshape(6, -1))).numpy()
  n = (tokens != 0).sum(-1).reshape(6)
  np.testing.assert_allclose(scores[:, :3].reshape(6),
                             log_probability / ((5.0 + n) / 6.0) ** alpha,
                             atol=SCORE_ATOL)


def test_empty_unknown_and_over_long_sources_translate(loaded):
  sources = ["", "电影 😀", b"\xff\xfe", "Hund " * 500, "Hund " * 1000]
  texts, scores = call_translate(loaded, sources)
  assert len(texts) == 5 and all(len(row) == MAX_BEAM for row in texts)
  assert np.all(scores > NEG / 2)  # every beam is real at beam 4
  # Over-long sources keep their first pieces: both are the same source.
  assert texts[3] == texts[4]
  np.testing.assert_allclose(scores[3], scores[4], atol=1e-5)


def test_an_empty_batch_gives_empty_outputs(loaded):
  texts, scores = call_translate(loaded, [])
  assert texts == [] and scores.shape[0] == 0


def bad_requests():
  yield "beam_size must be >= 1", dict(beam_size=[0, 4])
  yield f"beam_size must be <= {MAX_BEAM}", dict(beam_size=[4, MAX_BEAM + 1])
  yield "max_output_length must be >= 1", dict(max_output_length=[0, 10])
  yield f"max_output_length must be <= {LONGEST}", dict(
      max_output_length=[10, LONGEST + 1])
  yield "length_penalty must be >= 0", dict(length_penalty=[0.6, -1.0])


@pytest.mark.parametrize("message, bad", list(bad_requests()))
def test_bad_settings_are_invalid_argument(loaded, message, bad):
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    call_translate(loaded, ["Hallo", "Ein Hund."], **bad)


@pytest.mark.parametrize("name", ["beam_size", "max_output_length",
                                  "length_penalty"])
def test_mismatched_batch_sizes_are_invalid_argument(loaded, name):
  feeds = request(["Hallo", "Ein Hund.", "Zwei Katzen."])
  feeds[name] = feeds[name][:2]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"{name} must have one value per source"):
    loaded.signatures["translate"](**tensors(feeds))


def test_bad_input_in_a_tf1_session_is_invalid_argument(exported_mt):
  with pytest.raises(tf.errors.InvalidArgumentError, match="beam_size"):
    run_tf1_session(exported_mt, "translate",
                    request(["Hallo"], beam_size=MAX_BEAM + 1))


def test_fresh_process_with_only_tensorflow_and_text(exported_mt, loaded):
  script = textwrap.dedent(f"""\
      import json, sys
      import tensorflow as tf
      import tensorflow_text
      loaded = tf.saved_model.load({exported_mt!r})
      out = loaded.signatures["translate"](
          source=tf.constant(["Ein Hund läuft.", "Zwei Männer."]),
          beam_size=tf.constant([1, 4]),
          max_output_length=tf.constant([30, 12]),
          length_penalty=tf.constant([0.0, 0.6]))
      default = loaded.signatures["serving_default"](
          source=tf.constant(["Ein Hund läuft."]))
      bad = [m for m in sys.modules if m.split(".")[0] in ("keras_hub",
             "zoo", "trainers", "export", "serving", "sentencepiece")]
      print(json.dumps({{
          "translations": [[t.decode() for t in row]
                           for row in out["translations"].numpy()],
          "scores": out["scores"].numpy().tolist(),
          "default": [t.decode() for t in default["translation"].numpy()],
          "bad": bad}}))
      """)
  env = python_env()
  env.pop("PYTHONPATH")  # nothing from this repo is importable
  result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  assert answer["bad"] == []
  texts, scores = call_translate(loaded, ["Ein Hund läuft.", "Zwei Männer."],
                                 beam_size=[1, 4], max_output_length=[30, 12],
                                 length_penalty=[0.0, 0.6])
  assert answer["translations"] == texts
  np.testing.assert_allclose(answer["scores"], scores, atol=1e-5)
  default, _ = call_translate(loaded, ["Ein Hund läuft."])
  assert answer["default"] == [default[0][0]]


def test_tfsmlayer_translate_endpoint(exported_mt, loaded):
  layer = keras.layers.TFSMLayer(exported_mt, call_endpoint="translate")
  feeds = tensors(request(SOURCES[:2], beam_size=[2, 4]))
  source = feeds.pop("source")
  out = layer(source, **feeds)
  texts, scores = call_translate(loaded, SOURCES[:2], beam_size=[2, 4])
  assert decoded(out["translations"].numpy()) == texts
  np.testing.assert_allclose(out["scores"].numpy(), scores, atol=1e-6)
  default = keras.layers.TFSMLayer(exported_mt,
                                   call_endpoint="serving_default")
  assert [t.decode() for t in default(source)["translation"].numpy()] == [
      row[0] for row in call_translate(loaded, SOURCES[:2])[0]]


def test_saved_model_cli_shows_both_signatures(exported_mt):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--all", "--dir", exported_mt],
                          env=python_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for key in SIGNATURES:
    assert f"signature_def['{key}']" in result.stdout
  for name in ("source", "beam_size", "max_output_length", "length_penalty",
               "translations", "scores", "translation"):
    assert f"['{name}']" in result.stdout, name


def test_static_checks_pass_for_the_translator_export(exported_mt):
  assert checks.check_saved_model(exported_mt) == []


def test_warmup_file_has_one_record_a_signature_and_every_record_runs(
    exported_mt):
  logs = warmup.read_warmup_file(exported_mt)
  assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 2
  names = [log.predict_log.request.model_spec.signature_name for log in logs]
  assert sorted(names) == sorted(SIGNATURES)
  for log in logs:
    request_proto = log.predict_log.request
    assert request_proto.model_spec.name == "translation"
    feeds = {k: tf.make_ndarray(v) for k, v in request_proto.inputs.items()}
    _, out = run_tf1_session(exported_mt,
                             request_proto.model_spec.signature_name, feeds)
    assert all(len(v) == 2 for v in out.values())


def test_evaluate_through_the_export_equals_through_the_checkpoint(
    exported_mt, trained_mt_dir, multi30k_subset, tmp_path):
  runs = {}
  for name, source in (("export", f"--saved_model={exported_mt}"),
                       ("checkpoint", f"--model_dir={trained_mt_dir}")):
    result = run_module(
        "trainers.evaluate", source, "--checkpoint=best",
        f"--eval_source_files={multi30k_subset}/test_2016_flickr.de",
        f"--eval_target_files={multi30k_subset}/test_2016_flickr.en",
        f"--output_json={tmp_path / name}.json",
        f"--hypotheses_file={tmp_path / name}.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{tmp_path / name}.json") as f:
      runs[name] = json.load(f)
    with open(f"{tmp_path / name}.txt", encoding="utf-8") as f:
      runs[name]["hypotheses"] = f.read()
  export, checkpoint = runs["export"], runs["checkpoint"]
  assert export["sentences"] == checkpoint["sentences"] == MULTI30K_EVAL_ROWS
  assert export["hypotheses"] == checkpoint["hypotheses"]
  for key in ("bleu", "bleu_ci95", "bleu_signature", "chrf", "chrf_signature",
              "max_output_length", "examples"):
    assert export[key] == checkpoint[key], key
