"""Version polling: policies, labels, background loads, failed loads, warmup, hot reload."""

import os
import shutil
import threading
import time

import grpc
import pytest
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import model_builders
from tests.serving.conftest import channel
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request

State = get_model_status_pb2.ModelVersionStatus.State


def _wait_for(predicate, timeout=30.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if predicate():
      return True
    time.sleep(0.05)
  return False


def _served_version(stub, name="m", **kwargs):
  response = stub.Predict(predict_request(name=name, **kwargs), timeout=30)
  return int(tf.make_ndarray(response.outputs["version"])[0])


def _states(server, name="m"):
  response = server.manager.model_status(model_pb2.ModelSpec(name=name))
  return {s.version: (s.state, s.status.error_message) for s in response.model_version_status}


def _write_config(path, base, policy, labels=""):
  path.write_text(f"""model_config_list {{ config {{
      name: "m" base_path: "{base}" model_platform: "tensorflow"
      model_version_policy {{ {policy} }} {labels} }} }}""")
  return str(path)


@pytest.mark.parametrize("policy,expected", [
    ("latest { num_versions: 2 }", {2, 3}),
    ("all {}", {1, 2, 3}),
    ("specific { versions: 1 versions: 3 }", {1, 3}),
])
def test_version_policies(start_server, exports, tmp_path, policy, expected):
  base = tmp_path / "m"
  for v in (1, 2, 3):
    install_version(exports["tf2_v2"], str(base), v)
  config = _write_config(tmp_path / "c.config", base, policy,
                         'version_labels { key: "old" value: 1 }' if 1 in expected else "")
  server = start_server(model_config_file=config, enable_model_warmup=False)
  assert _wait_for(lambda: {v for v, (s, _) in _states(server).items()
                            if s == State.AVAILABLE} == expected)
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    assert stub.Predict(predict_request()).model_spec.version.value == max(expected)
    for v in (1, 2, 3):
      if v in expected:
        assert stub.Predict(predict_request(version=v)).model_spec.version.value == v
      else:
        with pytest.raises(grpc.RpcError) as e:
          stub.Predict(predict_request(version=v))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    if 1 in expected:
      assert stub.Predict(predict_request(label="old")).model_spec.version.value == 1


def test_new_version_replaces_old_and_failed_load_keeps_serving(start_server, exports, tmp_path):
  base = tmp_path / "m"
  install_version(exports["tf2"], str(base), 1)
  server = start_server(model_name="m", model_base_path=str(base))
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    assert _served_version(stub) == 1
    install_version(exports["tf2_v2"], str(base), 2)
    assert _wait_for(lambda: _served_version(stub) == 2)
    assert _wait_for(lambda: _states(server).get(1, (None,))[0] == State.END)

    # Version 3 is broken: version 2 stays in service, the error shows in the status.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(broken, base / "3")
    assert _wait_for(lambda: _states(server).get(3, (None,))[0] == State.END)
    state, message = _states(server)[3]
    assert message
    models = model_service_pb2_grpc.ModelServiceStub(ch)
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="m", version=wrappers_pb2.Int64Value(value=3))))
    assert status.model_version_status[0].status.error_code != 0
    assert _served_version(stub) == 2
    time.sleep(0.5)  # A few more polls do not retry or unload anything.
    assert _served_version(stub) == 2
    assert _states(server)[2][0] == State.AVAILABLE


def test_warmup_runs_before_serving_and_failure_blocks_version(start_server, exports, tmp_path):
  base = tmp_path / "m"
  install_version(exports["tf2"], str(base), 1)
  server = start_server(model_name="m", model_base_path=str(base))
  text = server.metrics.render()[0].decode()
  assert 'tfserving_model_load_latency_seconds_count{model_name="m",status="OK"} 1.0' in text

  bad = tmp_path / "bad"
  shutil.copytree(exports["tf2_v2"], bad)
  model_builders.write_warmup(str(bad), [model_builders.predict_log("nope", {"text": [b"x"]})])
  os.rename(bad, base / "2")
  assert _wait_for(lambda: _states(server).get(2, (None,))[0] == State.END)
  assert _states(server)[2][1] == 'Serving signature key "nope" not found.'
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    assert _served_version(stub) == 1


def test_hot_reload_under_load_has_zero_failures(start_server, exports, tmp_path):
  base = tmp_path / "m"
  install_version(exports["tf2"], str(base), 1)
  server = start_server(model_name="m", model_base_path=str(base),
                        file_system_poll_wait_seconds=0.1)
  stop = threading.Event()
  failures, versions_seen, counts = [], set(), [0] * 16
  lock = threading.Lock()

  def client(i):
    with channel(server) as ch:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
      while not stop.is_set():
        try:
          version = _served_version(stub, texts=[f"client {i}".encode()])
          with lock:
            versions_seen.add(version)
          counts[i] += 1
        except grpc.RpcError as e:  # pragma: no cover - the assertion reports it
          failures.append((e.code(), e.details()))

  threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
  for t in threads:
    t.start()
  try:
    time.sleep(0.5)
    install_version(exports["tf2_v2"], str(base), 2)   # New version, atomically...
    assert _wait_for(lambda: _states(server).get(1, (None,))[0] == State.END)
    shutil.rmtree(base / "1")                           # ...and the old one removed.
    time.sleep(0.5)
  finally:
    stop.set()
    for t in threads:
      t.join()
  assert failures == []
  assert versions_seen == {1, 2}
  assert min(counts) > 0
