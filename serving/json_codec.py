"""TF Serving's REST JSON formats (json_tensor.cc): requests to protos, results to JSON.

Predict takes the row format (`"instances": [...]`) or the columnar format
(`"inputs": ...`) and answers in the same one (`"predictions"` / `"outputs"`);
bytes travel as `{"b64": "..."}`. Classify and Regress take `"examples"` (and an
optional `"context"`) as tf.Example feature maps and answer `"results"`.
Error messages are TF Serving's.
"""

import base64
import binascii
import json
import math
import re

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import errors
from serving import tensor_codec

_INT32 = (-2**31, 2**31 - 1)
_INT64 = (-2**63, 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_INT_RANGES = {
    types_pb2.DT_INT32: _INT32, types_pb2.DT_INT16: _INT32, types_pb2.DT_INT8: _INT32,
    types_pb2.DT_UINT8: _INT32, types_pb2.DT_INT64: _INT64,
    types_pb2.DT_UINT32: _UINT32, types_pb2.DT_UINT64: _UINT64,
}
_FLOATS = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)
_MAX_DEBUG = 256
_B64 = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")
ROW, COLUMNAR = "row", "columnar"


# ---- parsing -------------------------------------------------------------------


def parse(body):
  """The top-level JSON object of a request body (bytes)."""
  if not body:
    raise errors.invalid_argument("JSON Parse error: The document is empty")
  try:
    text = body.decode("utf-8")
  except UnicodeDecodeError as e:
    raise errors.invalid_argument(
        f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
  try:
    # As RapidJSON with kParseStopWhenDoneFlag: what follows the document is ignored.
    doc, _ = _DECODER.raw_decode(text, len(text) - len(text.lstrip(_JSON_SPACE)))
  except json.JSONDecodeError as e:
    raise errors.invalid_argument(
        f"JSON Parse error: {_rapidjson_message(e)} at offset: {e.pos}") from None
  except _NumberTooBig as e:
    raise errors.invalid_argument(
        "JSON Parse error: Number too big to be stored in double at offset: "
        f"{max(0, text.find(e.literal))}") from None
  except RecursionError:
    raise errors.invalid_argument("JSON Parse error: document nested too deeply") from None
  except ValueError as e:  # Any other limit of Python's parser: still the client's input.
    raise errors.invalid_argument(f"JSON Parse error: {errors.echo(e)}") from None
  if not isinstance(doc, dict):
    raise errors.invalid_argument(f"JSON Value: {debug_string(doc)} Is not object")
  return doc


# Python's messages -> RapidJSON's (GetParseError_En), which TF Serving reports.
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}
_JSON_SPACE = " \t\n\r"


def _rapidjson_message(error):
  if error.msg == "Expecting ',' delimiter":
    return ("Missing a comma or '}' after an object member." if _innermost(error.doc, error.pos)
            == "{" else "Missing a comma or ']' after an array element.")
  return _RAPIDJSON_MESSAGES.get(error.msg, error.msg)


def _innermost(text, pos):
  """The bracket ('{' or '[') that is open at `pos` of a JSON text."""
  stack, in_string, escaped = [], False, False
  for ch in text[:pos]:
    if in_string:
      if escaped:
        escaped = False
      elif ch == "\\":
        escaped = True
      elif ch == '"':
        in_string = False
    elif ch == '"':
      in_string = True
    elif ch in "{[":
      stack.append(ch)
    elif ch in "}]" and stack:
      stack.pop()
  return stack[-1] if stack else ""


class _NumberTooBig(ValueError):
  def __init__(self, literal):
    super().__init__(literal[:32])
    self.literal = literal


def _parse_int(literal):
  """int() of a JSON integer. One too big for a double is refused, as RapidJSON
  (TF Serving's parser) refuses it, long before Python's int-digit limit."""
  if len(literal) > 300 and math.isinf(float(literal)):
    raise _NumberTooBig(literal)
  return int(literal)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def debug_string(value):
  try:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
  except (ValueError, RecursionError):
    text = "<unprintable>"
  return text[:_MAX_DEBUG]


def _type_name(value):
  if value is None:
    return "Null"
  if value is True:
    return "True"
  if value is False:
    return "False"
  if isinstance(value, dict):
    return "Object"
  if isinstance(value, list):
    return "Array"
  if isinstance(value, str):
    return "String"
  return "Number"


