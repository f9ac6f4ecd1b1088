"""The encoder export through every loader TF Serving and TF programs use."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import keras

from export import checks, warmup
from export.exporter import ExportConfig, export_saved_model, load_trained_model
from export.versioning import ExportError, existing_versions
from tests.conftest import python_env

SENTENCES = ["a gripping , funny film .", "dull and far too long .", "",
             "电影 😀 " * 50, "great " * 500]
PARITY_ATOL = 1e-5  # float32 graph vs eager Keras: summation-order noise only


def run_tf1_session(path, signature_key, feeds):
  """Loads like TF Serving's C++ loader and runs by SignatureDef tensor names."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    signature = meta_graph.signature_def[signature_key]
    fetches = {k: v.name for k, v in signature.outputs.items()}
    feed = {signature.inputs[k].name: v for k, v in feeds.items()}
    return signature, sess.run(fetches, feed)


def in_memory_probabilities(model_dir, sentences):
  model, tokenizer, _, _ = load_trained_model(model_dir)
  logits = model(tokenizer(tf.constant(sentences)), training=False)
  return tf.nn.softmax(logits).numpy(), model, tokenizer


def test_version_layout(exported_model):
  base = os.path.dirname(exported_model)
  assert os.path.basename(exported_model).isdigit()
  assert os.listdir(base) == [os.path.basename(exported_model)]  # no temp dirs
  for name in ("saved_model.pb", "variables", "assets/vocab.txt",
               "assets.extra/model_card.json",
               "assets.extra/tf_serving_warmup_requests"):
    assert os.path.exists(os.path.join(exported_model, name)), name


def test_tf1_session_loader_matches_in_memory_model(exported_model,
                                                    trained_model_dir):
  signature, out = run_tf1_session(exported_model, "serving_default",
                                   {"text": SENTENCES})
  assert signature.method_name == "tensorflow/serving/predict"
  expected, _, _ = in_memory_probabilities(trained_model_dir, SENTENCES)
  np.testing.assert_allclose(out["probabilities"], expected, atol=PARITY_ATOL)
  np.testing.assert_array_equal(out["label_id"], expected.argmax(-1))
  assert [l.decode() for l in out["label"]] == [
      ["negative", "positive"][i] for i in expected.argmax(-1)]


def test_short_batches_are_trimmed_without_changing_outputs(exported_model,
                                                            trained_model_dir):
  # Short sentences run on fewer columns than the model's sequence length;
  # the probabilities equal the full-length in-memory model's, alone or mixed.
  short = ["a gripping , funny film .", "dull", "not good at all ."]
  expected, _, tokenizer = in_memory_probabilities(trained_model_dir, short)
  assert np.count_nonzero(tokenizer(tf.constant(short)).numpy(), axis=1).max() < (
      tokenizer.sequence_length)
  _, batch = run_tf1_session(exported_model, "serving_default", {"text": short})
  np.testing.assert_allclose(batch["probabilities"], expected, atol=PARITY_ATOL)
  for i, sentence in enumerate(short):
    _, alone = run_tf1_session(exported_model, "serving_default",
                               {"text": [sentence]})
    np.testing.assert_allclose(alone["probabilities"][0], expected[i],
                               atol=PARITY_ATOL)
  _, empty = run_tf1_session(exported_model, "serving_default", {"text": []})
  assert empty["probabilities"].shape == (0, 2)


def test_large_batches_run_in_sorted_chunks_without_changing_outputs(
    exported_model, trained_model_dir):
  # More rows than SORTED_CHUNK_ROWS: rows of mixed lengths run in
  # length-sorted chunks; every row still gets its own probabilities, in
  # input order, as in the full-length in-memory model.
  from export.encoder_export import SORTED_CHUNK_ROWS
  rng = np.random.default_rng(0)
  words = "a gripping funny dull film not good at all too long".split()
  sentences = [" ".join(rng.choice(words, size=rng.integers(1, 40)))
               for _ in range(2 * SORTED_CHUNK_ROWS + 5)]
  expected, _, _ = in_memory_probabilities(trained_model_dir, sentences)
  _, batch = run_tf1_session(exported_model, "serving_default",
                             {"text": sentences})
  np.testing.assert_allclose(batch["probabilities"], expected,
                             atol=PARITY_ATOL)
  np.testing.assert_array_equal(batch["label_id"], expected.argmax(-1))
  examples = [tf.train.Example(features=tf.train.Features(feature={
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[s.encode()]))})).SerializeToString() for s in sentences]
  _, classified = run_tf1_session(exported_model, "classify",
                                  {"inputs": examples})
  np.testing.assert_allclose(classified["scores"], expected, atol=PARITY_ATOL)


