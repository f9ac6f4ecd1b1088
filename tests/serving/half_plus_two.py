"""TF Serving's own test models, regenerated: half_plus_two (TF1 and TF2) and the counter.

The graphs follow the logic of upstream's generator scripts
(tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py
and export_counter.py), so tests can hold our server to the expectations of
TF Serving's own tests:

  y = a*x + b,  y2 = a*x + c,  y3 = a2*x2 + c2   (a = a2 = 0.5, b = 2, c = c2 = 3)

where x and x2 come from tf.Examples parsed in the graph (`x` float[1],
`x2` float[1] defaulting to 0) and `x:0` / `x2:0` can also be fed directly.
`classify_x2` adds the signature TensorFlow's copy of the model
(tensorflow/cc/saved_model/testdata/half_plus_two, used by predict_impl_test.cc
and http_rest_api_handler_test.cc) has beyond TF Serving's. `example_shape`
is the tf_example placeholder's shape: None (unknown rank) as in the checked-in
saved_model_half_plus_two_cpu, [None] as the current script writes it.
"""

import os

import tensorflow as tf

V1 = tf.compat.v1
SIG = V1.saved_model.signature_constants
VERSION = 123


def _feature_spec():
  return {
      "x": V1.FixedLenFeature([1], dtype=tf.float32),
      "x2": V1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
  }


def _signature(inputs, outputs, method):
  info = V1.saved_model.utils.build_tensor_info
  return V1.saved_model.signature_def_utils.build_signature_def(
      {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()},
      method)


def _regression(inputs, outputs):
  return _signature({SIG.REGRESS_INPUTS: inputs}, {SIG.REGRESS_OUTPUTS: outputs},
                    SIG.REGRESS_METHOD_NAME)


def _classification(inputs, scores):
  return _signature({SIG.CLASSIFY_INPUTS: inputs}, {SIG.CLASSIFY_OUTPUT_SCORES: scores},
                    SIG.CLASSIFY_METHOD_NAME)


