"""Tiny SavedModels for the server tests, built the two ways real exports are.

`save_tf2_model`: a tf.Module with @tf.function signatures saved by
tf.saved_model.save (string input -> probabilities + label, a tf.Example
`classify` and `regress` signature, a two-input signature and a slow one for
deadlines). `save_tf1_model`: a tf.compat.v1 graph with a tf.Example parsing
graph saved by SavedModelBuilder with proper classify/regress/predict
method names. Both can carry a warmup file in TF Serving's format.
"""

import os

import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

LABELS = (b"negative", b"positive")


class _Tf2Model(tf.Module):
  """score = sigmoid(w * (len(text) - 5) + version/10)."""

  def __init__(self, version):
    super().__init__()
    self.w = tf.Variable(0.5, dtype=tf.float32)
    self.version = tf.constant(version, dtype=tf.int64)
    self.labels = tf.constant(LABELS)

  def _probabilities(self, text):
    length = tf.cast(tf.strings.length(text, unit="UTF8_CHAR"), tf.float32)  # [B]
    bias = tf.cast(self.version, tf.float32) / 10.0
    pos = tf.sigmoid(self.w * (length - 5.0) + bias)  # [B]
    return tf.stack([1.0 - pos, pos], axis=1)  # [B, 2]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  def serve(self, text):
    probs = self._probabilities(text)  # [B, 2]
    label = tf.gather(self.labels, tf.argmax(probs, axis=1))  # [B]
    version = tf.fill(tf.shape(text), self.version)  # [B]
    return {"probabilities": probs, "label": label, "version": version}

  def _parse(self, serialized):
    features = tf.io.parse_example(
        serialized, {"text": tf.io.FixedLenFeature([], tf.string, default_value="")})
    return features["text"]  # [B]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  def classify(self, inputs):
    probs = self._probabilities(self._parse(inputs))  # [B, 2]
    classes = tf.tile(self.labels[tf.newaxis, :], [tf.shape(inputs)[0], 1])  # [B, 2]
    return {"classes": classes, "scores": probs}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  def regress(self, inputs):
    probs = self._probabilities(self._parse(inputs))
    return {"outputs": probs[:, 1]}  # [B]

  @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"),
                                tf.TensorSpec([None], tf.int64, name="b")])
  def two_inputs(self, a, b):
    total = tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32)  # [B]
    return {"total": total, "echo_bytes": tf.strings.as_string(b)}  # [B], [B]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n")])
  def slow(self, n):
    steps = tf.reduce_max(n)

    def body(i, x):
      return i + 1, tf.sin(x) + 1.0

    _, x = tf.while_loop(lambda i, x: i < steps, body,
                         (tf.constant(0, tf.int64), tf.zeros([64])))
    return {"value": tf.fill(tf.shape(n), tf.reduce_sum(x))}  # [B]


def save_tf2_model(export_dir, version=1, warmup=False):
  module = _Tf2Model(version)
  tf.saved_model.save(module, export_dir, signatures={
      "serving_default": module.serve,
      "classify": module.classify,
      "regress": module.regress,
      "two_inputs": module.two_inputs,
      "slow": module.slow,
  })
  if warmup:
    write_warmup(export_dir, [predict_log("serving_default", {"text": [b"warm up"]})])
  return export_dir


def save_tf1_model(export_dir):
  """TF1 graph: tf.Example parsing, classify/regress/predict method names."""
  graph = tf.Graph()
  with graph.as_default():
    serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
    parsed = tf.io.parse_example(
        serialized, {"x": tf.io.FixedLenFeature([2], tf.float32, default_value=[0.0, 0.0])})
    x = parsed["x"]  # [B, 2]
    w = tf.compat.v1.get_variable("w", initializer=tf.constant([[1.0, -1.0], [2.0, 0.5]]))
    logits = tf.matmul(x, w)  # [B, 2]
    scores = tf.nn.softmax(logits, name="scores")  # [B, 2]
    classes = tf.tile(tf.constant([["a", "b"]]), [tf.shape(x)[0], 1], name="classes")
    value = tf.reduce_sum(x, axis=1, name="value")  # [B]
    dense = tf.compat.v1.placeholder(tf.float32, [None, 2], name="dense")
    dense_out = tf.matmul(dense, w, name="dense_out")  # [B, 2]
    sig = tf.compat.v1.saved_model.signature_def_utils
    signatures = {
        "serving_default": sig.classification_signature_def(serialized, classes, scores),
        "regress_x": sig.regression_signature_def(serialized, value),
        "predict_dense": sig.predict_signature_def({"x": dense}, {"y": dense_out}),
    }
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
      builder.save()
  return export_dir


def predict_log(signature_name, inputs):
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name="warmup", signature_name=signature_name))
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def classify_log(signature_name, examples):
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="warmup", signature_name=signature_name))
  for example in examples:
    request.input.example_list.examples.add().CopyFrom(example)
  return prediction_log_pb2.PredictionLog(
      classify_log=prediction_log_pb2.ClassifyLog(request=request))


def write_warmup(export_dir, logs):
  extra = os.path.join(export_dir, "assets.extra")
  os.makedirs(extra, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(extra, "tf_serving_warmup_requests")) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


def text_example(text):
  example = tf.train.Example()
  example.features.feature["text"].bytes_list.value.append(
      text if isinstance(text, bytes) else text.encode("utf-8"))
  return example


def x_example(x0, x1):
  example = tf.train.Example()
  example.features.feature["x"].float_list.value.extend([x0, x1])
  return example
