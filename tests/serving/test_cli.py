"""`python -m serving.server` and `python -m serving.client` as real processes."""

import json
import os
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc

from serving import client
from tests.serving.conftest import install_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_bad_flags_give_clear_errors(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", "--port=notaport", "--rest_api_port=70000",
       "--model_base_path=/nonexistent"],
      capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "--port" in result.stderr or "port" in result.stderr
  assert "notaport" in result.stderr
  bad_config = tmp_path / "bad.config"
  bad_config.write_text("model_config_list { config { name: 'x' base_path: '/a' } } junk")
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", f"--model_config_file={bad_config}"],
      capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
  assert result.returncode == 1
  assert "not a valid ModelServerConfig" in result.stderr
  # A file that is not UTF-8 gets the same one-line error, not a traceback.
  latin1 = tmp_path / "latin1.config"
  latin1.write_bytes("model_config_list { config { name: 'caf\u00e9' base_path: '/a' } }"
                     .encode("latin-1"))
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", f"--model_config_file={latin1}"],
      capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("serving.server: error:")]
  assert errors == [f"serving.server: error: {latin1} is not a valid ModelServerConfig: "
                    "not UTF-8 text (byte 0xe9 at offset 39)"], result.stderr[-2000:]


def test_server_process_and_client(exports, tmp_path):
  install_version(exports["tf2"], str(tmp_path / "sst"), 1)
  port = _free_port()
  log_path = tmp_path / "server.log"
  log = open(log_path, "wb")  # pylint: disable=consider-using-with
  server = subprocess.Popen(
      [sys.executable, "-m", "serving.server", f"--port={port}", "--model_name=sst",
       f"--model_base_path={tmp_path / 'sst'}", "--host=127.0.0.1"],
      stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
  try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
      health = health_pb2_grpc.HealthStub(ch)
      end = time.monotonic() + 120
      while True:
        try:
          if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
            break
        except grpc.RpcError:
          pass
        assert time.monotonic() < end and server.poll() is None, "server did not come up"
        time.sleep(0.2)
    outputs = client.predict_text(f"127.0.0.1:{port}", "sst", ["hello world", "hi"])
    assert list(outputs["label"]) == [b"positive", b"negative"]
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--server=127.0.0.1:{port}", "--model=sst",
         "hello world"], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["label"] == ["positive"]
    assert len(printed["probabilities"][0]) == 2
    with pytest.raises(ValueError):
      client.predict_text(f"127.0.0.1:{port}", "sst", ["x"], signature_name="two_inputs")
  finally:
    server.terminate()
    try:
      server.wait(timeout=30)
    finally:
      if server.poll() is None:
        server.kill()
        server.wait()
      log.close()
  assert server.returncode == 0, log_path.read_text(errors="replace")[-2000:]
