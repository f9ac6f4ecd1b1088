"""Every generic task on the user's own files, end to end (tests/task_harness.py).

For each task the harness writes the user's files (CSV with quoted commas and
three string labels; JSONL; Greek -> Russian line-aligned text; gzipped
text) and trains the tiny preset on them twice with the same settings: once
through, in this process (trainers.loop.train_and_evaluate, exporting for the
families that serve), and once as `python -m trainers.train`, killed with
SIGKILL after its first checkpoint and rerun to the end.

test_kill_9_and_rerun_is_exact  every variable of the final checkpoint
    (weights, optimizer slots and step, dropout seed states) and the final
    and best dev metrics of the resumed run equal the uninterrupted run's.
test_serves_the_users_data  `python -m serving.server` (a real process on
    ports the OS picks) serves the export over REST (and for the classifier
    gRPC Predict and Classify) with the user's labels and languages, as the
    model card records them.
"""

import json
import os

import pytest

from tests import task_harness as harness

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """runs(task name) -> KilledAndUninterrupted, run once per task."""
  done = {}

  def get(name):
    if name not in done:
      case = harness.CASES[name]
      folder = tmp_path_factory.mktemp(name)
      done[name] = harness.kill_and_rerun(
          case, folder,
          str(folder / "exports" / name) if case.request is not None else "")
    return done[name]

  return get


def read_json(*path):
  with open(os.path.join(*path), encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.parametrize("name", list(harness.CASES))
def test_kill_9_and_rerun_is_exact(name, runs):
  run = runs(name)
  assert run.killed_after and max(
      int(c.split("-")[1]) for c in run.killed_after) < harness.STEPS
  resumed_at = [int(line.rsplit(" ", 1)[1])
                for line in run.rerun_log.splitlines() if "Resumed from" in line]
  assert resumed_at and resumed_at[0] < harness.STEPS
  final = os.path.join("checkpoints", f"ckpt-{harness.STEPS}")
  assert harness.differing_variables(os.path.join(run.uninterrupted, final),
                                     os.path.join(run.killed, final)) == []
  expected = read_json(run.uninterrupted, "results.json")
  resumed = read_json(run.killed, "results.json")
  assert resumed["steps"] == expected["steps"] == harness.STEPS
  assert resumed["final"] == expected["final"]
  assert resumed["best"] == expected["best"]


@pytest.mark.parametrize("name", harness.SERVED)
def test_serves_the_users_data(name, runs, tmp_path):
  case, run = harness.CASES[name], runs(name)
  results = run.results
  export_base = os.path.dirname(results["export"])
  assert os.path.basename(export_base) == name  # --export_dir's versions
  card = read_json(results["export"], "assets.extra", "model_card.json")
  assert card["task"] == case.name

  server = harness.ServerProcess(name, export_base, tmp_path / "server.log")
  try:
    server.wait_until_available()
    predictions = server.predict(case.request)
    assert len(predictions) == len(case.request["instances"])
    case.check(predictions, card)
    if name == "text_classification":
      # A few keywords decide the label: 40 steps learn them.
      assert results["best"]["accuracy"] >= 0.9
      assert [p["label"] for p in predictions] == ["billing", "bug", "other"]
      check_grpc_classifier(server, case.request["instances"], predictions)
  finally:
    code = server.stop()
  assert code == 0, server.log()[-3000:]


def test_sentencepiece_lm_export_scores_its_dev_text_like_its_checkpoint(runs):
  """trainers.evaluate of the export (line chunks counted by the `score`
  signature) gives the checkpoint's dev metrics (chunks counted by the
  tokenizer), with bits per character over the same characters."""
  from trainers.saved_models import trained_configs
  from trainers.tasks import task_for_model
  run = runs("language_model_sentencepiece")
  export = run.results["export"]
  task = task_for_model(*trained_configs(saved_model=export))
  metrics = task.evaluate_export(export, batch_size=16)
  best = run.results["best"]
  assert metrics["characters"] == best["characters"]
  assert metrics["tokens"] == best["tokens"] < best["characters"]
  assert metrics["chunks"] == best["chunks"]
  assert abs(metrics["loss"] - best["loss"]) < 1e-4
  assert abs(metrics["bits_per_character"] - best["bits_per_character"]) < 1e-4


def check_grpc_classifier(server, texts, rest_predictions):
  """gRPC Predict agrees with REST; Classify's classes are the user's labels
  in --labels order, with Predict's probabilities as scores."""
  import grpc
  import numpy as np
  import tensorflow as tf
  from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                       prediction_service_pb2_grpc)
  with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = server.model_name
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(
        [t.encode("utf-8") for t in texts]))
    response = stub.Predict(request, timeout=60)
    labels = [b.decode() for b in tf.make_ndarray(response.outputs["label"])]
    assert labels == [p["label"] for p in rest_predictions]
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(
        probabilities, [p["probabilities"] for p in rest_predictions],
        atol=1e-6)

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = server.model_name
    classify.model_spec.signature_name = "classify"
    for text in texts:
      example = classify.input.example_list.examples.add()
      example.features.feature["text"].bytes_list.value.append(
          text.encode("utf-8"))
    result = stub.Classify(classify, timeout=60).result
  assert len(result.classifications) == len(texts)
  for row, classification in zip(probabilities, result.classifications):
    assert [c.label for c in classification.classes] == harness.LABELS
    np.testing.assert_allclose([c.score for c in classification.classes],
                               row, atol=1e-5)
