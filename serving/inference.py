"""TF Serving's inference APIs on protos, transport-free: Predict, Classify, Regress,
MultiInference and GetModelMetadata against one servable, plus `PredictionApi`,
which resolves the ModelSpec through the manager and records metrics.

Validation and messages follow TF Serving's predict_util.cc, classifier.cc,
regressor.cc, multi_inference.cc and get_model_metadata_impl.cc; the gRPC
service, the REST API and model warmup all go through here. `check_method`
is TF Serving's --enable_signature_method_name_check: a signature must then
have the method_name of the API that runs it (Predict takes any of the three).
"""

import time

import grpc
import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from serving import errors
from serving import request_log
from serving import tensor_codec

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SIGNATURE_DEF_FIELD = "signature_def"


def _signature_name(model_spec):
  return model_spec.signature_name or DEFAULT_SIGNATURE


def _set_model_spec(out_spec, name, signature_name, version):
  """TF Serving's MakeModelSpec."""
  out_spec.Clear()
  out_spec.name = name
  if signature_name is not None:
    out_spec.signature_name = signature_name or DEFAULT_SIGNATURE
  out_spec.version.value = version


def _keys(mapping):
  return errors.echo(",".join(sorted(mapping)))


# ---- Predict -------------------------------------------------------------------------


