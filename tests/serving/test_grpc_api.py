"""PredictionService / ModelService over real gRPC: happy paths and every error status."""

import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tests.serving import model_builders
from tests.serving.conftest import channel
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request


def _outputs(response):
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _error(call, request, **kwargs):
  with pytest.raises(grpc.RpcError) as info:
    call(request, **kwargs)
  return info.value.code(), info.value.details()


def test_predict_latest_version_and_outputs(stub):
  response = stub.Predict(predict_request(texts=[b"hello world", b"hi"]))
  out = _outputs(response)
  assert response.model_spec.name == "m"
  assert response.model_spec.version.value == 2
  assert response.model_spec.signature_name == "serving_default"
  assert out["probabilities"].shape == (2, 2)
  np.testing.assert_allclose(out["probabilities"].sum(axis=1), [1.0, 1.0], rtol=1e-6)
  assert list(out["label"]) == [b"positive", b"negative"]
  assert list(out["version"]) == [2, 2]


def test_predict_specific_version_label_and_output_filter(stub):
  out = _outputs(stub.Predict(predict_request(version=1)))
  assert list(out["version"]) == [1]
  out = _outputs(stub.Predict(predict_request(label="stable")))
  assert list(out["version"]) == [1]
  request = predict_request(label="canary")
  request.output_filter.append("label")
  response = stub.Predict(request)
  assert list(response.outputs) == ["label"]
  assert response.model_spec.version.value == 2


def test_predict_multiple_inputs(stub):
  request = predict_request(texts=None, signature="two_inputs")
  request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.ones([2, 3], np.float32)))
  request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int64)))
  out = _outputs(stub.Predict(request))
  np.testing.assert_allclose(out["total"], [4.0, 5.0])
  assert list(out["echo_bytes"]) == [b"1", b"2"]


def test_tf1_model_predict_classify_regress(stub):
  request = predict_request(name="tf1", texts=None, signature="predict_dense")
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0, 0.0]], np.float32)))
  out = _outputs(stub.Predict(request))
  np.testing.assert_allclose(out["y"], [[1.0, -1.0]])

  request = classification_pb2.ClassificationRequest(model_spec=model_pb2.ModelSpec(name="tf1"))
  request.input.example_list.examples.add().CopyFrom(model_builders.x_example(1.0, 0.0))
  request.input.example_list.examples.add().CopyFrom(model_builders.x_example(0.0, 1.0))
  response = stub.Classify(request)
  assert response.model_spec.version.value == 7
  assert len(response.result.classifications) == 2
  first = response.result.classifications[0].classes
  assert [c.label for c in first] == ["a", "b"]
  assert first[0].score > first[1].score

  context = model_builders.x_example(3.0, 4.0)
  request = regression_pb2.RegressionRequest(
      model_spec=model_pb2.ModelSpec(name="tf1", signature_name="regress_x"))
  request.input.example_list_with_context.context.CopyFrom(context)
  request.input.example_list_with_context.examples.add()  # Features come from the context.
  response = stub.Regress(request)
  assert [r.value for r in response.result.regressions] == [7.0]


def test_tf2_classify_regress_and_multi_inference(stub):
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="m", signature_name="classify"))
  for text in ("hello world", "x"):
    request.input.example_list.examples.add().CopyFrom(model_builders.text_example(text))
  response = stub.Classify(request)
  labels = [[c.label for c in cl.classes] for cl in response.result.classifications]
  assert labels == [["negative", "positive"]] * 2

  request = inference_pb2.MultiInferenceRequest()
  for sig, method in (("classify", "tensorflow/serving/classify"),
                      ("regress", "tensorflow/serving/regress")):
    task = request.tasks.add()
    task.model_spec.name = "m"
    task.model_spec.signature_name = sig
    task.method_name = method
  request.input.example_list.examples.add().CopyFrom(model_builders.text_example("hello world"))
  response = stub.MultiInference(request)
  score = response.results[0].classification_result.classifications[0].classes[1].score
  assert response.results[1].regression_result.regressions[0].value == pytest.approx(score)