def signature_name(doc):
  if "signature_name" not in doc:
    return ""
  name = doc["signature_name"]
  if not isinstance(name, str):
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(doc)} not formatted correctly. "
        "'signature_name' key must be a string value.")
  return name


def _is_b64(value):
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value):
  if not _is_b64(value):
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
  data = value["b64"].encode("ascii", "replace")
  try:
    if not _B64.match(data):
      raise binascii.Error("bad characters")
    return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
  except (binascii.Error, ValueError):
    raise errors.invalid_argument("Unable to base64 decode") from None


def _type_error(value, dtype):
  return errors.invalid_argument(
      f"JSON Value: {debug_string(value)} Type: {_type_name(value)} is not of "
      f"expected type: {tensor_codec.dtype_name(dtype)}")


def _leaf(value, dtype):
  """One JSON scalar converted for a tensor of `dtype` (AddValueToTensor)."""
  if isinstance(value, dict):
    if dtype == types_pb2.DT_STRING:
      return _decode_b64(value)
    raise _type_error(value, dtype)
  if dtype in _FLOATS:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise _type_error(value, dtype)
    return float(value)
  if dtype in _INT_RANGES:
    lo, hi = _INT_RANGES[dtype]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
      raise _type_error(value, dtype)
    return value
  if dtype == types_pb2.DT_STRING:
    if not isinstance(value, str):
      raise _type_error(value, dtype)
    return value.encode("utf-8", "surrogatepass")
  if dtype == types_pb2.DT_BOOL:
    if not isinstance(value, bool):
      raise _type_error(value, dtype)
    return value
  raise errors.ServingError(
      grpc.StatusCode.UNIMPLEMENTED,
      f"Conversion of JSON Value: {debug_string(value)} to type: "
      f"{tensor_codec.dtype_name(dtype)}")


def _dense_shape(value):
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _fill(value, level, shape, dtype, out):
  """FillTensorProto: checks every list against `shape`, appends leaves to `out`."""
  rank = len(shape)
  if not isinstance(value, list):
    if level != rank:
      raise errors.invalid_argument(
          f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} "
          f"in the JSON DOM. Expected at level: {rank}")
    out.append(_leaf(value, dtype))
    return
  if level >= rank:
    raise errors.invalid_argument(
        f"Encountered list at unexpected level: {level} expected < {rank}")
  if len(value) != shape[level]:
    raise errors.invalid_argument(
        f"Encountered list at unexpected size: {len(value)} at level: {level} "
        f"expected size: {shape[level]}")
  for item in value:
    _fill(item, level + 1, shape, dtype, out)


def json_to_array(value, dtype):
  """(ndarray, shape) for a JSON value holding a dense tensor of `dtype`."""
  if not tensor_codec.is_supported(dtype):
    raise errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {debug_string(value)} to type: "
        f"{tensor_codec.dtype_name(dtype)}")
  shape = _dense_shape(value)
  values = []
  try:
    _fill(value, 0, shape, dtype, values)
  except RecursionError:
    raise errors.invalid_argument("JSON value nested too deeply") from None
  np_dtype = tensor_codec.numpy_dtype(dtype)
  if dtype == types_pb2.DT_STRING:
    array = np.empty(len(values), dtype=object)
    array[:] = values
  elif dtype in _INT_RANGES and dtype not in (types_pb2.DT_UINT64,):
    array = np.array(values, dtype=np.int64).astype(np_dtype)
  else:
    array = np.array(values, dtype=np_dtype)
  return array.reshape(shape), shape


def _status_string(error):
  return f"{error.code.name}: {error.message}"


