"""Fixtures for the server tests: tiny SavedModels and in-process servers on 127.0.0.1."""

import json
import os
import shutil
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import model_server
from tests.serving import model_builders


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
  """Template version dirs: {'tf2': v1 with warmup, 'tf2_v2': v2, 'tf1': v1}."""
  root = tmp_path_factory.mktemp("exports")
  return {
      "tf2": model_builders.save_tf2_model(str(root / "tf2"), version=1, warmup=True),
      "tf2_v2": model_builders.save_tf2_model(str(root / "tf2_v2"), version=2),
      "tf1": model_builders.save_tf1_model(str(root / "tf1")),
  }


def install_version(template, base_path, version):
  """Copies a template version into base_path/<version> atomically (temp dir + rename)."""
  os.makedirs(base_path, exist_ok=True)
  tmp = os.path.join(base_path, f".tmp-{version}-{time.monotonic_ns()}")
  shutil.copytree(template, tmp)
  os.rename(tmp, os.path.join(base_path, str(version)))
  return os.path.join(base_path, str(version))


@pytest.fixture
def start_server():
  """start_server(**ServerOptions fields) -> running ModelServer; stopped at teardown."""
  servers = []

  def start(wait=True, **kwargs):
    kwargs.setdefault("port", 0)
    kwargs.setdefault("rest_api_port", -1)
    kwargs.setdefault("file_system_poll_wait_seconds", 0.2)
    kwargs.setdefault("max_num_load_retries", 0)
    server = model_server.ModelServer(model_server.ServerOptions(**kwargs)).start()
    servers.append(server)
    if wait:
      assert server.manager.wait_until_available(60), "models did not load"
    return server

  yield start
  for server in servers:
    server.stop(grace=0)


@pytest.fixture(scope="module")
def tf2_server(exports, tmp_path_factory):
  """Shared server: model 'm' (TF2, versions 1 and 2 with labels) and 'tf1'."""
  base = tmp_path_factory.mktemp("models")
  install_version(exports["tf2"], str(base / "m"), 1)
  install_version(exports["tf2_v2"], str(base / "m"), 2)
  install_version(exports["tf1"], str(base / "tf1"), 7)
  config = base / "models.config"
  config.write_text(f"""
model_config_list {{
  config {{
    name: "m"
    base_path: "{base / 'm'}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "tf1"
    base_path: "{base / 'tf1'}"
    model_platform: "tensorflow"
  }}
}}
""")
  monitoring = base / "monitoring.config"
  monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
  server = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_config_file=str(config),
      monitoring_config_file=str(monitoring), file_system_poll_wait_seconds=0.5,
      grpc_max_message_size=256 * 1024, rest_api_max_body_bytes=256 * 1024,
      max_num_load_retries=0,
      rest_api_timeout_in_ms=2000)).start()
  assert server.manager.wait_until_available(60)
  yield server
  server.stop(grace=0)


def channel(server):
  return grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")


def serve_export(export_path, model_name, tmp_path_factory):
  """For module fixtures (`yield from`): an in-process server, gRPC and REST on
  free ports and warmup on, serving `export_path` as version 1 of `model_name`."""
  base = tmp_path_factory.mktemp(f"served_{model_name}") / model_name
  shutil.copytree(export_path, base / "1")
  server = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_name=model_name, model_base_path=str(base),
      file_system_poll_wait_seconds=0.2, enable_model_warmup=True)).start()
  try:
    assert server.manager.wait_until_available(120)
    yield server
  finally:
    server.stop(grace=0)


def prediction_stub(server):
  """For fixtures (`yield from`): a PredictionService stub on `server`."""
  with channel(server) as ch:
    yield prediction_service_pb2_grpc.PredictionServiceStub(ch)


def rest_predict(server, model_name, body, timeout=120):
  """POST `body` (JSON) to /v1/models/<model_name>:predict; the decoded reply
  (urllib.error.HTTPError for an error status)."""
  request = urllib.request.Request(
      f"{rest_url(server)}/v1/models/{model_name}:predict", data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=timeout) as response:
    return json.load(response)


@pytest.fixture
def stub(tf2_server):
  yield from prediction_stub(tf2_server)


@pytest.fixture
def model_stub(tf2_server):
  with channel(tf2_server) as ch:
    yield model_service_pb2_grpc.ModelServiceStub(ch)


def rest_url(server):
  return f"http://127.0.0.1:{server.rest_port}"


def predict_request(name="m", texts=(b"hello world",), signature="", version=None,
                    label=None, key="text"):
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=name, signature_name=signature))
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  if texts is not None:
    request.inputs[key].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
  return request
