"""Malformed requests over gRPC and HTTP: each gets an error, the server keeps serving.

1100 random ones, then each case of issue 20's outside fuzz and load test:
declared sizes far beyond the payload, the row limit, 100,000-character
names, JSON numbers past a double, and no traceback in the log for any of it.
"""

import base64
import json
import logging
import random
import socket

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import error_log
from serving import errors
from tests.serving.conftest import channel
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request
from tests.serving.conftest import rest_url

_METHODS = ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata")


def _random_tensor(rng):
  """A TensorProto that cannot be a valid `text` input (string[-1])."""
  t = tensor_pb2.TensorProto()
  kind = rng.randrange(6)
  if kind == 0:  # Wrong dtype, plausible values.
    t.dtype = rng.choice([types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64,
                          types_pb2.DT_BOOL, types_pb2.DT_DOUBLE, 77, 999])
    t.tensor_shape.dim.add().size = rng.randrange(0, 5)
    t.float_val.extend([rng.random() for _ in range(rng.randrange(4))])
  elif kind == 1:  # Rank 0, which the model's kernels refuse (a stack along axis 1).
    # Ranks 2 and 3 are not in here: the server feeds them as TF Serving does
    # (no static shape check) and this model's ops happen to compute them.
    t.dtype = types_pb2.DT_STRING
    t.string_val.append(b"x")
  elif kind == 2:  # Negative or absurd dimensions.
    t.dtype = types_pb2.DT_STRING
    t.tensor_shape.dim.add().size = rng.choice([-1, -7, 2**40, 2**62])
    t.string_val.append(b"x")
  elif kind == 3:  # tensor_content whose size does not match.
    t.dtype = types_pb2.DT_FLOAT
    t.tensor_shape.dim.add().size = 3
    t.tensor_content = rng.randbytes(rng.choice([1, 5, 13]))
  elif kind == 4:  # Unknown rank with a wrong dtype.
    t.dtype = types_pb2.DT_HALF
    t.tensor_shape.unknown_rank = True
  else:  # Value of another type only.
    t.dtype = types_pb2.DT_INT64
    t.tensor_shape.dim.add().size = 1
    t.int64_val.append(rng.randrange(-2**63, 2**63))
  return t


def _grpc_cases(rng, n):
  cases = []
  for i in range(n):
    kind = i % 4
    if kind == 0:  # Random bytes as the serialized request of a random method.
      cases.append((rng.choice(_METHODS), rng.randbytes(rng.randrange(0, 200))))
    elif kind == 1:  # A valid model but a malformed tensor.
      request = predict_request(texts=None)
      request.inputs["text"].CopyFrom(_random_tensor(rng))
      cases.append(("Predict", request.SerializeToString()))
    elif kind == 2:  # Wrong / extra / missing input names, unknown signature or model.
      request = predict_request(texts=None if rng.random() < 0.3 else [b"a"],
                                name=rng.choice(["m", "m", "zz", ""]),
                                signature=rng.choice(["", "nope", "two_inputs"]))
      if rng.random() < 0.7:
        request.inputs[rng.choice(["bogus", "Text", "n"])].CopyFrom(
            tf.make_tensor_proto([1.0]))
      if request.model_spec.name == "m" and request.model_spec.signature_name == "" \
          and list(request.inputs) == ["text"]:
        request.model_spec.version.value = 99  # Otherwise it would be a valid request.
      cases.append(("Predict", request.SerializeToString()))
    else:  # Invalid UTF-8 in string fields of the proto itself (model name).
      raw = predict_request().SerializeToString()
      cases.append(("Predict", raw.replace(b"\n\x01m", b"\n\x02\xff\xfe", 1)))
  return cases


def _http_cases(rng, n):
  good_b64 = base64.b64encode(b"hello").decode()
  templates = [
      lambda: rng.randbytes(rng.randrange(1, 100)),
      lambda: json.dumps({"instances": ["ok"]}).encode()[:rng.randrange(1, 18)],
      lambda: json.dumps({"instances": [{"b64": good_b64[:rng.randrange(1, 7)] + "!"}]}).encode(),
      lambda: json.dumps({"inputs": [rng.random()]}).encode(),
      lambda: json.dumps({"instances": [[rng.randrange(5)] * rng.randrange(1, 3)]}).encode(),
      lambda: json.dumps({"instances": rng.choice([{}, 3, "x", None, []])}).encode(),
      lambda: b'{"instances": ["' + rng.randbytes(4).replace(b'"', b"") + b'\xff"]}',
      lambda: ("[" * rng.randrange(50, 3000) + "]" * 10).encode(),
      lambda: json.dumps({"signature_name": rng.choice([1, None, [], "zz"]),
                          "instances": ["x"]}).encode(),
      lambda: json.dumps({"signature_name": "two_inputs",
                          "instances": [{"a": [1, 2, 3], "b": rng.choice([1.5, "1", None])}]}).encode(),
      lambda: json.dumps({"instances": ["x"], "inputs": ["y"]}).encode(),
      lambda: b"x" * (300 * 1024),
  ]
  paths = ["/v1/models/m:predict"] * 6 + [
      "/v1/models/m:classify", "/v1/models/m:regress", "/v1/models/zz:predict",
      "/v1/models/m/versions/99999999999999999999:predict", "/v1/models/m:explode",
      "/v1/models/m/labels/%ff:predict"]
  cases = []
  for i in range(n):
    path = paths[i % len(paths)]
    body = templates[rng.randrange(len(templates))]()
    if path == "/v1/models/m:predict" and body.startswith(b"{\"inputs\": [0."):
      body = body.replace(b"inputs", b"inptus")
    cases.append((path, body))
  return cases


