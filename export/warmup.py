"""TF Serving warmup file: assets.extra/tf_serving_warmup_requests.

A TFRecord of tensorflow.serving.PredictionLog, one record per signature, in
the format tensorflow_model_server replays with --enable_model_warmup before a
version takes traffic.
"""

import os

import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                     prediction_log_pb2)

WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_inputs(model_config, key, count=2):
  """`count` strings of the model config's warmup_examples[key] (rows of the
  run's own training data; repeated if there are fewer)."""
  values = list(model_config.get("warmup_examples", {}).get(key) or [])
  if not values:
    raise ValueError(f"the model config has no warmup_examples[{key!r}] "
                     "(retrain with this version of the trainer)")
  return [values[i % len(values)] for i in range(count)]


def predict_log(model_name, signature, inputs):
  """inputs: {name: numpy-compatible value}."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def classify_log(model_name, signature, examples):
  """examples: list of tf.train.Example."""
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  request.input.example_list.examples.extend(examples)
  return prediction_log_pb2.PredictionLog(
      classify_log=prediction_log_pb2.ClassifyLog(request=request))


def write_warmup_file(saved_model_dir, logs):
  extra = os.path.join(saved_model_dir, "assets.extra")
  os.makedirs(extra, exist_ok=True)
  path = os.path.join(extra, WARMUP_FILE)
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  return path


def read_warmup_file(saved_model_dir):
  """Parses every record back into PredictionLog protos."""
  path = os.path.join(saved_model_dir, "assets.extra", WARMUP_FILE)
  logs = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(record.numpy())
    logs.append(log)
  return logs