def test_get_model_metadata(stub):
  request = get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec=model_pb2.ModelSpec(name="m"), metadata_field=["signature_def"])
  response = stub.GetModelMetadata(request)
  assert response.model_spec.version.value == 2
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  assert set(signatures.signature_def) >= {"serving_default", "classify", "regress"}
  assert signatures.signature_def["serving_default"].inputs["text"].dtype == tf.string.as_datatype_enum
  request.metadata_field[:] = ["nope"]
  assert _error(stub.GetModelMetadata, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Metadata field nope is not supported")


def test_get_model_status(model_stub):
  request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="m"))
  response = model_stub.GetModelStatus(request)
  assert [(s.version, s.state) for s in response.model_version_status] == [
      (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
  request.model_spec.version.value = 9
  assert _error(model_stub.GetModelStatus, request) == (
      grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model m")
  request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="zz"))
  assert _error(model_stub.GetModelStatus, request) == (
      grpc.StatusCode.NOT_FOUND, "Could not find any versions of model zz")


def test_health_and_reflection(tf2_server):
  with channel(tf2_server) as ch:
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", "tensorflow.serving.PredictionService", "m", "tf1"):
      status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
      assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(reflection.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= names


# ---- error statuses ----------------------------------------------------------------------


def test_unknown_model_version_and_label(stub):
  assert _error(stub.Predict, predict_request(name="nope")) == (
      grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
  assert _error(stub.Predict, predict_request(version=42)) == (
      grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(m, 42)")
  assert _error(stub.Predict, predict_request(label="beta")) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta")
  assert _error(stub.Predict, predict_request(name="")) == (
      grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_unknown_signature(stub):
  # TF Serving: Predict says FAILED_PRECONDITION, Classify/Regress INVALID_ARGUMENT.
  assert _error(stub.Predict, predict_request(signature="nope")) == (
      grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="m", signature_name="nope"))
  request.input.example_list.examples.add()
  assert _error(stub.Classify, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")


def test_missing_and_extra_inputs(stub):
  request = predict_request(texts=None)
  assert _error(stub.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "input size does not match signature: 0!=1 len({}) != len({text}). "
      "Sent extra: {}. Missing but required: {text}.")
  request = predict_request()
  request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
  assert _error(stub.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "input size does not match signature: 2!=1 len({extra,text}) != len({text}). "
      "Sent extra: {extra}. Missing but required: {}.")
  request = predict_request(key="txt")
  assert _error(stub.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT,
      "input tensor alias not found in signature: txt. Inputs expected to be in the set {text}.")


def test_wrong_dtype_and_shape(stub):
  request = predict_request(texts=None)
  request.inputs["text"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
  assert _error(stub.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be string but float is provided")
  # Shapes other than the signature's go to the session as TF Serving feeds
  # them (no static shape check): the kernels decide. These compute...
  request = predict_request(texts=None)
  request.inputs["text"].CopyFrom(tf.make_tensor_proto([[b"a", b"b"]]))
  assert _outputs(stub.Predict(request))["probabilities"].shape == (1, 2, 2)
  request = predict_request(texts=None, signature="two_inputs")
  request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.ones([1, 4], np.float32)))
  request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([1], np.int64)))
  assert list(_outputs(stub.Predict(request))["total"]) == [5.0]
  # ...and these the kernels refuse, with their INVALID_ARGUMENT.
  request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.ones([2, 4], np.float32)))
  request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([1, 2, 3], np.int64)))
  code, message = _error(stub.Predict, request)
  assert code == grpc.StatusCode.INVALID_ARGUMENT and "Incompatible shapes" in message
  request = predict_request(texts=None)
  request.inputs["text"].dtype = tf.string.as_datatype_enum
  request.inputs["text"].tensor_shape.dim.add().size = -5
  assert _error(stub.Predict, request) == (
      grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: text")


def test_classify_empty_input(stub):
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="m", signature_name="classify"))
  assert _error(stub.Classify, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="m"))  # serving_default is not a classifier.
  request.input.example_list.examples.add()
  code, message = _error(stub.Classify, request)
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert message == "Expected one or two output Tensors, found 3"


def test_oversize_message_is_resource_exhausted(stub, tf2_server):
  big = predict_request(texts=[b"x" * (300 * 1024)])
  code, message = _error(stub.Predict, big)
  assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert "larger than max" in message
  assert stub.Predict(predict_request()).model_spec.version.value == 2


def test_deadline_exceeded(stub):
  request = predict_request(texts=None, signature="slow")
  request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([10**9], np.int64)))
  code, _ = _error(stub.Predict, request, timeout=0.5)
  assert code == grpc.StatusCode.DEADLINE_EXCEEDED
  # The server cancelled the run at the deadline and answers promptly.
  assert stub.Predict(predict_request(), timeout=10).outputs["label"].string_val


def test_model_still_loading_is_unavailable(start_server, exports, tmp_path):
  base = tmp_path / "slow"
  version_dir = base / "1"
  shutil.copytree(exports["tf2"], version_dir)
  slow = model_builders.predict_log("slow", {"n": np.array([300000], np.int64)})
  model_builders.write_warmup(str(version_dir), [slow] * 5)
  server = start_server(wait=False, model_name="slow", model_base_path=str(base))
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    code, message = _error(stub.Predict, predict_request(name="slow"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message.startswith("Servable not found for request: Latest(slow)")
    health = health_pb2_grpc.HealthStub(ch)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == (
        health_pb2.HealthCheckResponse.NOT_SERVING)
    assert server.manager.wait_until_available(60)
    assert stub.Predict(predict_request(name="slow")).model_spec.version.value == 1
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == (
        health_pb2.HealthCheckResponse.SERVING)


def test_reload_config(start_server, exports, tmp_path):
  install_version(exports["tf2"], str(tmp_path / "a"), 1)
  install_version(exports["tf1"], str(tmp_path / "b"), 3)
  server = start_server(model_name="a", model_base_path=str(tmp_path / "a"))
  with channel(server) as ch:
    models = model_service_pb2_grpc.ModelServiceStub(ch)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = "b", str(tmp_path / "b"), "tensorflow"
    config.version_labels["prod"] = 3  # Not loaded yet: refused, as TF Serving does.
    code, message = _error(models.HandleReloadConfigRequest, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message == ("Request to assign label to version 3 of model b, which is not "
                       "currently available for inference")
    del config.version_labels["prod"]
    response = models.HandleReloadConfigRequest(request)
    assert response.status.error_code == 0
    assert server.manager.wait_until_available(30)
    request_b = predict_request(name="b", texts=None, signature="predict_dense")
    request_b.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros([1, 2], np.float32)))
    assert stub.Predict(request_b).model_spec.version.value == 3
    for _ in range(100):  # Model a is unloaded in the background.
      try:
        stub.Predict(predict_request(name="a"))
      except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        break
      time.sleep(0.05)
    else:
      pytest.fail("model a was not unloaded")