def _assert_serves(stub):
  response = stub.Predict(predict_request(texts=[b"still fine"]), timeout=30)
  assert list(tf.make_ndarray(response.outputs["label"])) == [b"positive"]


def test_malformed_requests_all_fail_cleanly(tf2_server):
  rng = random.Random(1234)
  with channel(tf2_server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    _assert_serves(stub)
    grpc_errors = 0
    for i, (method, payload) in enumerate(_grpc_cases(rng, 600)):
      call = ch.unary_unary(f"/tensorflow.serving.PredictionService/{method}")
      try:
        call(payload, timeout=30)
      except grpc.RpcError as e:
        assert e.code() != grpc.StatusCode.OK
        assert e.code() not in (grpc.StatusCode.UNKNOWN,) or method != "Predict", e.details()
        grpc_errors += 1
      else:
        raise AssertionError(f"case {i} ({method}) succeeded: {payload[:80]!r}")
      if i % 100 == 0:
        _assert_serves(stub)
    assert grpc_errors == 600

    url = rest_url(tf2_server)
    session = requests.Session()
    for i, (path, body) in enumerate(_http_cases(rng, 500)):
      r = session.post(url + path, data=body, timeout=30)
      assert 400 <= r.status_code < 600, (i, path, body[:80], r.text[:200])
      assert r.status_code != 500, (i, path, body[:80], r.text[:200])
      assert "error" in r.json()
      if i % 100 == 0:
        _assert_serves(stub)
    _assert_serves(stub)
    r = session.post(url + "/v1/models/m:predict", json={"instances": ["still fine"]}, timeout=30)
    assert r.json()["predictions"][0]["label"] == "positive"
    # Random TensorProto bytes inside an otherwise valid request.
    for _ in range(20):
      request = predict_request(texts=None)
      try:
        request.inputs["text"].ParseFromString(rng.randbytes(rng.randrange(1, 60)))
      except Exception:  # pylint: disable=broad-except
        continue
      if request.inputs["text"].dtype == types_pb2.DT_STRING:
        continue
      try:
        stub.Predict(request, timeout=30)
      except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
      else:
        raise AssertionError("a wrong-dtype tensor was accepted")
    _assert_serves(stub)
    np.testing.assert_equal(tf2_server.manager.all_models_available(), True)


# ---- hardening (issue 20): each case an outside fuzz and load test found -------------


def _huge_declared_request(rows=1_048_576):
  """Under 32 bytes on the wire that declare a million-row string batch, no values."""
  request = predict_request(texts=None)
  tensor = request.inputs["text"]
  tensor.dtype = types_pb2.DT_STRING
  tensor.tensor_shape.dim.add().size = rows
  return request


def test_declared_size_far_beyond_the_payload_is_refused(stub):
  request = _huge_declared_request()
  assert len(request.SerializeToString()) < 32
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(request, timeout=30)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "rows" in e.value.details() or "filled in" in e.value.details()
  # Under the row limit, still far more than it carries: refused by the fill bound.
  request = predict_request(texts=None)
  tensor = request.inputs["text"]
  tensor.dtype = types_pb2.DT_STRING
  tensor.tensor_shape.dim.add().size = 90_000
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(request, timeout=30)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "filled in from its last value" in e.value.details()


def test_one_value_for_a_larger_shape_still_works(stub):
  """TF fills a short typed field with its last value (MakeTensorFromProto)."""
  request = predict_request(texts=None)
  request.inputs["text"].CopyFrom(tf.make_tensor_proto("hello world", shape=[3]))
  assert len(request.inputs["text"].string_val) == 1
  response = stub.Predict(request, timeout=30)
  assert list(tf.make_ndarray(response.outputs["label"])) == [b"positive"] * 3
  request = predict_request(signature="two_inputs", texts=None)
  request.inputs["a"].CopyFrom(tf.make_tensor_proto(0.5, shape=[64, 3]))
  request.inputs["b"].CopyFrom(tf.make_tensor_proto(2, dtype=tf.int64, shape=[64]))
  response = stub.Predict(request, timeout=30)
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["total"]), [3.5] * 64)


