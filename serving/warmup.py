"""Model warmup: replays assets.extra/tf_serving_warmup_requests before a version serves.

The file is a TFRecord of tensorflow.serving.PredictionLog, as TF Serving reads
it (saved_model_warmup_util.cc): at most 1000 records, each run
`num_request_iterations` times; any failure fails the load of that version.
"""

import logging
import os

import grpc
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import errors
from serving import inference

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000
log = logging.getLogger("serving.warmup")


def read_warmup_records(export_dir):
  """The PredictionLogs of a version's warmup file ([] if it has none)."""
  path = os.path.join(export_dir, WARMUP_FILE)
  if not os.path.exists(path):
    log.info("No warmup data file found at %s", path)
    return []
  records = []
  try:
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      if len(records) >= MAX_RECORDS:
        raise errors.invalid_argument(
            f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
      record = prediction_log_pb2.PredictionLog()
      try:
        record.ParseFromString(raw)
      except Exception:  # pylint: disable=broad-except
        raise errors.invalid_argument(
            f"Failed to parse warmup record from {path}") from None
      records.append(record)
  except tf.errors.OpError as e:
    raise errors.from_tf_error(e) from None
  return records


def run_warmup(servable, num_request_iterations=1):
  """Replays the warmup records of `servable` (raises ServingError on failure)."""
  records = read_warmup_records(servable.path)
  for record in records:
    for _ in range(max(1, num_request_iterations)):
      _replay(servable, record)
  if records:
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.",
             servable.path, len(records))


def _replay(servable, record):
  kind = record.WhichOneof("log_type")
  if kind == "predict_log":
    inference.predict(servable, record.predict_log.request)
  elif kind == "classify_log":
    inference.classify(servable, record.classify_log.request)
  elif kind == "regress_log":
    inference.regress(servable, record.regress_log.request)
  elif kind == "multi_inference_log":
    inference.multi_inference(servable, record.multi_inference_log.request)
  elif kind is not None:
    raise errors.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                              f"Unsupported log_type for warmup: {kind}")