def test_a_packed_run_with_the_conv_block_exports_with_parity(
    tmp_path, sst2_subset):
  # A model trained on packed rows, with the convolution in front of the
  # blocks, serves plain sentences: the export equals the in-memory model,
  # for short batches and for the length-sorted chunks of a large one.
  from tests.conftest import tiny_config
  from trainers.loop import train_and_evaluate
  model_dir = str(tmp_path / "conv_packed")
  train_and_evaluate(tiny_config(model_dir, sst2_subset, train_steps=4,
                                 pack_examples=True,
                                 model_overrides="conv_kernel_size=3"))
  keras.mixed_precision.set_global_policy("float32")
  path = export_saved_model(ExportConfig(model_dir=model_dir,
                                         export_base=str(tmp_path / "base")))
  rng = np.random.default_rng(1)
  words = "a gripping funny dull film not good at all too long".split()
  sentences = SENTENCES + [" ".join(rng.choice(words, size=rng.integers(1, 40)))
                           for _ in range(35)]
  expected, model, _ = in_memory_probabilities(model_dir, sentences)
  assert model.backbone.conv_kernel_size == 3
  for batch in (sentences[:3], sentences):
    _, out = run_tf1_session(path, "serving_default", {"text": batch})
    np.testing.assert_allclose(out["probabilities"], expected[:len(batch)],
                               atol=PARITY_ATOL)


def test_classify_signature_takes_tf_examples(exported_model, trained_model_dir):
  examples = [tf.train.Example(features=tf.train.Features(feature={
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[s.encode()]))})).SerializeToString() for s in SENTENCES[:2]]
  signature, out = run_tf1_session(exported_model, "classify",
                                   {"inputs": examples})
  assert signature.method_name == "tensorflow/serving/classify"
  assert set(signature.outputs) == {"classes", "scores"}
  expected, _, _ = in_memory_probabilities(trained_model_dir, SENTENCES[:2])
  np.testing.assert_allclose(out["scores"], expected, atol=PARITY_ATOL)
  assert out["classes"].tolist() == [[b"negative", b"positive"]] * 2


def test_encode_signature_features(exported_model, trained_model_dir):
  _, out = run_tf1_session(exported_model, "encode", {"text": SENTENCES[:2]})
  _, model, tokenizer = in_memory_probabilities(trained_model_dir, SENTENCES[:2])
  features = model.encode(tokenizer(tf.constant(SENTENCES[:2])))
  for key in ("pooled", "sequence", "mask"):
    np.testing.assert_allclose(out[key], features[key].numpy(),
                               atol=PARITY_ATOL)
  assert out["mask"].dtype == np.int32
  assert out["sequence"].shape[:2] == out["mask"].shape


def test_exported_tokenizer_equals_training_pipeline(exported_model,
                                                     trained_model_dir):
  # The classifier's eval pipeline (what the task's eval_dataset runs over
  # the dev file's (text, label) rows) on the same strings, "" included.
  from trainers import classification_data
  _, _, tokenizer = in_memory_probabilities(trained_model_dir, SENTENCES)
  examples = tf.data.Dataset.from_tensor_slices(
      (SENTENCES, np.zeros(len(SENTENCES), np.int64)))
  ds = classification_data.eval_dataset(examples, tokenizer, batch_size=8)
  piped = next(iter(ds))[0].numpy()  # trimmed to the batch's bucket width
  _, out = run_tf1_session(exported_model, "encode", {"text": SENTENCES})
  width = piped.shape[1]
  np.testing.assert_array_equal(out["mask"][:, :width], (piped != 0))
  assert out["mask"][:, width:].sum() == 0


