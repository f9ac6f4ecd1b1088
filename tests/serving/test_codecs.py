"""tensor_codec and json_codec on their own: TF's proto rules and TF Serving's JSON rules."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from serving import errors
from serving import json_codec
from serving import tensor_codec


@pytest.mark.parametrize("array", [
    np.array([[1.5, -2.0]], np.float32), np.array([1, 2, 3], np.int64),
    np.array([True, False]), np.array([[1, 2]], np.int8), np.array([0.5], np.float16),
    np.array([1 + 2j], np.complex64), np.array(7, np.int32), np.array([2**64 - 1], np.uint64),
])
def test_tensor_round_trip_matches_tensorflow(array):
  for as_content in (False, True):
    proto = tensor_codec.from_ndarray(array, as_tensor_content=as_content)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    np.testing.assert_array_equal(tensor_codec.to_ndarray(proto), array)
  proto = tf.make_tensor_proto(array)
  np.testing.assert_array_equal(tensor_codec.to_ndarray(proto), array)


def test_strings_and_short_fields():
  proto = tensor_codec.from_ndarray(np.array([[b"a", "é"]], dtype=object))
  assert tensor_codec.to_ndarray(proto).tolist() == [[b"a", "é".encode()]]
  proto = tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32)
  proto.tensor_shape.dim[0].size = 4  # Short repeated field: padded with the last value.
  del proto.float_val[:]
  proto.tensor_content = b""
  proto.float_val.extend([1.0, 2.0])
  assert tensor_codec.to_ndarray(proto).tolist() == [1.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("mutate", [
    lambda p: setattr(p, "dtype", 999),
    lambda p: p.tensor_shape.dim.add(size=-3),
    lambda p: setattr(p, "tensor_content", b"\x00" * 3),
    lambda p: p.tensor_shape.dim.add(size=2**40),
])
def test_bad_tensor_protos_are_invalid_argument(mutate):
  proto = tf.make_tensor_proto(np.zeros([2], np.float32))
  mutate(proto)
  with pytest.raises(errors.ServingError) as e:
    tensor_codec.to_ndarray(proto, "x")
  assert e.value.message == "tensor parsing error: x"


def _infos(**dtypes):
  infos = {}
  for name, dtype in dtypes.items():
    infos[name] = meta_graph_pb2.TensorInfo(name=f"{name}:0", dtype=dtype)
  return infos


def test_json_row_and_columnar_requests():
  infos = _infos(a=types_pb2.DT_FLOAT, s=types_pb2.DT_STRING)
  request = predict_pb2.PredictRequest()
  fmt = json_codec.fill_predict_request(
      {"instances": [{"a": [1, 2], "s": {"b64": "aGk="}}, {"a": [3, 4.5], "s": "yo"}]},
      infos, request)
  assert fmt == json_codec.ROW
  assert tf.make_ndarray(request.inputs["a"]).tolist() == [[1.0, 2.0], [3.0, 4.5]]
  assert tf.make_ndarray(request.inputs["s"]).tolist() == [b"hi", b"yo"]
  request = predict_pb2.PredictRequest()
  fmt = json_codec.fill_predict_request({"inputs": {"a": 2.5, "s": ["x"]}}, infos, request)
  assert fmt == json_codec.COLUMNAR
  assert tf.make_ndarray(request.inputs["a"]).shape == ()


def test_json_rejects_ragged_and_wrong_types():
  infos = _infos(a=types_pb2.DT_INT32)
  with pytest.raises(errors.ServingError) as e:
    json_codec.fill_predict_request({"inputs": [[1, 2], [3]]}, infos, predict_pb2.PredictRequest())
  assert e.value.message == "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
  with pytest.raises(errors.ServingError) as e:
    json_codec.fill_predict_request({"inputs": [True]}, infos, predict_pb2.PredictRequest())
  assert e.value.message == "JSON Value: true Type: True is not of expected type: int32"
  with pytest.raises(errors.ServingError) as e:
    json_codec.fill_predict_request({"inputs": [2**40]}, infos, predict_pb2.PredictRequest())
  assert "is not of expected type: int32" in e.value.message


def test_json_responses_use_float32_shortest_repr_and_b64():
  response = predict_pb2.PredictResponse()
  response.outputs["p"].CopyFrom(tf.make_tensor_proto(np.array([[0.2, 1.0]], np.float32)))
  response.outputs["raw_bytes"].CopyFrom(tf.make_tensor_proto([b"\x00\x01"]))
  response.outputs["text"].CopyFrom(tf.make_tensor_proto([b"\xff"]))
  row = json_codec.predict_response_json(response, json_codec.ROW)
  assert row == {"predictions": [{"p": [0.2, 1.0], "raw_bytes": {"b64": "AAE="},
                                  "text": {"b64": "/w=="}}]}
  col = json_codec.predict_response_json(response, json_codec.COLUMNAR)
  assert col["outputs"]["p"] == [[0.2, 1.0]]
