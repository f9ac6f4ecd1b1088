"""Request logs (serving/request_log.py) over real gRPC and REST, their rotation,
sampling and failures, and `serving.warmup_from_log` back into a warmup file."""

import json
import os
import random
import subprocess
import sys
import time

import grpc
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2
from tensorflow_serving.config import logging_config_pb2

from serving import config as config_lib
from serving import request_log
from serving import warmup
from serving import warmup_from_log
from tests.serving.conftest import channel
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request
from tests.serving.conftest import rest_url

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(name, base, logging=""):
  return (f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
          f"{logging} }}\n")


def _logging(prefix, rate):
  return (f'logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }} '
          f"sampling_config {{ sampling_rate: {rate} }} }}")


def _start(start_server, exports, tmp_path, models):
  """models: {name: logging_config text}; every model serves the tf2 export."""
  text = ""
  for name, logging in models.items():
    install_version(exports["tf2"], str(tmp_path / name), 1)
    text += _model(name, tmp_path / name, logging)
  config = tmp_path / "models.config"
  config.write_text(f"model_config_list {{\n{text}}}\n")
  return start_server(model_config_file=str(config), file_system_poll_wait_seconds=0)


def _records(prefix, count, timeout=10.0):
  """The PredictionLogs under `prefix` once there are `count` (waits for the writer)."""
  end = time.monotonic() + timeout
  while True:
    records = []
    for path in sorted(tf.io.gfile.glob(f"{prefix}.*.tfrecord")):
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    if len(records) >= count or time.monotonic() > end:
      return records
    time.sleep(0.05)


def _examples(texts):
  request_input = classification_pb2.ClassificationRequest().input
  for text in texts:
    example = request_input.example_list.examples.add()
    example.features.feature["text"].bytes_list.value.append(text)
  return request_input


def test_logs_every_api_over_grpc_and_rest(start_server, exports, tmp_path):
  prefix = str(tmp_path / "logs" / "m")
  server = _start(start_server, exports, tmp_path, {"m": _logging(prefix, 1.0), "quiet": ""})
  sent = {}
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    sent["predict_log"] = predict_request(texts=[b"a fine film", b"bad"])
    stub.Predict(sent["predict_log"], timeout=10)
    sent["classify_log"] = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="classify"),
        input=_examples([b"good"]))
    stub.Classify(sent["classify_log"], timeout=10)
    sent["regress_log"] = regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="regress"),
        input=_examples([b"good"]))
    stub.Regress(sent["regress_log"], timeout=10)
    multi = inference_pb2.MultiInferenceRequest(input=_examples([b"fine"]))
    for signature, method in (("classify", "tensorflow/serving/classify"),
                              ("regress", "tensorflow/serving/regress")):
      task = multi.tasks.add(method_name=method)
      task.model_spec.name, task.model_spec.signature_name = "m", signature
    sent["multi_inference_log"] = multi
    stub.MultiInference(multi, timeout=10)
    stub.Predict(predict_request(name="quiet"), timeout=10)  # No logging_config.
    with pytest.raises(grpc.RpcError):  # Failed calls are not logged.
      stub.Predict(predict_request(signature="nope"), timeout=10)
  url = rest_url(server)
  assert requests.post(f"{url}/v1/models/m:predict",
                       json={"instances": ["from rest"]}, timeout=10).status_code == 200
  assert requests.post(f"{url}/v1/models/m:classify", timeout=10,
                       json={"signature_name": "classify",
                             "examples": [{"text": "rest example"}]}).status_code == 200

  records = _records(prefix, 6)
  kinds = [r.WhichOneof("log_type") for r in records]
  assert kinds == ["predict_log", "classify_log", "regress_log", "multi_inference_log",
                   "predict_log", "classify_log"]
  for record, kind in zip(records[:4], sent):
    assert getattr(record, kind).request == sent[kind]
  now = time.time()
  for record in records:
    meta = record.log_metadata
    assert (meta.model_spec.name, meta.model_spec.version.value) == ("m", 1)
    assert meta.sampling_config.sampling_rate == 1.0
    assert list(meta.saved_model_tags) == ["serve"]
    assert now - 60 < meta.timestamp_secs <= now
  assert records[0].log_metadata.model_spec.signature_name == "serving_default"
  assert records[1].log_metadata.model_spec.signature_name == "classify"
  predicted = records[0].predict_log.response.outputs["label"].string_val
  assert list(predicted) == [b"positive", b"negative"]
  rest_predict = records[4].predict_log.request.inputs["text"].string_val
  assert list(rest_predict) == [b"from rest"]
  rest_examples = records[5].classify_log.request.input.example_list.examples
  assert rest_examples[0].features.feature["text"].bytes_list.value == [b"rest example"]
  assert len(records[5].classify_log.response.result.classifications) == 1
  assert not tf.io.gfile.glob(str(tmp_path / "logs" / "quiet*"))

  # The log becomes the warmup file of a new version, which loads with it.
  base = tmp_path / "next"
  version_dir = install_version(exports["tf2_v2"], str(base), 5)
  output = os.path.join(version_dir, warmup.WARMUP_FILE)
  counts = warmup_from_log.convert(prefix, output)
  assert sum(counts.values()) == 6
  replayed = warmup.read_warmup_records(version_dir)
  assert [r.WhichOneof("log_type") for r in replayed] == kinds
  assert not replayed[0].HasField("log_metadata")
  assert not replayed[0].predict_log.HasField("response")
  assert not replayed[0].predict_log.request.model_spec.HasField("version")
  later = start_server(model_name="next", model_base_path=str(base),
                       file_system_poll_wait_seconds=0)
  with channel(later) as ch:
    status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="next")))
  assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_half_sampling_logs_about_half(start_server, exports, tmp_path):
  prefix = str(tmp_path / "half")
  server = _start(start_server, exports, tmp_path, {"m": _logging(prefix, 0.5)})
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    for _ in range(200):
      stub.Predict(predict_request(), timeout=10)
  time.sleep(0.3)
  logged = len(_records(prefix, 200, timeout=0.5))
  assert 60 <= logged <= 140, logged  # Binomial(200, 0.5): sd 7; this is +-5.6 sd.


