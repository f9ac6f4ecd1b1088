"""Dynamic batching: the scheduler on its own, and merged Predict calls in a real server."""

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import batching
from serving import config as config_lib
from serving import errors
from tests.serving.conftest import channel
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request


class _Recorder:
  """run_fn that doubles its input and remembers each batch it saw."""

  def __init__(self, delay=0.0):
    self.batches = []
    self.delay = delay
    self.lock = threading.Lock()

  def __call__(self, feeds, fetches):
    time.sleep(self.delay)
    with self.lock:
      self.batches.append({k: v.copy() for k, v in feeds.items()})
    return [feeds["x"] * 2 for _ in fetches]


def _submit_concurrently(scheduler, arrays, fetches=("y",)):
  results = [None] * len(arrays)
  errors_seen = [None] * len(arrays)

  def call(i):
    try:
      results[i] = scheduler.submit({"x": arrays[i]}, list(fetches))
    except errors.ServingError as e:
      errors_seen[i] = e

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arrays))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return results, errors_seen


def test_scheduler_merges_and_splits():
  run = _Recorder()
  options = config_lib.BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                       num_batch_threads=1)
  scheduler = batching.BatchScheduler(options, run)
  arrays = [np.full([1, 2], i, np.float32) for i in range(8)]
  results, errs = _submit_concurrently(scheduler, arrays)
  scheduler.close()
  assert errs == [None] * 8
  for i, result in enumerate(results):
    np.testing.assert_array_equal(result[0], np.full([1, 2], 2 * i))
  assert sum(b["x"].shape[0] for b in run.batches) == 8
  assert len(run.batches) < 8  # At least some requests shared a run.


def test_scheduler_pads_to_allowed_batch_sizes():
  run = _Recorder()
  options = config_lib.BatchingOptions(max_batch_size=8, batch_timeout_micros=0,
                                       num_batch_threads=1, allowed_batch_sizes=(4, 8))
  scheduler = batching.BatchScheduler(options, run)
  result = scheduler.submit({"x": np.array([[1.0], [2.0], [3.0]], np.float32)}, ["y"])
  scheduler.close()
  np.testing.assert_array_equal(result[0], [[2.0], [4.0], [6.0]])
  assert run.batches[0]["x"].shape == (4, 1)  # Padded with a copy of the first example.
  assert run.batches[0]["x"][3, 0] == 1.0


def test_scheduler_pads_variable_length_inputs():
  run = _Recorder()
  options = config_lib.BatchingOptions(max_batch_size=4, batch_timeout_micros=300_000,
                                       num_batch_threads=1, pad_variable_length_inputs=True)
  scheduler = batching.BatchScheduler(options, run)
  arrays = [np.array([[1, 2, 3]], np.int32), np.array([[7]], np.int32)]
  results, errs = _submit_concurrently(scheduler, arrays)
  scheduler.close()
  assert errs == [None, None]
  assert max(b["x"].shape[1] for b in run.batches) == 3
  assert results[0][0].tolist() == [[2, 4, 6]]


def test_scheduler_rejects_oversize_task_and_full_queue():
  run = _Recorder(delay=0.3)
  options = config_lib.BatchingOptions(max_batch_size=2, batch_timeout_micros=0,
                                       num_batch_threads=1, max_enqueued_batches=1)
  scheduler = batching.BatchScheduler(options, run)
  with pytest.raises(errors.ServingError) as e:
    scheduler.submit({"x": np.zeros([3, 1], np.float32)}, ["y"])
  assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert e.value.message == "Task size 3 is larger than maximum input batch size 2"
  arrays = [np.zeros([2, 1], np.float32) for _ in range(6)]
  _, errs = _submit_concurrently(scheduler, arrays)
  scheduler.close()
  full = [e for e in errs if e is not None]
  assert full and all(e.code == grpc.StatusCode.UNAVAILABLE for e in full)
  assert full[0].message == "The batch scheduling queue to which this task was submitted is full"


def test_scheduler_falls_back_when_outputs_are_not_batched():
  calls = []

  def run(feeds, fetches):
    calls.append(feeds["x"].shape[0])
    return [np.array(feeds["x"].shape[0])]  # A scalar: cannot be split by example.

  options = config_lib.BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000,
                                       num_batch_threads=1)
  scheduler = batching.BatchScheduler(options, run)
  results, errs = _submit_concurrently(scheduler, [np.zeros([1], np.float32)] * 3)
  scheduler.close()
  assert errs == [None] * 3
  assert [int(r[0]) for r in results] == [1, 1, 1]


def test_server_batches_concurrent_predicts(start_server, exports, tmp_path):
  base = tmp_path / "m"
  install_version(exports["tf2"], str(base), 1)
  params = tmp_path / "batching.config"
  params.write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 50000 } "
                    "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 } "
                    "allowed_batch_sizes: 4 allowed_batch_sizes: 16")
  server = start_server(model_name="m", model_base_path=str(base), enable_batching=True,
                        batching_parameters_file=str(params))
  texts = [("x" * (i + 1)).encode() for i in range(24)]
  with channel(server) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    expected = {t: tf.make_ndarray(stub.Predict(predict_request(texts=[t])).outputs["probabilities"])
                for t in texts[:2]}
    results = {}

    def call(text):
      response = stub.Predict(predict_request(texts=[text]), timeout=30)
      results[text] = tf.make_ndarray(response.outputs["probabilities"])

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  assert len(results) == 24
  for text, probs in expected.items():
    np.testing.assert_allclose(results[text], probs, rtol=1e-6)
  lengths = {t: results[t][0, 1] for t in texts}
  assert sorted(texts, key=lambda t: lengths[t]) == texts  # Longer text, higher score.
  text = server.metrics.render()[0].decode()
  count = [l for l in text.splitlines() if l.startswith('tfserving_batch_size_count{model_name="m"}')]
  total = [l for l in text.splitlines() if l.startswith('tfserving_batch_size_sum{model_name="m"}')]
  runs, examples = float(count[0].split()[-1]), float(total[0].split()[-1])
  assert examples == 26
  assert runs < examples  # Requests were merged into shared Session runs.