def test_request_row_limit(start_server, exports, tmp_path):
  install_version(exports["tf2"], str(tmp_path / "m"), 1)
  server = start_server(model_name="m", model_base_path=str(tmp_path / "m"), max_request_rows=4)
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    stub.Predict(predict_request(texts=[b"a"] * 4), timeout=30)
    with pytest.raises(grpc.RpcError) as e:
      stub.Predict(predict_request(texts=[b"a"] * 5), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max_request_rows" in e.value.details()
    request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="classify"))
    for _ in range(5):
      request.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as e:
      stub.Classify(request, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  r = requests.post(f"{rest_url(server)}/v1/models/m:predict",
                    json={"instances": ["a"] * 5}, timeout=30)
  assert r.status_code == 400 and "--max_request_rows" in r.json()["error"]


def test_long_names_come_back_as_short_errors(tf2_server, stub, model_stub):
  name = "n" * 100_000
  with pytest.raises(grpc.RpcError) as e:
    stub.Predict(predict_request(name=name), timeout=30)
  assert e.value.code() == grpc.StatusCode.NOT_FOUND  # Not RESOURCE_EXHAUSTED.
  assert e.value.details().startswith("Servable not found for request: Latest(nnn")
  assert len(e.value.details()) <= errors.MESSAGE_LIMIT
  with pytest.raises(grpc.RpcError) as e:
    model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="\u00e9" * 50_000)), timeout=30)
  assert e.value.code() == grpc.StatusCode.NOT_FOUND
  for signature, alias in (("s" * 100_000, "text"), ("", "a" * 100_000)):
    request = predict_request(signature=signature, key=alias)
    with pytest.raises(grpc.RpcError) as e:
      stub.Predict(request, timeout=30)
    assert e.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.INVALID_ARGUMENT), e.value.details()[:200]
    assert len(e.value.details().encode()) <= errors.MESSAGE_LIMIT
  url = rest_url(tf2_server)
  for path, body in ((f"/v1/models/{'n' * 7000}:predict", {"instances": ["x"]}),
                     ("/v1/models/m:predict", {"signature_name": "s" * 100_000,
                                               "instances": ["x"]}),
                     ("/v1/models/m:predict", {"instances": [{"k" * 100_000: "x"}]}),
                     ("/v1/models/m:classify", {"examples": [{"f" * 100_000: [[1]]}]}),
                     (f"/v1/models/m/versions/{'9' * 5000}:predict", {"instances": ["x"]})):
    r = requests.post(url + path, json=body, timeout=30)
    assert 400 <= r.status_code < 500, (path[:40], r.status_code, r.text[:200])
    assert len(r.json()["error"].encode()) <= errors.MESSAGE_LIMIT


def test_json_numbers_beyond_a_double_are_400(tf2_server):
  url = rest_url(tf2_server) + "/v1/models/m:predict"
  for body in (b'{"instances": [' + b"1" * 5000 + b"]}",
               b'{"instances": ["x"], "junk": -' + b"9" * 100_000 + b"}",
               b'{"signature_name": "two_inputs", "instances": [{"a": [1, 2, 3], "b": '
               + b"7" * 4301 + b"}]}"):
    r = requests.post(url, data=body, timeout=30)
    assert r.status_code == 400, r.text[:200]
    assert r.json() == {"error": r.json()["error"]}
    assert r.json()["error"].startswith("JSON Parse error: Number too big")


def test_client_errors_log_no_tracebacks(tf2_server, stub, caplog, monkeypatch):
  """Malformed requests of every kind: at most a rate-limited line each, no traceback."""
  caplog.set_level(logging.INFO)
  monkeypatch.setattr(error_log, "_LIMITER", error_log.RateLimiter())  # A fresh window.
  rng = random.Random(99)
  with channel(tf2_server) as ch:
    for method, payload in _grpc_cases(rng, 200):
      with pytest.raises(grpc.RpcError):
        ch.unary_unary(f"/tensorflow.serving.PredictionService/{method}")(payload, timeout=30)
  session = requests.Session()
  for path, body in _http_cases(rng, 200):
    session.post(rest_url(tf2_server) + path, data=body, timeout=30)
  with socket.create_connection(("127.0.0.1", tf2_server.rest_port), timeout=10) as sock:
    sock.sendall(b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n")  # Request line too long.
    assert sock.recv(100).split(b" ")[1] == b"400"
  _assert_serves(stub)
  with_traceback = [r for r in caplog.records if r.exc_info or r.exc_text]
  assert not with_traceback, with_traceback[0].getMessage()
  lines = [r for r in caplog.records if r.name == "serving.requests"]
  assert 1 <= len(lines) <= 3 * error_log.LINES_PER_WINDOW, len(lines)