class _Collect:
  def __init__(self):
    self.records = []

  def write(self, model_name, data, started=None):
    self.records.append(data)


@pytest.mark.parametrize("rate,low,high", [(0.0, 0, 0), (0.5, 1850, 2150), (1.0, 4000, 4000)])
def test_sampling_rate(rate, low, high):
  config = logging_config_pb2.LoggingConfig()
  config.sampling_config.sampling_rate = rate
  writer = _Collect()
  logger = request_log.RequestLogger(config, writer, rng=random.Random(7))
  request, response = predict_request(), prediction_log_pb2.PredictLog().response
  for _ in range(4000):
    logger.log("Predict", request, response, "m", 1)
  assert low <= len(writer.records) <= high  # 0.5: 2000 +- 4.7 sd.


def test_files_rotate_by_size_and_old_ones_go(tmp_path):
  prefix = str(tmp_path / "rot" / "log")
  writer = request_log.LogWriter(prefix, request_log.LogOptions(max_file_bytes=1000,
                                                                max_files=3))
  for i in range(40):
    writer.write("m", bytes([i]) * 100)
  writer.close()
  files = sorted(tf.io.gfile.glob(f"{prefix}.*.tfrecord"))
  assert files == writer.files and len(files) == 3
  sizes = [os.path.getsize(f) for f in files]
  assert all(s <= 1000 for s in sizes), sizes
  kept = [r for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]
  assert kept[-1] == bytes([39]) * 100 and len(kept) >= 16  # The newest records stay.
  assert writer.error == ""


def test_unwritable_log_path_is_a_status_not_a_failed_request(start_server, exports, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  server = _start(start_server, exports, tmp_path,
                  {"m": _logging(str(blocker / "logs" / "m"), 1.0)})
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    for _ in range(3):
      assert stub.Predict(predict_request(), timeout=10).outputs["label"].string_val
    end = time.monotonic() + 10
    while not server.request_logs.problem("m") and time.monotonic() < end:
      time.sleep(0.05)
    status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="m")))
  entry = status.model_version_status[0]
  assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  assert entry.status.error_code == 0
  assert "request log" in entry.status.error_message
  assert "cannot create" in entry.status.error_message
  rest = requests.get(f"{rest_url(server)}/v1/models/m", timeout=10).json()
  assert "request log" in rest["model_version_status"][0]["status"]["error_message"]
  assert requests.post(f"{rest_url(server)}/v1/models/m:predict",
                       json={"instances": ["x"]}, timeout=10).status_code == 200
  metrics = server.metrics.render()[0].decode()
  assert 'tfserving_request_log_records_total{model_name="m",outcome="dropped"}' in metrics


