"""Our character-LM export served by our model server: gRPC generate, REST score."""

import json
import urllib.error

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tests.serving import conftest as served

MODEL = "shakespeare"


@pytest.fixture(scope="module")
def server(exported_lm, tmp_path_factory):
  yield from served.serve_export(exported_lm, MODEL, tmp_path_factory)


@pytest.fixture(scope="module")
def stub(server):
  yield from served.prediction_stub(server)


def generate_request(prompts, max_new_tokens, temperature, top_k, top_p, seed):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = "generate"
  for name, value, dtype in (
      ("prompt", [p.encode() for p in prompts], tf.string),
      ("max_new_tokens", max_new_tokens, tf.int32),
      ("temperature", temperature, tf.float32), ("top_k", top_k, tf.int32),
      ("top_p", top_p, tf.float32), ("seed", seed, tf.int64)):
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
  return request


def outputs(response):
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def test_grpc_generate_with_per_row_settings(stub, exported_lm):
  request = generate_request(["ROMEO:", "First Citizen:\n"], [4, 12],
                             [0.0, 0.9], [0, 20], [1.0, 0.95], [0, 7])
  response = stub.Predict(request, timeout=60)
  assert response.model_spec.signature_name == "generate"
  out = outputs(response)
  assert out["num_tokens"].tolist() == [4, 12]
  texts = [t.decode("utf-8") for t in out["text"]]
  assert [len(t) for t in texts] == [4, 12]
  # The server runs the export's own graph: the same answer as loading it.
  loaded = tf.saved_model.load(exported_lm).signatures["generate"]
  local = loaded(prompt=tf.constant(["ROMEO:", "First Citizen:\n"]),
                 max_new_tokens=tf.constant([4, 12]),
                 temperature=tf.constant([0.0, 0.9]),
                 top_k=tf.constant([0, 20]), top_p=tf.constant([1.0, 0.95]),
                 seed=tf.constant([0, 7], tf.int64))
  assert [t.decode() for t in local["text"].numpy()] == texts
  # The same request again: the same text (seeded sampling).
  again = outputs(stub.Predict(request, timeout=60))
  assert [t.decode() for t in again["text"]] == texts


def test_bad_request_is_invalid_argument_and_server_keeps_serving(stub):
  bad = generate_request(["ROMEO:", "KING"], [4, 4], [0.5, -1.0], [0, 0],
                         [1.0, 1.0], [0, 1])
  with pytest.raises(grpc.RpcError) as info:
    stub.Predict(bad, timeout=60)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "temperature" in info.value.details()
  mismatched = generate_request(["ROMEO:", "KING"], [4], [0.0, 0.0], [0, 0],
                                [1.0, 1.0], [0, 1])
  with pytest.raises(grpc.RpcError) as info:
    stub.Predict(mismatched, timeout=60)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  good = generate_request(["KING"], [3], [0.0], [0], [1.0], [0])
  assert outputs(stub.Predict(good, timeout=60))["num_tokens"].tolist() == [3]


def rest_predict(server, body):
  return served.rest_predict(server, MODEL, body, timeout=60)


def test_rest_score_with_instances(server, exported_lm):
  texts = ["ROMEO:", "First Citizen:\nBefore we proceed", ""]
  rows = rest_predict(server, {"signature_name": "score",
                               "instances": [{"text": t} for t in texts]})
  predictions = rows["predictions"]
  assert [p["num_tokens"] for p in predictions] == [6, 31, 0]
  expected = tf.saved_model.load(exported_lm).signatures["score"](
      text=tf.constant(texts))["log_likelihood"].numpy()
  np.testing.assert_allclose([p["log_likelihood"] for p in predictions],
                             expected, rtol=1e-6)
  # A signature with one input also takes bare values as instances.
  bare = rest_predict(server, {"signature_name": "score",
                               "instances": texts})["predictions"]
  assert bare == predictions


def test_rest_generate_rows_and_bad_request(server):
  rows = [{"prompt": "ROMEO:", "max_new_tokens": 5, "temperature": 0.0,
           "top_k": 0, "top_p": 1.0, "seed": 0},
          {"prompt": "KING", "max_new_tokens": 2, "temperature": 1.0,
           "top_k": 5, "top_p": 0.9, "seed": 3}]
  predictions = rest_predict(server, {"signature_name": "generate",
                                      "instances": rows})["predictions"]
  assert [p["num_tokens"] for p in predictions] == [5, 2]
  assert [len(p["text"]) for p in predictions] == [5, 2]
  rows[1]["top_p"] = 0.0
  with pytest.raises(urllib.error.HTTPError) as info:
    rest_predict(server, {"signature_name": "generate", "instances": rows})
  assert info.value.code == 400
  assert "top_p" in json.load(info.value)["error"]