def predict(servable, request, deadline=None, as_tensor_content=False, max_rows=0,
            check_method=False):
  """PredictResponse for a PredictRequest, run on `servable` (inputs of more than
  `max_rows` rows are refused; 0: no limit)."""
  sig_name = _signature_name(request.model_spec)
  signature = servable.signature_defs.get(sig_name)
  if signature is None:
    raise errors.failed_precondition(
        f'Serving signature key "{errors.echo(sig_name)}" not found.')
  if check_method and signature.method_name not in (
      PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
    raise errors.ServingError(
        grpc.StatusCode.INTERNAL,
        "Expected prediction signature method_name to be one of "
        f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
        f"Was: {errors.echo(signature.method_name)}")
  feeds = prepare_predict_inputs(signature, request.inputs, max_rows)
  aliases, fetches = _predict_outputs(signature, request.output_filter)
  outputs = servable.run(feeds, fetches, deadline)
  if len(outputs) != len(aliases):
    raise errors.ServingError(grpc.StatusCode.UNKNOWN, "Predict internal error")
  response = predict_pb2.PredictResponse()
  _set_model_spec(response.model_spec, request.model_spec.name, sig_name, servable.version)
  for alias, value in zip(aliases, outputs):
    tensor_codec.from_ndarray(value, as_tensor_content, proto=response.outputs[alias])
  return response


def prepare_predict_inputs(signature, inputs, max_rows=0):
  """{tensor name: ndarray} for a request's input map, validated against `signature`."""
  expected = signature.inputs
  if len(inputs) > len(expected) or (len(inputs) < len(expected) and not signature.defaults):
    sent, want = set(inputs), set(expected)
    raise errors.invalid_argument(
        f"input size does not match signature: {len(inputs)}!={len(expected)} "
        f"len({{{_keys(sent)}}}) != len({{{_keys(want)}}}). "
        f"Sent extra: {{{_keys(sent - want)}}}. "
        f"Missing but required: {{{_keys(want - sent)}}}.")
  feeds = {}
  for alias in sorted(inputs):
    info = expected.get(alias)
    if info is None:
      raise errors.invalid_argument(
          f"input tensor alias not found in signature: {errors.echo(alias)}. Inputs expected "
          f"to be in the set {{{_keys(expected)}}}.")
    if info.WhichOneof("encoding") != "name":
      raise errors.invalid_argument(
          f"input tensor alias {alias} is not a dense tensor in the signature")
    # No dtype or shape check against the signature: as TF Serving's
    # GetInputValues, the tensor goes to the session and the kernels decide.
    tensor_codec.check_rows(alias, inputs[alias], max_rows)
    feeds[info.name] = tensor_codec.to_ndarray(inputs[alias], alias)
  for alias in sorted(set(expected) - set(inputs)):
    if alias not in signature.defaults:
      raise errors.invalid_argument(
          f"input size does not match signature: {len(inputs)}!={len(expected)} "
          f"len({{{_keys(inputs)}}}) != len({{{_keys(expected)}}}). Sent extra: {{}}. "
          f"Missing but required: {{{errors.echo(alias)}}}.")
    feeds[expected[alias].name] = tensor_codec.to_ndarray(signature.defaults[alias], alias)
  return feeds


def _predict_outputs(signature, output_filter):
  aliases, fetches = [], []
  for alias in output_filter:
    info = signature.outputs.get(alias)
    if info is None:
      raise errors.invalid_argument(
          f"output tensor alias not found in signature: {errors.echo(alias)} Outputs expected "
          f"to be in the set {{{_keys(signature.outputs)}}}.")
    if alias in aliases:
      raise errors.invalid_argument(f"duplicate output tensor alias: {errors.echo(alias)}")
    aliases.append(alias)
    fetches.append(info.name)
  if not aliases:
    for alias in sorted(signature.outputs):
      aliases.append(alias)
      fetches.append(signature.outputs[alias].name)
  return aliases, fetches


# ---- Classify / Regress ---------------------------------------------------------------


def serialized_examples(input_proto, max_rows=0):
  """1-D object array of serialized tf.Examples (context merged in), as TF Serving;
  more than `max_rows` examples are refused (0: no limit)."""
  kind = input_proto.WhichOneof("kind")
  if kind in ("example_list", "example_list_with_context"):
    count = len(getattr(input_proto, kind).examples)
    if max_rows and count > max_rows:
      raise errors.invalid_argument(
          f"Input has {count} examples, more than the {max_rows} a request may carry "
          "(the server's --max_request_rows)")
  if kind == "example_list":
    examples = [e.SerializeToString() for e in input_proto.example_list.examples]
  elif kind == "example_list_with_context":
    lwc = input_proto.example_list_with_context
    context = lwc.context.SerializeToString()
    examples = [context + e.SerializeToString() for e in lwc.examples]
  else:
    examples = []
  if not examples:
    raise errors.invalid_argument("Input is empty.")
  out = np.empty(len(examples), dtype=object)
  out[:] = examples
  return out


def _find_signature(servable, model_spec):
  sig_name = _signature_name(model_spec)
  signature = servable.signature_defs.get(sig_name)
  if signature is None:
    raise errors.invalid_argument(f"No signature was found with the name: {errors.echo(sig_name)}")
  return sig_name, signature


def _check_method(signature, method, what):
  if signature.method_name != method:
    raise errors.invalid_argument(
        f"Expected {what} signature method_name to be {method}. "
        f"Was: {errors.echo(signature.method_name)}")


def classification_tensors(signature, check_method=False):
  """(input tensor name, [output tensor names]) as PreProcessClassification."""
  if check_method:
    _check_method(signature, CLASSIFY_METHOD, "classification")
  if len(signature.inputs) != 1:
    raise errors.invalid_argument("Expected one input Tensor.")
  if len(signature.outputs) not in (1, 2):
    raise errors.invalid_argument(
        f"Expected one or two output Tensors, found {len(signature.outputs)}")
  if "inputs" not in signature.inputs:
    raise errors.invalid_argument(
        f"No classification inputs found in SignatureDef: {signature}")
  names = [signature.outputs[k].name for k in ("classes", "scores") if k in signature.outputs]
  if not names:
    raise errors.invalid_argument(
        'Expected classification signature outputs to contain at least one of '
        f'"classes" or "scores". Signature was: {signature}')
  return signature.inputs["inputs"].name, names


def regression_tensors(signature, check_method=False):
  """(input tensor name, [output tensor name]) as PreProcessRegression."""
  if check_method:
    _check_method(signature, REGRESS_METHOD, "regression")
  if len(signature.inputs) != 1:
    raise errors.invalid_argument("Expected one input Tensor.")
  if len(signature.outputs) != 1:
    raise errors.invalid_argument("Expected one output Tensor.")
  if "inputs" not in signature.inputs:
    raise errors.invalid_argument(f"No regression inputs found in SignatureDef: {signature}")
  if "outputs" not in signature.outputs:
    raise errors.invalid_argument(f"No regression outputs found in SignatureDef: {signature}")
  return signature.inputs["inputs"].name, [signature.outputs["outputs"].name]


def _shape_debug(array):
  return "[" + ",".join(str(d) for d in array.shape) + "]"


def classification_result(signature, num_examples, by_name, result):
  """Fills a ClassificationResult from {tensor name: ndarray} (PostProcessClassification)."""
  classes = by_name.get(signature.outputs["classes"].name) if "classes" in signature.outputs else None
  scores = by_name.get(signature.outputs["scores"].name) if "scores" in signature.outputs else None
  for what, value, kind in (("classes", classes, "O"), ("scores", scores, "f")):
    if value is None:
      continue
    if value.ndim != 2:
      raise errors.invalid_argument(
          f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug(value)}")
    if kind == "O" and value.dtype != object:
      raise errors.invalid_argument(
          f"Expected classes Tensor of DT_STRING. Got: {value.dtype}")
    if kind == "f" and value.dtype != np.float32:
      raise errors.invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {value.dtype}")
    if value.shape[0] != num_examples:
      raise errors.invalid_argument(
          f"Expected {what} output batch size of {num_examples}. Got: {value.shape[0]}")
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise errors.invalid_argument(
        "Tensors class and score should match in dim_size(1). "
        f"Got {classes.shape[1]} vs. {scores.shape[1]}")
  num_classes = (classes if classes is not None else scores).shape[1]
  for i in range(num_examples):
    classifications = result.classifications.add()
    for c in range(num_classes):
      cls = classifications.classes.add()
      if classes is not None:
        cls.label = tensor_codec._as_bytes(classes[i, c]).decode("utf-8", "replace")  # pylint: disable=protected-access
      if scores is not None:
        cls.score = float(scores[i, c])


def regression_result(signature, num_examples, by_name, result):
  """Fills a RegressionResult (PostProcessRegressionResult)."""
  value = by_name.get(signature.outputs["outputs"].name)
  if value is None:
    raise errors.invalid_argument(
        f"Could not find output tensor '{signature.outputs['outputs'].name}'")
  if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
    raise errors.invalid_argument(
        "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
        f"but got {_shape_debug(value)}")
  if value.shape[0] != num_examples:
    raise errors.invalid_argument(
        "Input batch size did not match output batch size: "
        f"{num_examples} vs. {value.shape[0]}")
  if value.dtype != np.float32:
    raise errors.invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {value.dtype}")
  for v in value.reshape(-1):
    result.regressions.add().value = float(v)


def classify(servable, request, deadline=None, max_rows=0, check_method=False):
  sig_name, signature = _find_signature(servable, request.model_spec)
  input_name, fetches = classification_tensors(signature, check_method)
  examples = serialized_examples(request.input, max_rows)
  outputs = servable.run({input_name: examples}, fetches, deadline)
  response = classification_pb2.ClassificationResponse()
  _set_model_spec(response.model_spec, request.model_spec.name, sig_name, servable.version)
  classification_result(signature, len(examples), dict(zip(fetches, outputs)), response.result)
  return response


def regress(servable, request, deadline=None, max_rows=0, check_method=False):
  sig_name, signature = _find_signature(servable, request.model_spec)
  input_name, fetches = regression_tensors(signature, check_method)
  examples = serialized_examples(request.input, max_rows)
  outputs = servable.run({input_name: examples}, fetches, deadline)
  response = regression_pb2.RegressionResponse()
  _set_model_spec(response.model_spec, request.model_spec.name, sig_name, servable.version)
  regression_result(signature, len(examples), dict(zip(fetches, outputs)), response.result)
  return response


def multi_inference(servable, request, deadline=None, max_rows=0, check_method=False):
  """MultiInferenceResponse: classify/regress tasks sharing one Session run."""
  model_name, seen, plans, inputs, fetches = "", set(), [], set(), []
  for task in request.tasks:
    if not task.model_spec.name:
      raise errors.invalid_argument("Found ModelSpec with an empty model name.")
    if model_name and task.model_spec.name != model_name:
      raise errors.invalid_argument(
          "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    model_name = task.model_spec.name
    sig_name = _signature_name(task.model_spec)
    if sig_name in seen:
      raise errors.invalid_argument(f"Duplicate evaluation of signature: {errors.echo(sig_name)}")
    seen.add(sig_name)
    signature = servable.signature_defs.get(sig_name)
    if signature is None:
      raise errors.invalid_argument(
          f"Requested signature not found in model graph: {errors.echo(sig_name)}")
    if task.method_name == CLASSIFY_METHOD:
      input_name, names = classification_tensors(signature, check_method)
    elif task.method_name == REGRESS_METHOD:
      input_name, names = regression_tensors(signature, check_method)
    else:
      raise errors.ServingError(
          grpc.StatusCode.UNIMPLEMENTED,
          f"Unsupported signature method_name: {errors.echo(task.method_name)}")
    inputs.add(input_name)
    fetches.extend(n for n in names if n not in fetches)
    plans.append((task, sig_name, signature))
  if not plans:
    raise errors.invalid_argument("MultiInferenceRequest has no tasks.")
  examples = serialized_examples(request.input, max_rows)
  outputs = servable.run({n: examples for n in inputs}, fetches, deadline)
  by_name = dict(zip(fetches, outputs))
  response = inference_pb2.MultiInferenceResponse()
  for task, sig_name, signature in plans:
    result = response.results.add()
    if task.method_name == CLASSIFY_METHOD:
      classification_result(signature, len(examples), by_name, result.classification_result)
    else:
      regression_result(signature, len(examples), by_name, result.regression_result)
    _set_model_spec(result.model_spec, task.model_spec.name,
                    task.model_spec.signature_name, servable.version)
  return response


# ---- GetModelMetadata -----------------------------------------------------------------


def signature_inputs(servable, model_spec):
  """The input TensorInfo map of the signature a REST predict names."""
  sig_name = _signature_name(model_spec)
  signature = servable.signature_defs.get(sig_name)
  if signature is None:
    raise errors.invalid_argument(
        f'Serving signature name: "{errors.echo(sig_name)}" not found in signature def')
  return signature.inputs


def validate_metadata_request(request):
  if not request.HasField("model_spec"):
    raise errors.invalid_argument("Missing ModelSpec")
  if not request.metadata_field:
    raise errors.invalid_argument(
        "GetModelMetadataRequest must specify at least one metadata_field")
  for field in request.metadata_field:
    if field != SIGNATURE_DEF_FIELD:
      raise errors.invalid_argument(f"Metadata field {errors.echo(field)} is not supported")


def model_metadata(servable, request):
  validate_metadata_request(request)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for key, signature in servable.signature_defs.items():
    signature_map.signature_def[key].CopyFrom(signature)
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.name = servable.name
  response.model_spec.version.value = servable.version
  response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
  return response


# ---- the facade used by the transports ------------------------------------------------


class PredictionApi:
  """Resolves ModelSpecs through the manager, runs the request, records metrics.

  Requests of more than `max_rows` rows are refused (0: no limit). Metrics are
  labelled with the model and signature names only where they exist, so
  requests for made-up names cannot grow the metrics without bound. Each
  successful call goes to `request_logs` (serving/request_log.py), which
  keeps it if the model's logging_config samples it.
  """

  def __init__(self, manager, metrics=None, as_tensor_content=False, max_rows=0,
               request_logs=None, check_method=False):
    self.manager = manager
    self.metrics = metrics
    self.as_tensor_content = as_tensor_content
    self.max_rows = max_rows
    self.check_method = check_method  # --enable_signature_method_name_check
    self.request_logs = request_logs

  def _call(self, api, request, entrypoint, deadline, fn, prepare=None):
    model_spec = request.model_spec if api != "MultiInference" else (
        request.tasks[0].model_spec if request.tasks else None)
    start = time.monotonic()
    status = "OK"
    held = []
    try:
      if model_spec is None or (api != "MultiInference" and not request.HasField("model_spec")):
        raise errors.invalid_argument("Missing ModelSpec")
      with self.manager.get_handle(model_spec) as servable:
        held.append(servable)
        if prepare is not None:
          prepare(servable)
        response = fn(servable)
        if self.request_logs is not None and api in request_log.LOG_FIELDS:
          self.request_logs.log(api, request, response, servable.name, servable.version)
        return response
    except errors.ServingError as e:
      status = e.code.name
      raise
    finally:
      self._record(api, model_spec, status, entrypoint, time.monotonic() - start,
                   held[0] if held else None)

  def _record(self, api, model_spec, status, entrypoint, seconds, servable=None):
    if self.metrics is None:
      return
    name = signature = ""
    if model_spec is not None:
      if servable is not None or model_spec.name in self.manager.model_names():
        name = model_spec.name
      wanted = model_spec.signature_name or DEFAULT_SIGNATURE
      if servable is not None and wanted in servable.signature_defs:
        signature = wanted
    self.metrics.record_request(name, api, signature, status, entrypoint, seconds)

  def record_rejected(self, api, model_spec, error, entrypoint):
    """Counts a request that failed before it reached a model (e.g. bad JSON)."""
    self._record(api, model_spec, error.code.name, entrypoint, 0.0)

  def predict(self, request, entrypoint="GRPC", deadline=None, prepare=None):
    """prepare(servable), if given, runs first while the version is held (REST
    uses it to read the signature's input types and fill the request)."""
    return self._call("Predict", request, entrypoint, deadline,
                      lambda s: predict(s, request, deadline, self.as_tensor_content,
                                        self.max_rows, self.check_method), prepare)

  def classify(self, request, entrypoint="GRPC", deadline=None, prepare=None):
    return self._call("Classify", request, entrypoint, deadline,
                      lambda s: classify(s, request, deadline, self.max_rows,
                                         self.check_method), prepare)

  def regress(self, request, entrypoint="GRPC", deadline=None, prepare=None):
    return self._call("Regress", request, entrypoint, deadline,
                      lambda s: regress(s, request, deadline, self.max_rows,
                                        self.check_method), prepare)

  def multi_inference(self, request, entrypoint="GRPC", deadline=None):
    return self._call("MultiInference", request, entrypoint, deadline,
                      lambda s: multi_inference(s, request, deadline, self.max_rows,
                                                self.check_method))

  def model_metadata(self, request, entrypoint="GRPC"):
    validate_metadata_request(request)
    return self._call("GetModelMetadata", request, entrypoint, None,
                      lambda s: model_metadata(s, request))
