"""The optional XLA generation loop (export --xla_generation): checks,
TF Serving's session loader, and our server with and without
--xla_cpu_compilation_enabled as real processes."""

import json
import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc

from export import checks
from export.exporter import FAMILY_EXPORTS, ExportConfig, export_saved_model
from export.versioning import ExportError
from serving import client
from serving import server_process
from tests.export.test_decoder_export import generate_request
from tests.export.test_export import run_tf1_session

PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed", "KING"]


@pytest.fixture(scope="module")
def xla_export(tmp_path_factory, trained_lm_dir):
  base = tmp_path_factory.mktemp("lm_xla_exports") / "shakespeare"
  return export_saved_model(ExportConfig(model_dir=trained_lm_dir,
                                         export_base=str(base),
                                         xla_generation=True))


def texts(outputs):
  return [t.decode("utf-8") for t in outputs["text"]]


def test_checks_refuse_it_unless_xla_functions_are_allowed(xla_export,
                                                           exported_lm):
  problems = checks.check_saved_model(xla_export)
  assert problems and all("XLA-compiled" in p for p in problems), problems
  assert checks.check_saved_model(xla_export, allow_xla_functions=True) == []
  assert checks.check_saved_model(exported_lm) == []  # the default stays free
  cards = [json.load(open(os.path.join(path, "assets.extra", "model_card.json")))
           for path in (xla_export, exported_lm)]
  assert [card["server_flags_required"] for card in cards] == [
      ["--xla_cpu_compilation_enabled"], []]


def test_session_loader_generates_what_the_plain_export_does(xla_export,
                                                             exported_lm):
  feeds = generate_request(PROMPTS, max_new_tokens=12)  # greedy
  _, xla = run_tf1_session(xla_export, "generate", feeds)
  _, plain = run_tf1_session(exported_lm, "generate", feeds)
  assert texts(xla) == texts(plain)
  np.testing.assert_array_equal(xla["num_tokens"], [12, 12, 12])
  _, default = run_tf1_session(xla_export, "serving_default",
                               {"prompt": feeds["prompt"]})
  _, plain_default = run_tf1_session(exported_lm, "serving_default",
                                     {"prompt": feeds["prompt"]})
  assert texts(default) == texts(plain_default)


def test_bad_settings_are_still_invalid_argument(xla_export):
  """The checks run outside the compiled loop (XLA drops graph asserts)."""
  for bad, name in ((dict(temperature=-1.0), "temperature"),
                    (dict(top_p=0.0), "top_p"),
                    (dict(max_new_tokens=10_000), "max_new_tokens")):
    with pytest.raises(tf.errors.InvalidArgumentError, match=name):
      run_tf1_session(xla_export, "generate", generate_request(["ROMEO:"], **bad))


def test_only_the_decoder_family_declares_an_xla_generation_loop():
  assert {name: module.XLA_GENERATION for name, module in FAMILY_EXPORTS.items()} == {
      "encoder": False, "decoder": True, "seq2seq": False}


def test_other_families_refuse_the_option(trained_model_dir, tmp_path):
  with pytest.raises(ExportError, match="decoders only"):
    export_saved_model(ExportConfig(model_dir=trained_model_dir,
                                    export_base=str(tmp_path / "sst2"),
                                    xla_generation=True))
  assert not list((tmp_path / "sst2").glob("[0-9]*"))  # nothing left behind


def serve(model_path, log_path, extra_flags):
  """Our server as a process, serving the export at `model_path` as model 'lm'."""
  base = str(model_path).rsplit("/", 1)[0]
  return server_process.ServerProcess(
      ["--rest_api_port=0", "--model_name=lm", f"--model_base_path={base}",
       "--max_num_load_retries=0", *extra_flags], log_path)


def test_our_server_runs_it_only_with_xla_compilation_enabled(
    xla_export, exported_lm, tmp_path):
  prompts = generate_request(PROMPTS[:2])["prompt"]
  with serve(xla_export, tmp_path / "xla.log", ["--xla_cpu_compilation_enabled"]) as server:
    server.wait_until_serving()
    out = client.predict_text(server.target, "lm", PROMPTS[:2],
                              signature_name="serving_default")
    _, plain_default = run_tf1_session(exported_lm, "serving_default",
                                       {"prompt": prompts})
    assert [t.decode() for t in out["text"]] == texts(plain_default)
  # Without the flag the warmup's first compilation fails, so the version
  # never becomes available, as in tensorflow_model_server.
  log_path = tmp_path / "plain.log"
  with serve(xla_export, log_path, []) as server:
    end = time.monotonic() + 120
    while "XLA compilation disabled" not in server.log_text():
      assert time.monotonic() < end and server.running(), server.log_text()[-2000:]
      time.sleep(0.5)
    with grpc.insecure_channel(server.target) as channel:
      health = health_pb2_grpc.HealthStub(channel)
      assert health.Check(health_pb2.HealthCheckRequest(),
                          timeout=10).status != 1  # not SERVING
      request = get_model_status_pb2.GetModelStatusRequest()
      request.model_spec.name = "lm"
      status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
          request, timeout=10)
      assert "XLA compilation disabled" in (
          status.model_version_status[0].status.error_message)
