"""--init_from_preset: fine-tuning from keras-hub BERT and DistilBERT presets.

Tiny presets with random weights are written by the test (tests/presets.py).
With a learning rate of 0 the exported model is the preset itself, so its
`encode` signature, run through the TF1 session loader as TF Serving runs
it, must give keras-hub's own outputs for the same raw strings; a real
fine-tuning run (DistilBERT, sentence pairs) is then served over gRPC.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from export.exporter import (ExportConfig, export_saved_model,
                             load_trained_model)
from tests import presets
from tests.conftest import python_env, tiny_config
from tests.export.test_export import run_tf1_session
from trainers.errors import UserError

SENTENCES = ["a gripping , funny film .", "Dull, and far TOO long!", "",
             "Café résumé 电影 😀", "great " * 100]
ATOL = 1e-4  # the export (graph, float32) against keras-hub eager


@pytest.fixture(scope="module")
def vocabulary():
  return presets.wordpiece_vocabulary(presets.bundled_lines()[:5000], 800)


def train(model_dir, data_dir, preset, **overrides):
  from trainers.loop import train_and_evaluate
  values = dict(init_from_preset=preset, train_steps=4, eval_every_steps=4,
                checkpoint_every_steps=4, batch_size=16,
                model_overrides="sequence_length=32")
  values.update(overrides)
  return train_and_evaluate(tiny_config(model_dir, data_dir, **values))


def test_unchanged_preset_exports_keras_hubs_outputs(tmp_path, sst2_subset,
                                                     vocabulary):
  import keras_hub
  preset = presets.make_wordpiece_preset(tmp_path / "bert", vocabulary,
                                         max_sequence_length=64)
  model_dir = tmp_path / "run"
  train(model_dir, sst2_subset, preset, learning_rate=0.0)
  with open(model_dir / "config.json") as f:
    model_config = json.load(f)["model"]
  assert model_config["pretrained"]["preset"] == preset
  assert model_config["pretrained"]["backbone"] == "BertBackbone"
  assert model_config["tokenizer"] == "preset_wordpiece"
  assert model_config["architecture"]["sequence_length"] == 32
  assert model_config["architecture"]["pooling"] == "pooler"

  export = export_saved_model(ExportConfig(model_dir=str(model_dir),
                                           export_base=str(tmp_path / "exp")))
  with open(os.path.join(export, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  assert card["pretrained"]["licence"] == "Apache-2.0"
  assert card["preset"] == "BertBackbone"

  hub_backbone = keras_hub.models.BertBackbone.from_preset(preset)
  hub_preprocess = keras_hub.models.BertTextClassifierPreprocessor(
      keras_hub.models.BertTokenizer.from_preset(preset), sequence_length=32)
  inputs = tf.function(hub_preprocess)(tf.constant(SENTENCES))
  expected = hub_backbone(inputs, training=False)
  _, out = run_tf1_session(export, "encode", {"text": SENTENCES})
  mask = inputs["padding_mask"].numpy()
  np.testing.assert_array_equal(out["mask"], mask[:, :out["mask"].shape[1]])
  width = out["sequence"].shape[1]
  np.testing.assert_allclose(
      out["sequence"] * out["mask"][..., None],
      expected["sequence_output"].numpy()[:, :width] * mask[:, :width, None],
      atol=ATOL)
  np.testing.assert_allclose(out["pooled"], expected["pooled_output"].numpy(),
                             atol=ATOL)

  # Inside a new Keras model, and in a fresh process with only tensorflow
  # and tensorflow_text.
  import keras
  encode = keras.layers.TFSMLayer(export, call_endpoint="encode")
  np.testing.assert_allclose(
      encode(tf.constant(SENTENCES))["pooled"].numpy(), out["pooled"],
      atol=1e-6)
  script = textwrap.dedent(f"""\
      import json, sys
      import tensorflow as tf
      import tensorflow_text
      loaded = tf.saved_model.load({export!r})
      out = loaded.signatures["encode"](text=tf.constant({SENTENCES!r}))
      bad = [m for m in sys.modules if m.split(".")[0] in ("keras_hub",
             "zoo", "trainers", "export", "serving")]
      print(json.dumps({{"pooled": out["pooled"].numpy().tolist(),
                         "bad": bad}}))
      """)
  env = python_env()
  env.pop("PYTHONPATH")
  result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  assert answer["bad"] == []
  np.testing.assert_allclose(answer["pooled"], out["pooled"], atol=1e-6)


def test_fine_tune_distil_bert_on_pairs_and_serve(tmp_path, sst2_subset,
                                                  vocabulary):
  from serving import model_server
  preset = presets.make_wordpiece_preset(tmp_path / "distil", vocabulary,
                                         kind="distil_bert")
  # Sentence pairs: the SST-2 sentence twice (a pair column of the same file).
  model_dir = tmp_path / "run"
  results = train(model_dir, sst2_subset, preset, text_pair_column="sentence",
                  learning_rate=5e-3, train_steps=12, eval_every_steps=12,
                  checkpoint_every_steps=12, export_dir=str(tmp_path / "exp"))
  assert results["steps"] == 12
  model = load_trained_model(str(model_dir), "latest")[0]
  trained = {w.path.split("/", 1)[1]: w.numpy() for w in model.weights}
  hub = presets.keras_hub_weights(preset)
  start = hub["transformer_layer_0/feedforward_intermediate_dense/kernel"]
  moved = trained["backbone/block_0/mlp_in/kernel"] - start
  assert 0 < np.abs(moved).max() < 0.2  # fine-tuned from the preset's weights
  export = results["export"]
  base = tmp_path / "served" / "pairs"
  shutil.copytree(export, base / "1")
  server = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_name="pairs", model_base_path=str(base),
      file_system_poll_wait_seconds=0.2, enable_model_warmup=True)).start()
  try:
    assert server.manager.wait_until_available(120)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pairs"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(
        [s.encode() for s in SENTENCES]))
    request.inputs["text_pair"].CopyFrom(tf.make_tensor_proto(
        [s.encode() for s in reversed(SENTENCES)]))
    response = stub.Predict(request, timeout=60)
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (len(SENTENCES), 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  finally:
    server.stop(grace=0)


@pytest.mark.parametrize("overrides,message", [
    (dict(model_overrides="hidden_dim=64"), "cannot change"),
    (dict(model_overrides="sequence_length=65"), "must be 2..64"),
    (dict(vocabulary_size=100), "brings its own vocabulary"),
    (dict(task="language_model", train_files=presets.SHAKESPEARE,
          eval_files="", model_overrides=""),
     r"is a BertBackbone \(the encoder family\); this task needs a decoder "
     r"preset: one of \['GPT2Backbone'\]"),
    (dict(task="translation"), "not supported by --task=translation"),
])
def test_bad_preset_runs_are_user_errors(tmp_path, sst2_subset, vocabulary,
                                         overrides, message):
  preset = presets.make_wordpiece_preset(tmp_path / "bert", vocabulary)
  with pytest.raises(UserError, match=message):
    train(tmp_path / "run", sst2_subset, preset, **overrides)


def test_a_missing_preset_is_a_user_error(tmp_path, sst2_subset):
  with pytest.raises(UserError, match="cannot read keras-hub preset"):
    train(tmp_path / "run", sst2_subset, str(tmp_path / "nowhere"))


def test_gpt2_preset_serves_keras_hubs_greedy_text(tmp_path, shakespeare_subset):
  """A GPT-2 preset (lr 0: the preset's own weights) exported and served:
  greedy `generate` over gRPC and the streamed engine both give the text
  keras-hub's GPT2CausalLM.generate gives after the prompt."""
  import keras_hub
  from serving import generation_service, model_server
  from tests.serving.test_decoder_served import generate_request, outputs
  lines = presets.bundled_lines()
  preset = presets.make_gpt2_preset(
      tmp_path / "gpt2", lines[-40000:] + ["Grüße, 東京 😀 naïve"] * 50)
  model_dir = tmp_path / "run"
  train(model_dir, shakespeare_subset, preset, task="language_model",
        learning_rate=0.0, train_steps=2, eval_every_steps=2,
        checkpoint_every_steps=2, batch_size=4, model_overrides="")
  with open(model_dir / "config.json") as f:
    model_config = json.load(f)["model"]
  assert model_config["tokenizer"] == "byte_pair"
  assert model_config["pretrained"]["licence"] == "MIT"
  export = export_saved_model(ExportConfig(model_dir=str(model_dir),
                                           export_base=str(tmp_path / "exp")))
  with open(os.path.join(export, "assets.extra", "model_card.json")) as f:
    limits = json.load(f)["limits"]
  assert "byte-level BPE" in limits["truncation"]
  assert limits["end_token"].startswith("generation stops after the end token")

  tokenizer = keras_hub.models.GPT2Tokenizer.from_preset(preset)
  causal_lm = keras_hub.models.GPT2CausalLM(
      backbone=keras_hub.models.GPT2Backbone.from_preset(preset),
      preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(
          tokenizer, sequence_length=64))
  causal_lm.compile(sampler="greedy")
  prompts = ["ROMEO:", "The king said", "Grüße 東", ""]
  new_tokens = 12
  expected = []
  for prompt in prompts:
    length = 1 + len(tokenizer(prompt)) + new_tokens  # start + prompt + new
    expected.append(causal_lm.generate(prompt, max_length=length))

  base = tmp_path / "served" / "gpt2"
  shutil.copytree(export, base / "1")
  server = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_name="gpt2", model_base_path=str(base),
      file_system_poll_wait_seconds=0.2, enable_model_warmup=True,
      generation_slots=2)).start()
  try:
    assert server.manager.wait_until_available(120)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = generate_request(prompts, [new_tokens] * len(prompts),
                               [0.0] * len(prompts), [0] * len(prompts),
                               [1.0] * len(prompts), [0] * len(prompts))
    request.model_spec.name = "gpt2"
    texts = [t.decode("utf-8", errors="replace")
             for t in outputs(stub.Predict(request, timeout=60))["text"]]
    assert [p + t for p, t in zip(prompts, texts)] == expected
    stream = generation_service.stub(channel)
    for prompt, text in zip(prompts, texts):
      request = generation_service.GenerateRequest(
          prompt=prompt, max_new_tokens=new_tokens)
      request.model_spec.name = "gpt2"
      pieces = [m.text for m in stream(request, timeout=60)]
      assert "".join(pieces) == text
  finally:
    server.stop(grace=0)