def fill_predict_request(doc, input_infos, request):
  """Fills request.inputs from a parsed body; returns ROW or COLUMNAR."""
  if not input_infos:
    name = request.model_spec.signature_name
    raise errors.invalid_argument(
        f"Failed to get input map for signature: {name or 'DEFAULT'}")
  has_instances, has_inputs = "instances" in doc, "inputs" in doc
  if has_instances and has_inputs:
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
        "'inputs' or 'instances' keys to exist ")
  if has_instances:
    instances = doc["instances"]
    if not isinstance(instances, list):
      raise errors.invalid_argument(
          f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
    if not instances:
      raise errors.invalid_argument(
          f"JSON Value: {debug_string(doc)} No values in 'instances' array")
    arrays = _instances_to_arrays(instances, input_infos)
    fmt = ROW
  elif has_inputs:
    arrays = _inputs_to_arrays(doc["inputs"], input_infos)
    fmt = COLUMNAR
  else:
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
  for name, array in arrays.items():
    proto = request.inputs[name]
    tensor_codec.from_ndarray(array, proto=proto)
    proto.dtype = input_infos[name].dtype
  return fmt


def _is_object(value):
  return isinstance(value, dict) and not _is_b64(value)


def _instances_to_arrays(instances, infos):
  if not _is_object(instances[0]) and len(infos) > 1:
    raise errors.invalid_argument(
        "instances is a plain list, but expecting list of objects as multiple input "
        "tensors required as per tensorinfo_map")
  objects = _is_object(instances[0])
  names = sorted(infos)
  items = {name: [] for name in names}
  shapes, sizes = {}, {}

  def add(name, value):
    if name not in infos:
      raise errors.invalid_argument(f"JSON object: does not have named input: {errors.echo(name)}")
    array, shape = json_to_array(value, infos[name].dtype)
    if name not in sizes:
      sizes[name], shapes[name] = array.size, shape
    elif sizes[name] != array.size:
      raise errors.invalid_argument(
          f"Expecting tensor size: {sizes[name]} but got: {array.size}")
    elif shapes[name] != shape:
      raise errors.invalid_argument(
          f"Expecting shape {tensor_codec.shape_string(shapes[name])} but got: "
          f"{tensor_codec.shape_string(shape)}")
    items[name].append(array)

  for i, element in enumerate(instances):
    if objects:
      if not _is_object(element):
        raise errors.invalid_argument(
            f"Expecting object but got list at item {i} of input list")
      for key, value in element.items():
        try:
          add(key, value)
        except errors.ServingError as e:
          raise errors.invalid_argument(
              f"Failed to process element: {i} key: {errors.echo(key)} of 'instances' list. "
              f"Error: {_status_string(e)}") from None
      if set(element) != set(names):
        raise errors.invalid_argument(
            f"Failed to process element: {i} of 'instances' list. JSON object: "
            f"{debug_string(element)} keys must be equal to: {','.join(names)}")
    else:
      if _is_object(element):
        raise errors.invalid_argument(
            f"Expecting value/list but got object at item {i} of input list")
      try:
        add(names[0], element)
      except errors.ServingError as e:
        raise errors.invalid_argument(
            f"Failed to process element: {i} of 'instances' list. "
            f"Error: {_status_string(e)}") from None
  return {name: np.stack(arrays) for name, arrays in items.items() if arrays}


def _inputs_to_arrays(value, infos):
  if not _is_object(value):
    if len(infos) > 1:
      raise errors.invalid_argument(
          "inputs is a plain value/list, but expecting an object as multiple input "
          "tensors required as per tensorinfo_map")
    name = next(iter(infos))
    return {name: json_to_array(value, infos[name].dtype)[0]}
  arrays = {}
  for name in sorted(infos):
    if name not in value:
      raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    arrays[name] = json_to_array(value[name], infos[name].dtype)[0]
  return arrays


# ---- tf.Example JSON (classify / regress) -------------------------------------------


def _feature_kind_error(name, feature):
  kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
      feature.WhichOneof("kind"), "UNKNOWN")
  return errors.invalid_argument(
      f"Unexpected element type in feature: {errors.echo(name)} expecting type: {kind}")


def _add_to_feature(value, name, feature):
  kind = feature.WhichOneof("kind")

  def check(want):
    if kind not in (None, want):
      raise _feature_kind_error(name, feature)

  if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
    raise errors.invalid_argument(
        f"Feature: {errors.echo(name)} has element with unexpected JSON type: {_type_name(value)}")
  if isinstance(value, bool):
    check("int64_list")
    feature.int64_list.value.append(int(value))
  elif isinstance(value, dict):
    check("bytes_list")
    feature.bytes_list.value.append(_decode_b64(value))
  elif isinstance(value, str):
    check("bytes_list")
    feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
  elif isinstance(value, float) or value > _UINT64[1] or value < _INT64[0]:
    check("float_list")
    feature.float_list.value.append(float(value))
  else:
    check("int64_list")
    if value > _INT64[1]:
      raise errors.invalid_argument(
          f"Feature: {errors.echo(name)} has uint64_t element. Only int64_t is supported.")
    feature.int64_list.value.append(value)