def test_fresh_process_with_only_tensorflow_and_text(exported_model,
                                                     trained_model_dir):
  script = textwrap.dedent(f"""\
      import json, sys
      import tensorflow as tf
      import tensorflow_text
      loaded = tf.saved_model.load({exported_model!r})
      out = loaded.signatures["serving_default"](text=tf.constant({SENTENCES!r}))
      bad = [m for m in sys.modules if m.split(".")[0] in ("keras_hub",
             "zoo", "trainers", "export", "serving")]
      print(json.dumps({{"p": out["probabilities"].numpy().tolist(), "bad": bad}}))
      """)
  env = python_env()
  env.pop("PYTHONPATH")  # nothing from this repo is importable
  result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  assert answer["bad"] == []
  expected, _, _ = in_memory_probabilities(trained_model_dir, SENTENCES)
  np.testing.assert_allclose(answer["p"], expected, atol=PARITY_ATOL)


def test_tfsmlayer_inside_a_new_keras_model(exported_model):
  encode = keras.layers.TFSMLayer(exported_model, call_endpoint="encode",
                                  trainable=False)
  text = keras.Input(shape=(), dtype="string")
  pooled = encode(text)["pooled"]
  head = keras.layers.Dense(3, activation="softmax")(pooled)
  model = keras.Model(text, head)
  out = model(tf.constant(["great fun", "boring"]))
  assert out.shape == (2, 3)
  # The encoder is frozen; only the new head (kernel, bias) trains.
  assert len(model.trainable_weights) == 2
  model.compile("adam", "sparse_categorical_crossentropy")
  before = model.predict(tf.constant(["great fun"]), verbose=0)
  model.fit(tf.constant(["great fun", "boring"] * 8), np.array([0, 1] * 8),
            epochs=2, verbose=0)
  assert not np.allclose(before, model.predict(tf.constant(["great fun"]),
                                               verbose=0))


def test_saved_model_cli_shows_every_signature(exported_model):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--all", "--dir", exported_model],
                          env=python_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for key in ("serving_default", "classify", "encode"):
    assert f"signature_def['{key}']" in result.stdout
  assert "tensorflow/serving/classify" in result.stdout


def test_static_checks_pass_for_our_export(exported_model):
  assert checks.check_saved_model(exported_model) == []


def test_static_checks_catch_what_tf_serving_rejects(tmp_path):
  class Bad(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([3], tf.float32)])
    def not_batch_major(self, x):
      return {"y": x * 2}

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
    def ragged(self, x):
      return {"y": x.to_tensor()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)],
                 jit_compile=True)
    def xla(self, x):
      return {"y": x + 1}

  module = Bad()
  path = str(tmp_path / "bad")
  tf.saved_model.save(module, path, signatures={
      "serving_default": module.not_batch_major,
      "ragged": module.ragged, "xla": module.xla})
  problems = "\n".join(checks.check_saved_model(path))
  assert "dimension 0 must be the batch" in problems
  assert "XLA-compiled" in problems
  assert "takes a ragged or sparse input" in problems


def test_warmup_file_parses_and_every_record_runs(exported_model):
  logs = warmup.read_warmup_file(exported_model)
  kinds = sorted(log.WhichOneof("log_type") for log in logs)
  assert kinds == ["classify_log", "predict_log", "predict_log"]
  for log in logs:
    if log.WhichOneof("log_type") == "predict_log":
      request = log.predict_log.request
      feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      _, out = run_tf1_session(exported_model,
                               request.model_spec.signature_name, feeds)
    else:
      request = log.classify_log.request
      examples = [e.SerializeToString()
                  for e in request.input.example_list.examples]
      _, out = run_tf1_session(exported_model,
                               request.model_spec.signature_name,
                               {"inputs": examples})
    assert all(len(v) == 2 for v in out.values())