def write_half_plus_two(base_path, version=VERSION, b=2.0, classify_x2=False,
                        example_shape=None, predict_method=SIG.PREDICT_METHOD_NAME):
  """Writes the TF1 model to base_path/<version>; returns that directory.

  b=3.0 gives saved_model_half_plus_three (y = 0.5*x + 3); `predict_method`
  is serving_default's method_name (predict_util_test.cc's MethodNameCheck
  changes it).
  """
  export_dir = os.path.join(base_path, str(version))
  asset_dir = os.path.join(base_path, ".original_assets")
  os.makedirs(asset_dir, exist_ok=True)
  asset_path = os.path.join(asset_dir, "foo.txt")
  with open(asset_path, "w", encoding="utf-8") as f:
    f.write("asset-file-contents")
  graph = tf.Graph()
  with graph.as_default(), V1.Session(graph=graph) as sess:
    a = V1.Variable(0.5, name="a")
    bias = V1.Variable(b, name="b")
    c = V1.Variable(3.0, name="c")
    serialized = V1.placeholder(tf.string, name="tf_example", shape=example_shape)
    example = V1.parse_example(serialized, _feature_spec())
    for feature in example.values():  # What TF 1.x inferred from an unknown-rank input.
      feature.set_shape([None, 1])
    x = tf.identity(example["x"], name="x")                        # [B, 1]
    y = tf.identity(tf.add(tf.multiply(a, x), bias), name="y")     # [B, 1]
    y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")      # [B, 1]
    x2 = tf.identity(example["x2"], name="x2")                     # [B, 1]
    # Separate variables for the x2 path, as upstream (keeps optimizers from fusing).
    a2 = V1.Variable(0.5, name="a2")
    c2 = V1.Variable(3.0, name="c2")
    y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")   # [B, 1]

    asset = tf.constant(asset_path)
    V1.add_to_collection(V1.GraphKeys.ASSET_FILEPATHS, asset)
    filename = V1.Variable("foo.txt", name="filename_tensor", trainable=False,
                           collections=[])
    assign_filename = filename.assign("foo.txt")

    signatures = {
        "regress_x_to_y": _regression(serialized, y),
        "regress_x_to_y2": _regression(serialized, y2),
        "regress_x2_to_y3": _regression(x2, y3),
        "classify_x_to_y": _classification(serialized, y),
        SIG.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _signature(
            {"x": x}, {"y": y}, predict_method),
    }
    if classify_x2:
      signatures["classify_x2_to_y3"] = _classification(x2, y3)
    sess.run(V1.global_variables_initializer())
    builder = V1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(
        sess, [V1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
        assets_collection=V1.get_collection(V1.GraphKeys.ASSET_FILEPATHS),
        main_op=tf.group(assign_filename))
    builder.save()
  return export_dir


class _HalfPlusTwo(tf.Module):
  """The native TF2 model of the generator script (saved_model_half_plus_two_tf2_cpu)."""

  def __init__(self):
    super().__init__()
    self.a = tf.Variable(0.5, name="a")
    self.b = tf.Variable(2.0, name="b")
    self.c = tf.Variable(3.0, name="c")

  def _compute(self, x, inc):
    return tf.add(tf.multiply(self.a, x), inc)

  def _x(self, serialized):
    return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
  def predict(self, x):
    return {"y": self._compute(x, self.b)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIG.REGRESS_INPUTS)])
  def regress_xy(self, serialized):
    return {SIG.REGRESS_OUTPUTS: self._compute(self._x(serialized), self.b)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIG.REGRESS_INPUTS)])
  def regress_xy2(self, serialized):
    return {SIG.REGRESS_OUTPUTS: self._compute(self._x(serialized), self.c)}

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name=SIG.REGRESS_INPUTS)])
  def regress_x2y3(self, x2):
    return {SIG.REGRESS_OUTPUTS: self._compute(x2, self.c)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIG.CLASSIFY_INPUTS)])
  def classify_xy(self, serialized):
    return {SIG.CLASSIFY_OUTPUT_SCORES: self._compute(self._x(serialized), self.b)}

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name=SIG.CLASSIFY_INPUTS)])
  def classify_x2y3(self, x2):
    return {SIG.CLASSIFY_OUTPUT_SCORES: self._compute(x2, self.c)}


def write_half_plus_two_tf2(base_path, version=VERSION):
  """Writes the TF2 model to base_path/<version>; returns that directory."""
  export_dir = os.path.join(base_path, str(version))
  model = _HalfPlusTwo()
  tf.saved_model.save(model, export_dir, signatures={
      "regress_x_to_y": model.regress_xy,
      "regress_x_to_y2": model.regress_xy2,
      "regress_x2_to_y3": model.regress_x2y3,
      "classify_x_to_y": model.classify_xy,
      "classify_x2_to_y3": model.classify_x2y3,
      SIG.DEFAULT_SERVING_SIGNATURE_DEF_KEY: model.predict,
  })
  return export_dir


def write_counter(base_path, version=VERSION):
  """export_counter.py's model: get_counter, incr_counter, incr_counter_by, reset_counter."""
  export_dir = os.path.join(base_path, str(version))
  graph = tf.Graph()
  with graph.as_default(), V1.Session(graph=graph) as sess:
    counter = V1.Variable(0.0, dtype=tf.float32, name="counter", use_resource=False)
    incr = counter.assign_add(1.0)
    delta = V1.placeholder(tf.float32, name="delta")
    incr_by = counter.assign_add(delta)
    reset = counter.assign(0.0)
    sess.run(V1.global_variables_initializer())
    method = SIG.PREDICT_METHOD_NAME
    signatures = {
        "get_counter": _signature({}, {"output": counter}, method),
        "incr_counter": _signature({}, {"output": incr}, method),
        "incr_counter_by": _signature({"delta": delta}, {"output": incr_by}, method),
        "reset_counter": _signature({}, {"output": reset}, method),
    }
    builder = V1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(
        sess, [V1.saved_model.tag_constants.SERVING], signature_def_map=signatures)
    builder.save()
  return export_dir
