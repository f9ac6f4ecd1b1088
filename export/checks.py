"""Static checks of a SavedModel against what TF Serving accepts and batches.

`check_saved_model(path)` returns a list of problems (empty = servable):
  - a signature input or output that is ragged/composite, a variant or
    resource, has unknown rank, or is not batch-major (dim 0 must be -1);
  - XLA-compiled functions and XLA-only ops such as XlaDynamicUpdateSlice
    (TF Serving runs with XLA off);
  - an op that is neither core TensorFlow nor a tensorflow-text op (the only
    custom ops the TF Serving binary links);
  - missing assets: a file in the asset list that is not in assets/.
"""

import functools
import glob
import os

import tensorflow as tf
import tensorflow_text  # registers the text ops an export may use
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

_BAD_DTYPES = (tf.variant.as_datatype_enum, tf.resource.as_datatype_enum)
_XLA_ATTRS = ("_XlaMustCompile", "_jit_compile")
_XLA_OPS = ("XlaLaunch", "_XlaCompile", "_XlaRun", "XlaLaunchV2")
_INIT_OP_KEY = "__saved_model_init_op"


def load_saved_model_proto(path):
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  return saved_model


def _check_tensor_info(where, info):
  problems = []
  if info.WhichOneof("encoding") != "name":
    problems.append(f"{where}: {info.WhichOneof('encoding')} tensor (ragged or "
                    "sparse); TF Serving needs dense tensors")
    return problems
  if info.dtype in _BAD_DTYPES:
    problems.append(f"{where}: dtype {tf.as_dtype(info.dtype).name} cannot be "
                    "sent over the wire")
  if info.tensor_shape.unknown_rank:
    problems.append(f"{where}: unknown rank; declare a batch-major shape")
  elif not info.tensor_shape.dim or info.tensor_shape.dim[0].size != -1:
    problems.append(f"{where}: dimension 0 must be the batch (-1), got shape "
                    f"{[d.size for d in info.tensor_shape.dim]}")
  return problems


def _composite_input_functions(meta_graph):
  """Names of saved functions taking a ragged or sparse (composite) argument.

  A signature flattens such an argument into component tensors (values,
  row_splits) that are not batch-major, so TF Serving cannot batch them.
  """
  from tensorflow.core.protobuf import struct_pb2
  names = []
  for name, function in meta_graph.object_graph_def.concrete_functions.items():
    stack = [function.canonicalized_input_signature]
    while stack:
      value = stack.pop()
      kind = value.WhichOneof("kind")
      if kind == "type_spec_value" and value.type_spec_value.type_spec_class in (
          struct_pb2.TypeSpecProto.RAGGED_TENSOR_SPEC,
          struct_pb2.TypeSpecProto.SPARSE_TENSOR_SPEC):
        names.append(name)
        break
      if kind in ("list_value", "tuple_value"):
        stack.extend(getattr(value, kind).values)
      elif kind == "dict_value":
        stack.extend(value.dict_value.fields.values())
      elif kind == "named_tuple_value":
        stack.extend(p.value for p in value.named_tuple_value.values)
  return names


def _all_nodes(meta_graph):
  graph = meta_graph.graph_def
  yield from graph.node
  for function in graph.library.function:
    yield from function.node_def


def _core_op_names():
  return set(dir(tf.raw_ops))


def check_saved_model(path, allow_xla_functions=False):
  """Problems that keep TF Serving from running the export, as strings.

  allow_xla_functions: accept functions marked for XLA compilation (an
  export made for servers started with --xla_cpu_compilation_enabled);
  XLA-only ops are refused either way.
  """
  problems = []
  saved_model = load_saved_model_proto(path)
  core_ops = _core_op_names()
  for meta_graph in saved_model.meta_graphs:
    signatures = {k: v for k, v in meta_graph.signature_def.items()
                  if k != _INIT_OP_KEY}
    if "serving_default" not in signatures:
      problems.append("no serving_default signature")
    for key, signature in signatures.items():
      for name, info in signature.inputs.items():
        problems += _check_tensor_info(f"signature {key!r} input {name!r}", info)
      for name, info in signature.outputs.items():
        problems += _check_tensor_info(f"signature {key!r} output {name!r}",
                                       info)
    for name in _composite_input_functions(meta_graph):
      problems.append(f"function {name} takes a ragged or sparse input; "
                      "signature inputs must be dense and batch-major")
    for function in meta_graph.graph_def.library.function:
      for attr in () if allow_xla_functions else _XLA_ATTRS:
        if attr in function.attr and function.attr[attr].b:
          problems.append(f"function {function.signature.name} is XLA-compiled "
                          f"({attr}); export without jit_compile")
    for op in sorted({node.op for node in _all_nodes(meta_graph)}):
      if op in _XLA_OPS or op.startswith("Xla"):
        problems.append(f"op {op} needs XLA")
      elif op in core_ops:
        continue
      elif op_def_registry.get(op) is None:
        problems.append(f"op {op} is not registered in TensorFlow or "
                        "tensorflow-text; TF Serving cannot run it")
      elif not _is_text_op(op):
        problems.append(f"op {op} is a custom op outside tensorflow-text; "
                        "stock TF Serving does not link it")
    for asset in meta_graph.asset_file_def:
      if not os.path.exists(os.path.join(path, "assets", asset.filename)):
        problems.append(f"asset {asset.filename} missing from assets/")
  return problems


@functools.lru_cache(maxsize=None)
def _text_library_bytes():
  """The contents of tensorflow_text's op libraries, where REGISTER_OP names live."""
  root = os.path.dirname(tensorflow_text.__file__)
  blobs = []
  for library in glob.glob(os.path.join(root, "**", "_*.so"), recursive=True):
    with open(library, "rb") as f:
      blobs.append(f.read())
  return blobs


@functools.lru_cache(maxsize=None)
def _is_text_op(op):
  """True if `op` is registered by one of tensorflow_text's op libraries
  (its name stands NUL-delimited in the library's REGISTER_OP strings)."""
  needle = b"\0" + op.encode() + b"\0"
  return any(needle in blob for blob in _text_library_bytes())
