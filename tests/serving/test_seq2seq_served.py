"""Our translator export served by our model server: gRPC translate, REST."""

import json
import urllib.error

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the text ops for tf.saved_model.load
from tensorflow_serving.apis import predict_pb2

from tests.serving import conftest as served

MODEL = "multi30k_de_en"
MAX_BEAM = 4
NEG = np.float32(-1e9)


@pytest.fixture(scope="module")
def server(exported_mt, tmp_path_factory):
  yield from served.serve_export(exported_mt, MODEL, tmp_path_factory)


@pytest.fixture(scope="module")
def stub(server):
  yield from served.prediction_stub(server)


@pytest.fixture(scope="module")
def loaded(exported_mt):
  return tf.saved_model.load(exported_mt)


def translate_request(sources, beam_size, max_output_length, length_penalty):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = "translate"
  for name, value, dtype in (
      ("source", [s.encode() for s in sources], tf.string),
      ("beam_size", beam_size, tf.int32),
      ("max_output_length", max_output_length, tf.int32),
      ("length_penalty", length_penalty, tf.float32)):
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
  return request


def outputs(response):
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def test_grpc_translate_with_per_row_beam_sizes(stub, loaded):
  sources = ["Ein Hund läuft.", "Zwei Männer spielen Fußball.", ""]
  settings = ([1, 4, 2], [30, 30, 10], [0.0, 0.6, 1.0])
  response = stub.Predict(translate_request(sources, *settings), timeout=120)
  assert response.model_spec.signature_name == "translate"
  out = outputs(response)
  assert out["translations"].shape == out["scores"].shape == (3, MAX_BEAM)
  # The server runs the export's own graph: the same answer as loading it.
  local = loaded.signatures["translate"](
      source=tf.constant(sources), beam_size=tf.constant(settings[0]),
      max_output_length=tf.constant(settings[1]),
      length_penalty=tf.constant(settings[2]))
  assert out["translations"].tolist() == local["translations"].numpy().tolist()
  np.testing.assert_allclose(out["scores"], local["scores"].numpy(),
                             atol=1e-6)
  for row, b in enumerate(settings[0]):
    assert out["translations"][row, b:].tolist() == [b""] * (MAX_BEAM - b)
    assert np.all(out["scores"][row, b:] == NEG)
    assert np.all(out["scores"][row, :b] > NEG / 2)
    assert np.all(np.diff(out["scores"][row, :b]) <= 0)


def test_beam_size_above_the_maximum_is_invalid_argument_and_server_serves_on(
    stub):
  bad = translate_request(["Hallo", "Ein Hund."], [2, MAX_BEAM + 1], [10, 10],
                          [0.6, 0.6])
  with pytest.raises(grpc.RpcError) as info:
    stub.Predict(bad, timeout=60)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert f"beam_size must be <= {MAX_BEAM}" in info.value.details()
  good = translate_request(["Hallo"], [2], [10], [0.6])
  out = outputs(stub.Predict(good, timeout=60))
  assert out["scores"].shape == (1, MAX_BEAM)
  assert np.all(out["scores"][0, :2] > NEG / 2)


def rest_predict(server, body):
  return served.rest_predict(server, MODEL, body)


def test_rest_serving_default_with_instances(server, loaded):
  sources = ["Ein Hund läuft.", "Zwei Männer spielen Fußball.", ""]
  rows = rest_predict(server, {"instances": [{"source": s} for s in sources]})
  expected = [t.decode() for t in loaded.signatures["serving_default"](
      source=tf.constant(sources))["translation"].numpy()]
  assert rows["predictions"] == expected  # one output: bare values
  bare = rest_predict(server, {"signature_name": "serving_default",
                               "instances": sources})
  assert bare["predictions"] == expected
  columnar = rest_predict(server, {"inputs": {"source": sources}})
  assert columnar["outputs"] == expected


def test_rest_translate_rows_and_bad_request(server, loaded):
  rows = [{"source": "Ein Hund läuft.", "beam_size": 3,
           "max_output_length": 20, "length_penalty": 0.6},
          {"source": "Zwei Männer.", "beam_size": 1, "max_output_length": 5,
           "length_penalty": 0.0}]
  predictions = rest_predict(server, {"signature_name": "translate",
                                      "instances": rows})["predictions"]
  local = loaded.signatures["translate"](
      source=tf.constant([r["source"] for r in rows]),
      beam_size=tf.constant([3, 1]), max_output_length=tf.constant([20, 5]),
      length_penalty=tf.constant([0.6, 0.0]))
  assert [p["translations"] for p in predictions] == [
      [t.decode() for t in row] for row in local["translations"].numpy()]
  np.testing.assert_allclose([p["scores"] for p in predictions],
                             local["scores"].numpy(), rtol=1e-6)
  assert predictions[1]["translations"][1:] == ["", "", ""]
  rows[1]["length_penalty"] = -1.0
  with pytest.raises(urllib.error.HTTPError) as info:
    rest_predict(server, {"signature_name": "translate", "instances": rows})
  assert info.value.code == 400
  assert "length_penalty must be >= 0" in json.load(info.value)["error"]
