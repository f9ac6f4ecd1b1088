"""TensorProto <-> numpy, with TensorFlow's own rules and dtype names.

Decoding follows tensorflow::Tensor::FromProto: `tensor_content` holds raw
little-endian bytes and must match the shape exactly; otherwise the typed
repeated field is used, an empty field means zeros and a short one is padded
with its last value (so `tf.make_tensor_proto(0, shape=[8, 128])`, one value
for a whole mask, is a valid input). Beyond TF, what a short field may stand
for is bounded: at most MAX_FILL_BYTES of a tensor are filled in, so a few
bytes of request ([1048576] and no values) cannot make the server build a
huge tensor; `check_rows` bounds dimension 0 of an input (rows of a batch).
Encoding writes the typed repeated fields (TF Serving's default
`AsProtoField`) or, on request, `tensor_content`.
"""

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

from serving import errors

# Largest tensor (in bytes) a request may ask us to materialise.
MAX_TENSOR_BYTES = 1 << 31
# Most bytes of a tensor that may be filled in beyond the values a proto carries.
MAX_FILL_BYTES = 1 << 20
# What one string element costs (tf.tstring), for MAX_FILL_BYTES.
_STRING_ELEMENT_BYTES = 32

# dtype enum -> (numpy dtype, TensorProto field, TF's DataTypeString name).
_DTYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val", "float"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val", "double"),
    types_pb2.DT_INT32: (np.int32, "int_val", "int32"),
    types_pb2.DT_INT16: (np.int16, "int_val", "int16"),
    types_pb2.DT_INT8: (np.int8, "int_val", "int8"),
    types_pb2.DT_UINT8: (np.uint8, "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.uint16, "int_val", "uint16"),
    types_pb2.DT_INT64: (np.int64, "int64_val", "int64"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val", "bool"),
    types_pb2.DT_HALF: (np.float16, "half_val", "half"),
    types_pb2.DT_STRING: (np.object_, "string_val", "string"),
    types_pb2.DT_COMPLEX64: (np.complex64, "scomplex_val", "complex64"),
    types_pb2.DT_COMPLEX128: (np.complex128, "dcomplex_val", "complex128"),
}

_BY_NUMPY = {np.dtype(v[0]): k for k, v in _DTYPES.items() if k != types_pb2.DT_STRING}


def dtype_name(dtype_enum):
  """TF's DataTypeString, e.g. 'float' for DT_FLOAT."""
  if dtype_enum in _DTYPES:
    return _DTYPES[dtype_enum][2]
  try:
    return types_pb2.DataType.Name(dtype_enum)[3:].lower()
  except ValueError:
    return f"unknown dtype {dtype_enum}"


def numpy_dtype(dtype_enum):
  return np.dtype(_DTYPES[dtype_enum][0])


def is_supported(dtype_enum):
  return dtype_enum in _DTYPES


def shape_from_proto(shape_proto):
  """List of ints; raises ValueError on unknown rank or negative dims."""
  if shape_proto.unknown_rank:
    raise ValueError("unknown rank")
  dims = [d.size for d in shape_proto.dim]
  if any(d < 0 for d in dims):
    raise ValueError("negative dimension")
  return dims


def to_ndarray(proto, name="tensor"):
  """numpy array for a TensorProto; ServingError 'tensor parsing error' if bad."""
  try:
    _check_fill(proto, name)
    return _to_ndarray(proto)
  except (ValueError, TypeError, OverflowError, MemoryError):
    raise errors.invalid_argument(f"tensor parsing error: {errors.echo(name)}") from None


def _num_values(proto):
  """How many elements the proto's typed repeated field holds."""
  if proto.dtype == types_pb2.DT_STRING:
    return len(proto.string_val)
  count = len(getattr(proto, _DTYPES[proto.dtype][1]))
  if proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
    return count // 2
  return count


def _check_fill(proto, name):
  """INVALID_ARGUMENT if decoding would fill in more than MAX_FILL_BYTES."""
  if proto.dtype not in _DTYPES or proto.tensor_content:
    return  # Unsupported dtypes fail to parse; tensor_content must match exactly.
  shape = shape_from_proto(proto.tensor_shape)
  count = float(np.prod(shape, dtype=np.float64)) if shape else 1.0
  sent = _num_values(proto)
  if count <= sent:
    return
  itemsize = (_STRING_ELEMENT_BYTES if proto.dtype == types_pb2.DT_STRING
              else np.dtype(_DTYPES[proto.dtype][0]).itemsize)
  if (count - sent) * itemsize > MAX_FILL_BYTES:
    raise errors.invalid_argument(
        f"input tensor {errors.echo(name)} declares shape "
        f"{errors.echo(shape_string(shape))} ({count:.0f} elements) but carries {sent} "
        f"values; at most {MAX_FILL_BYTES} bytes of a tensor are filled in from its "
        "last value")


def check_rows(alias, proto, max_rows):
  """INVALID_ARGUMENT if input `alias` has more than `max_rows` rows (dimension 0;
  0 means no limit). Checked on the proto, before any value is decoded."""
  dims = proto.tensor_shape.dim
  if max_rows and dims and dims[0].size > max_rows:
    raise errors.invalid_argument(
        f"input tensor alias {errors.echo(alias)} has {dims[0].size} rows, more than "
        f"the {max_rows} a request may carry (the server's --max_request_rows)")


def _to_ndarray(proto):
  if proto.dtype not in _DTYPES:
    raise ValueError("unsupported dtype")
  np_dtype, field, _ = _DTYPES[proto.dtype]
  shape = shape_from_proto(proto.tensor_shape)
  count = int(np.prod(shape, dtype=np.float64)) if shape else 1
  itemsize = 8 if proto.dtype == types_pb2.DT_STRING else np.dtype(np_dtype).itemsize
  if count * itemsize > MAX_TENSOR_BYTES:
    raise ValueError("tensor too large")
  if proto.dtype == types_pb2.DT_STRING:
    values = np.empty(len(proto.string_val), dtype=object)
    values[:] = list(proto.string_val)
    return _fill(values, count, shape, b"", object)
  if proto.tensor_content:
    content = proto.tensor_content
    if len(content) != count * np.dtype(np_dtype).itemsize:
      raise ValueError("tensor_content size mismatch")
    return np.frombuffer(content, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(
        np_dtype).reshape(shape)
  raw = getattr(proto, field)
  if proto.dtype == types_pb2.DT_HALF:
    values = np.array(raw, dtype=np.uint16).view(np.float16)
  elif proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
    flat = np.array(raw, dtype=np.float64)
    if flat.size % 2:
      raise ValueError("odd number of complex parts")
    values = (flat[0::2] + 1j * flat[1::2]).astype(np_dtype)
  else:
    # Out-of-range ints (e.g. 300 in an int8 tensor) wrap like C++ does.
    values = np.array(raw, dtype=np.int64 if field == "int_val" else np_dtype)
    values = values.astype(np_dtype)
  return _fill(values, count, shape, 0, np_dtype)


def _fill(values, count, shape, zero, np_dtype):
  """Tensor::FromProto's rule: empty -> zeros, short -> repeat the last value."""
  if values.size == 0:
    out = np.full(count, zero, dtype=np_dtype)
  elif values.size >= count:
    out = values[:count]
  else:
    out = np.empty(count, dtype=np_dtype)
    out[:values.size] = values
    out[values.size:] = values[-1]
  return out.reshape(shape)


def dtype_enum_of(array):
  """DataType enum of a numpy array (object/bytes/str arrays are DT_STRING)."""
  if array.dtype.kind in ("O", "S", "U"):
    return types_pb2.DT_STRING
  try:
    return _BY_NUMPY[array.dtype]
  except KeyError:
    raise errors.ServingError(
        grpc.StatusCode.INTERNAL,
        f"unsupported output dtype {array.dtype}") from None


def _as_bytes(value):
  if isinstance(value, bytes):
    return value
  if isinstance(value, str):
    return value.encode("utf-8")
  return bytes(value)


def from_ndarray(array, as_tensor_content=False, proto=None):
  """TensorProto for a numpy array (AsProtoField unless as_tensor_content)."""
  array = np.asarray(array)
  proto = proto if proto is not None else tensor_pb2.TensorProto()
  dtype = dtype_enum_of(array)
  proto.dtype = dtype
  proto.tensor_shape.CopyFrom(make_shape(array.shape))
  flat = array.reshape(-1)
  if dtype == types_pb2.DT_STRING:
    proto.string_val.extend(_as_bytes(v) for v in flat)
    return proto
  if as_tensor_content:
    proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    return proto
  field = _DTYPES[dtype][1]
  if dtype == types_pb2.DT_HALF:
    getattr(proto, field).extend(flat.view(np.uint16).tolist())
  elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
    parts = np.empty(flat.size * 2, dtype=np.float64)
    parts[0::2], parts[1::2] = flat.real, flat.imag
    getattr(proto, field).extend(parts.tolist())
  else:
    getattr(proto, field).extend(flat.tolist())
  return proto


def make_shape(dims):
  shape = tensor_shape_pb2.TensorShapeProto()
  for d in dims:
    shape.dim.add().size = int(d)
  return shape


def shape_string(dims):
  """[2,3] style, unknown dims as -1 (TF Serving's ShapeToString)."""
  return "[" + ",".join(str(int(d)) for d in dims) + "]"