def example_from_json(value, example):
  if not isinstance(value, dict):
    raise errors.invalid_argument(
        f"Example must be JSON object but got JSON {_type_name(value)}")
  for name, content in value.items():
    feature = example.features.feature[name]
    for item in content if isinstance(content, list) else [content]:
      _add_to_feature(item, name, feature)


def fill_example_request(doc, request):
  """Fills request.input (and signature name) of a Classification/RegressionRequest."""
  request.model_spec.signature_name = signature_name(doc)
  has_context = "context" in doc
  if has_context:
    example_from_json(doc["context"], request.input.example_list_with_context.context)
  examples = doc.get("examples")
  if "examples" not in doc:
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is "
        "expected and was not found")
  if not isinstance(examples, list):
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
  if not examples:
    raise errors.invalid_argument(
        f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
  for value in examples:
    target = (request.input.example_list_with_context.examples if has_context
              else request.input.example_list.examples)
    example_from_json(value, target.add())


# ---- responses ----------------------------------------------------------------------


def _json_values(array, name):
  """Nested Python lists of JSON-ready values (TF Serving's number and bytes rules)."""
  if array.dtype == object or array.dtype.kind in ("S", "U"):
    as_b64 = name.endswith("_bytes")
    flat = [_string_value(v, as_b64) for v in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape).tolist()
  if array.dtype in (np.float32, np.float16):
    # Shortest repr that round-trips in the tensor's own precision (0.2, not 0.2000000029).
    return array.astype(str).astype(np.float64).tolist()
  if array.dtype.kind == "c":
    raise errors.invalid_argument(
        f"Failed to write JSON value for tensor type: {array.dtype}")
  return array.tolist()


def _string_value(value, as_b64):
  raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
  if not as_b64:
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      pass  # Not text: send it as base64 rather than invalid JSON.
  return {"b64": base64.b64encode(raw).decode("ascii")}


def predict_response_json(response, fmt):
  outputs = {name: tensor_codec.to_ndarray(proto, name)
             for name, proto in response.outputs.items()}
  if not outputs:
    raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
  names = sorted(outputs)
  if fmt == COLUMNAR:
    if len(names) == 1:
      return {"outputs": _json_values(outputs[names[0]], names[0])}
    return {"outputs": {n: _json_values(outputs[n], n) for n in names}}
  batch = None
  for name in names:
    array = outputs[name]
    if array.ndim == 0:
      raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
    if batch is not None and array.shape[0] != batch:
      raise errors.invalid_argument(
          f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
          f"expecting: {batch}")
    batch = array.shape[0]
  columns = {n: _json_values(outputs[n], n) for n in names}
  if len(names) == 1:
    return {"predictions": columns[names[0]]}
  return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch)]}


def classification_json(result):
  if not result.classifications:
    raise errors.invalid_argument("Cannot convert empty ClassificationResults to JSON")
  return {"results": [[[c.label, _float32(c.score)] for c in cl.classes]
                      for cl in result.classifications]}


def regression_json(result):
  if not result.regressions:
    raise errors.invalid_argument("Cannot convert empty RegressionResults to JSON")
  return {"results": [_float32(r.value) for r in result.regressions]}


def _float32(value):
  return float(str(np.float32(value)))


def status_json(response):
  return json_format.MessageToDict(
      response, always_print_fields_with_no_presence=True,
      preserving_proto_field_name=True)


def metadata_json(response):
  """{"model_spec": ..., "metadata": {"signature_def": SignatureDefMap}} as TF Serving."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signature_map)
  opts = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
  return {
      "model_spec": json_format.MessageToDict(response.model_spec, **opts),
      "metadata": {"signature_def": json_format.MessageToDict(signature_map, **opts)},
  }


def dumps(obj):
  """UTF-8 JSON laid out like TF Serving's writer: objects one key per line,
  arrays of plain values on a single line."""
  return _pretty(obj, 0).encode("utf-8")


def _pretty(value, level):
  pad, inner = "    " * level, "    " * (level + 1)
  if isinstance(value, dict):
    if not value:
      return "{}"
    items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, level + 1)}"
             for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"
  if isinstance(value, list) and any(isinstance(v, dict) for v in value):
    items = [inner + _pretty(v, level + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"
  return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
