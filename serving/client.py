"""A small Predict client over the tensorflow-serving-api stubs.

Library:
  outputs = predict_text("localhost:8500", "sst2", ["a great movie"])
  # {"label": array([b"positive"]), "probabilities": array([[0.1, 0.9]]), ...}

Command line:
  python -m serving.client --server=localhost:8500 --model=sst2 "a great movie" "dull"
"""

import json
import sys

import grpc
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc


def signature_inputs(stub, model, signature_name, timeout=30.0):
  """{input key: TensorInfo} of a signature, from GetModelMetadata."""
  request = get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec=model_pb2.ModelSpec(name=model), metadata_field=["signature_def"])
  response = stub.GetModelMetadata(request, timeout=timeout)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  if signature_name not in signatures.signature_def:
    raise ValueError(f"model {model} has no signature {signature_name!r}; it has "
                     f"{sorted(signatures.signature_def)}")
  return dict(signatures.signature_def[signature_name].inputs)


def predict_text(server, model, texts, signature_name="serving_default", input_key=None,
                 timeout=30.0):
  """Runs `signature_name` on a batch of strings; returns {output name: ndarray}.

  input_key defaults to the signature's only input (found with GetModelMetadata).
  """
  with grpc.insecure_channel(server) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    if input_key is None:
      inputs = signature_inputs(stub, model, signature_name, timeout)
      if len(inputs) != 1:
        raise ValueError(f"signature {signature_name!r} has inputs {sorted(inputs)}; "
                         "choose one with input_key")
      input_key = next(iter(inputs))
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model, signature_name=signature_name))
    request.inputs[input_key].CopyFrom(
        tf.make_tensor_proto([t.encode("utf-8") if isinstance(t, str) else t for t in texts],
                             dtype=tf.string))
    response = stub.Predict(request, timeout=timeout)
  return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def to_jsonable(array):
  """Nested lists with bytes decoded as UTF-8 (for printing)."""
  if array.dtype == object:
    return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist() \
        if array.size else array.tolist()
  return array.tolist()


FLAGS = flags.FLAGS
flags.DEFINE_string("server", "localhost:8500", "host:port of the gRPC API.")
flags.DEFINE_string("model", None, "Model name.")
flags.DEFINE_string("signature_name", "serving_default", "Signature to call.")
flags.DEFINE_string("input_key", None, "Input of the signature (default: its only input).")
flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the answer.")


def main(argv):
  texts = argv[1:]
  if not FLAGS.model:
    raise app.UsageError("--model is required")
  if not texts:
    raise app.UsageError("give at least one text to send")
  try:
    outputs = predict_text(FLAGS.server, FLAGS.model, texts, FLAGS.signature_name,
                           FLAGS.input_key, FLAGS.timeout)
  except grpc.RpcError as e:
    print(f"serving.client: {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  except ValueError as e:
    print(f"serving.client: {e}", file=sys.stderr)
    return 1
  print(json.dumps({k: to_jsonable(v) for k, v in sorted(outputs.items())}, indent=2,
                   ensure_ascii=False))
  return 0


if __name__ == "__main__":
  app.run(main)