def test_model_card(exported_model):
  with open(os.path.join(exported_model, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  assert card["family"] == "encoder" and card["task"] == "text_classification"
  assert card["preset"] == "tiny" and card["labels"] == ["negative", "positive"]
  assert card["vocabulary_size"] > 5
  assert card["parameters"] > card["vocabulary_size"] * 32
  assert 0.0 <= card["dev_metrics"]["accuracy"] <= 1.0
  assert card["training_flags"]["train_steps"] == 40
  assert set(card["signatures"]) == {"serving_default", "classify", "encode"}
  assert card["signatures"]["classify"]["inputs"]["inputs"]["dtype"] == "string"
  assert card["versions"]["tensorflow"] == tf.__version__
  assert card["git_commit"]


def test_versions_grow_and_existing_version_is_refused(trained_model_dir,
                                                       tmp_path):
  base = str(tmp_path / "base")
  first = export_saved_model(ExportConfig(trained_model_dir, base))
  second = export_saved_model(ExportConfig(trained_model_dir, base))
  assert int(os.path.basename(second)) > int(os.path.basename(first))
  with pytest.raises(ExportError, match="already exists"):
    export_saved_model(ExportConfig(trained_model_dir, base,
                                    version=int(os.path.basename(first))))
  assert sorted(os.listdir(base)) == sorted(
      os.path.basename(p) for p in (first, second))  # no temp dir left


def test_missing_or_incomplete_model_dir(tmp_path):
  with pytest.raises(ExportError, match="no config.json"):
    export_saved_model(ExportConfig(str(tmp_path), str(tmp_path / "out")))
  (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
  with pytest.raises(ExportError, match="has no best checkpoint yet"):
    export_saved_model(ExportConfig(str(tmp_path), str(tmp_path / "out")))
  with pytest.raises(ExportError, match="has no latest checkpoint yet"):
    export_saved_model(ExportConfig(str(tmp_path), str(tmp_path / "out"),
                                    checkpoint="latest"))
  with pytest.raises(ExportError, match="checkpoint .*nowhere not found"):
    export_saved_model(ExportConfig(str(tmp_path), str(tmp_path / "out"),
                                    checkpoint=str(tmp_path / "nowhere")))
  assert existing_versions(str(tmp_path / "out")) == []


def test_model_config_without_warmup_examples_is_an_export_error(
    trained_model_dir, tmp_path):
  # A model_dir of an older trainer has no warmup_examples: the export stops
  # with an ExportError that says so, before it writes anything.
  import shutil
  model_dir = tmp_path / "old"
  shutil.copytree(trained_model_dir, model_dir)
  with open(model_dir / "config.json") as f:
    config = json.load(f)
  del config["model"]["warmup_examples"]
  (model_dir / "config.json").write_text(json.dumps(config))
  base = tmp_path / "base"
  with pytest.raises(ExportError, match=r"no warmup_examples\['text'\]"):
    export_saved_model(ExportConfig(str(model_dir), str(base)))
  assert existing_versions(str(base)) == []
  assert not base.exists() or os.listdir(base) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_export_base(trained_model_dir, tmp_path):
  base = tmp_path / "ro"
  base.mkdir(mode=0o500)
  with pytest.raises(ExportError, match="not writable"):
    export_saved_model(ExportConfig(trained_model_dir, str(base)))


def test_export_base_under_a_file_is_a_clear_error(trained_model_dir, tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ExportError, match="cannot create export base"):
    export_saved_model(ExportConfig(trained_model_dir,
                                    str(tmp_path / "file" / "base")))


def test_failed_write_leaves_nothing_behind(trained_model_dir, tmp_path,
                                            monkeypatch):
  from export import encoder_export

  def broken(*args, **kwargs):
    raise RuntimeError("disk full")

  monkeypatch.setattr(encoder_export, "build_archive", broken)
  base = tmp_path / "base"
  with pytest.raises(RuntimeError, match="disk full"):
    export_saved_model(ExportConfig(trained_model_dir, str(base)))
  assert os.listdir(base) == []


def test_cli_export_and_error(trained_model_dir, tmp_path):
  from tests.conftest import run_module
  ok = run_module("export.export_main", f"--model_dir={trained_model_dir}",
                  f"--export_base={tmp_path / 'cli'}")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert ok.stdout.strip().startswith(str(tmp_path / "cli"))
  bad = run_module("export.export_main", f"--model_dir={tmp_path / 'none'}",
                   f"--export_base={tmp_path / 'cli2'}")
  assert bad.returncode == 2 and "no config.json" in bad.stderr
  assert "Traceback" not in bad.stderr
