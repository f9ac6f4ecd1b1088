"""Our encoder export served by our model server: gRPC Predict/Classify and REST."""

import json
import shutil
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import model_server


@pytest.fixture(scope="module")
def server(exported_model, tmp_path_factory):
  base = tmp_path_factory.mktemp("served") / "sst2"
  shutil.copytree(exported_model, base / "1")
  srv = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_name="sst2", model_base_path=str(base),
      file_system_poll_wait_seconds=0.2, enable_model_warmup=True)).start()
  assert srv.manager.wait_until_available(120)
  yield srv
  srv.stop(grace=0)


def test_grpc_predict_and_classify(server):
  channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "sst2"
  request.inputs["text"].CopyFrom(tf.make_tensor_proto(
      ["a wonderful film".encode(), b"", b"\xff not utf-8",
       "电影 😀".encode()]))
  response = stub.Predict(request, timeout=30)
  probabilities = tf.make_ndarray(response.outputs["probabilities"])
  assert probabilities.shape == (4, 2)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  assert set(tf.make_ndarray(response.outputs["label"])) <= {b"negative",
                                                              b"positive"}
  classify = classification_pb2.ClassificationRequest()
  classify.model_spec.name = "sst2"
  classify.model_spec.signature_name = "classify"
  example = classify.input.example_list.examples.add()
  example.features.feature["text"].bytes_list.value.append(b"a wonderful film")
  result = stub.Classify(classify, timeout=30).result.classifications[0]
  assert [c.label for c in result.classes] == ["negative", "positive"]
  np.testing.assert_allclose([c.score for c in result.classes],
                             probabilities[0], atol=1e-5)


def test_rest_predict(server):
  body = json.dumps({"instances": ["a wonderful film", "dull"]}).encode()
  request = urllib.request.Request(
      f"http://127.0.0.1:{server.rest_port}/v1/models/sst2:predict", data=body,
      headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=30) as response:
    predictions = json.load(response)["predictions"]
  assert len(predictions) == 2
  assert predictions[0]["label"] in ("negative", "positive")
  assert len(predictions[0]["probabilities"]) == 2