_FULL_DISK = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from serving import request_log
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
outcomes = []
writer = request_log.LogWriter(sys.argv[1], on_outcome=lambda m, o, n: outcomes.extend([o] * n))
for _ in range(20):
  writer.write("m", b"x" * 1000)
writer.close()
print(json.dumps({"error": writer.error, "outcomes": outcomes}))
"""


def test_full_disk_drops_records_and_says_so(tmp_path):
  """A file-size limit (RLIMIT_FSIZE) makes writes fail as a full disk does."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path / "full")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                       check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert "cannot write" in result["error"], result
  assert result["outcomes"].count("dropped") > 0 and len(result["outcomes"]) == 20


def test_bad_logging_configs_are_config_errors():
  def check(text):
    config = logging_config_pb2.LoggingConfig()
    text_format.Parse(text, config)
    with pytest.raises(config_lib.ConfigError) as info:
      config_lib.validate_logging_config("m", config)
    return str(info.value)
  assert "sampling_rate 1.5" in check(
      'log_collector_config { filename_prefix: "/x" } sampling_config { sampling_rate: 1.5 }')
  assert "no filename_prefix" in check("sampling_config { sampling_rate: 0.5 }")
  assert "'kafka' is not supported" in check(
      'log_collector_config { type: "kafka" filename_prefix: "/x" }')


def _write_log(path, records):
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record.SerializeToString())


def test_warmup_from_log_keeps_each_signature_within_the_limit(tmp_path):
  records = []
  for i in range(1500):
    record = prediction_log_pb2.PredictionLog()
    record.predict_log.request.CopyFrom(predict_request(texts=[str(i).encode()], version=3))
    records.append(record)
  odd = prediction_log_pb2.PredictionLog()
  odd.classify_log.request.model_spec.signature_name = "classify"
  odd.classify_log.request.input.CopyFrom(_examples([b"x"]))
  records.insert(1200, odd)
  other_model = prediction_log_pb2.PredictionLog()
  other_model.predict_log.request.CopyFrom(predict_request(name="other"))
  other_model.log_metadata.model_spec.name = "other"
  records.append(other_model)
  _write_log(str(tmp_path / "log.a.1.00001.tfrecord"), records[:800])
  _write_log(str(tmp_path / "log.a.1.00002.tfrecord"), records[800:])
  with open(tmp_path / "log.a.1.00002.tfrecord", "ab") as f:
    f.write(b"\x05\x00\x00")  # A record cut short by a crash.
  output = tmp_path / "export" / "1" / warmup.WARMUP_FILE
  run = subprocess.run(
      [sys.executable, "-m", "serving.warmup_from_log", f"--log={tmp_path / 'log'}",
       f"--output={output}", "--seed=3"],
      capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert run.returncode == 0, run.stderr[-2000:]
  assert "wrote 1000 warmup records" in run.stdout
  kept = warmup.read_warmup_records(str(tmp_path / "export" / "1"))
  assert len(kept) == warmup.MAX_RECORDS
  assert sum(r.WhichOneof("log_type") == "classify_log" for r in kept) == 1
  assert all(not r.predict_log.request.model_spec.HasField("version") for r in kept
             if r.HasField("predict_log"))
  texts = [int(r.predict_log.request.inputs["text"].string_val[0]) for r in kept
           if r.HasField("predict_log") and r.predict_log.request.model_spec.name == "m"]
  assert texts == sorted(texts) and texts[-1] > 1000  # Log order, from all of the log.
  only_other = warmup_from_log.convert(str(tmp_path / "log*"), str(tmp_path / "o"),
                                       model_name="other")
  assert sum(only_other.values()) == 1


def test_a_writer_that_falls_behind_drops_records_not_requests(tmp_path):
  outcomes = []
  writer = request_log.LogWriter(
      str(tmp_path / "slow"), request_log.LogOptions(max_pending_bytes=250, flush_seconds=60),
      on_outcome=lambda m, o, n: outcomes.extend([o] * n))
  assert [writer.write("m", b"x" * 100) for _ in range(4)] == [True, True, False, False]
  assert not writer.flush()
  assert "bytes behind" in writer.error
  assert sorted(outcomes) == ["dropped", "dropped", "written", "written"]
  assert writer.write("m", b"y" * 100) and writer.flush()
  assert writer.error == ""
  writer.close()
