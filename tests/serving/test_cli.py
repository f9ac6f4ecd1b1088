"""`python -m serving.server` and `python -m serving.client` as real processes."""

import json
import subprocess
import sys

import pytest

from serving import client
from serving import server_process
from tests.serving.conftest import install_version

ROOT = server_process.ROOT


def test_bad_flags_give_clear_errors(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", "--port=notaport", "--rest_api_port=70000",
       "--model_base_path=/nonexistent"],
      capture_output=True, text=True, env=server_process.child_env(), cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "--port" in result.stderr or "port" in result.stderr
  assert "notaport" in result.stderr
  bad_config = tmp_path / "bad.config"
  bad_config.write_text("model_config_list { config { name: 'x' base_path: '/a' } } junk")
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", f"--model_config_file={bad_config}"],
      capture_output=True, text=True, env=server_process.child_env(), cwd=ROOT, timeout=120)
  assert result.returncode == 1
  assert "not a valid ModelServerConfig" in result.stderr
  # A file that is not UTF-8 gets the same one-line error, not a traceback.
  latin1 = tmp_path / "latin1.config"
  latin1.write_bytes("model_config_list { config { name: 'caf\u00e9' base_path: '/a' } }"
                     .encode("latin-1"))
  result = subprocess.run(
      [sys.executable, "-m", "serving.server", f"--model_config_file={latin1}"],
      capture_output=True, text=True, env=server_process.child_env(), cwd=ROOT, timeout=120)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("serving.server: error:")]
  assert errors == [f"serving.server: error: {latin1} is not a valid ModelServerConfig: "
                    "not UTF-8 text (byte 0xe9 at offset 39)"], result.stderr[-2000:]


def test_server_process_and_client(exports, tmp_path):
  install_version(exports["tf2"], str(tmp_path / "sst"), 1)
  server = server_process.ServerProcess(
      ["--model_name=sst", f"--model_base_path={tmp_path / 'sst'}", "--host=127.0.0.1"],
      tmp_path / "server.log")
  try:
    server.wait_until_serving()
    outputs = client.predict_text(server.target, "sst", ["hello world", "hi"])
    assert list(outputs["label"]) == [b"positive", b"negative"]
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", f"--server={server.target}", "--model=sst",
         "hello world"], capture_output=True, text=True, env=server_process.child_env(),
        cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["label"] == ["positive"]
    assert len(printed["probabilities"][0]) == 2
    with pytest.raises(ValueError):
      client.predict_text(server.target, "sst", ["x"], signature_name="two_inputs")
  finally:
    returncode = server.stop()
  assert returncode == 0, server.log_text()[-2000:]


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
  server = server_process.ServerProcess(["--rest_api_port=70000", "--model_name=x",
                                         f"--model_base_path={tmp_path}"],
                                        tmp_path / "server.log")
  with server, pytest.raises(server_process.ServerExited) as raised:
    server.wait_until_serving(timeout=120)
  assert not server.running()
  assert "rest_api_port" in str(raised.value)


def test_a_server_that_never_serves_is_stopped_when_the_wait_ends(tmp_path):
  (tmp_path / "empty").mkdir()  # a model with no version never becomes available
  server = server_process.ServerProcess(["--model_name=x",
                                         f"--model_base_path={tmp_path / 'empty'}"],
                                        tmp_path / "server.log")
  with server, pytest.raises(server_process.ServerExited, match="not SERVING after 20 s"):
    server.wait_until_serving(timeout=20)
  assert not server.running()
