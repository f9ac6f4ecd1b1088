"""Our gRPC streaming generation service (TF Serving has no streaming RPC).

  service zoo.serving.GenerationService {
    rpc GenerateStream(GenerateRequest) returns (stream GenerateResponse);
  }
  message GenerateRequest {
    tensorflow.serving.ModelSpec model_spec = 1;  // name, version or label
    string prompt = 2;
    int32 max_new_tokens = 3;  // 0 = 16
    float temperature = 4;     // 0 = greedy
    int32 top_k = 5;           // 0 = no limit
    float top_p = 6;           // 0 = 1 (no limit)
    int64 seed = 7;
    repeated string stop = 8;  // stop strings (not sent)
  }
  message GenerateResponse {
    string text = 1;           // new text since the last message
    int32 num_tokens = 2;      // tokens generated so far
    int32 prompt_tokens = 3;   // tokens of the prompt as the model read it
    string finish_reason = 4;  // "length" or "stop" on the last message
  }

The messages are declared here (as serving/config.py declares TF Serving's
config protos), registered in the default pool, so reflection describes them
and any client can build them from the descriptor. Standard gRPC deadlines
and cancellation: a cancelled or expired call frees its slot before the next
engine step and ends with CANCELLED / DEADLINE_EXCEEDED; bad settings are
INVALID_ARGUMENT before any token, a full queue RESOURCE_EXHAUSTED.
"""

import time

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from tensorflow_serving.apis import model_pb2  # registers ModelSpec

from serving import engine as engine_lib
from serving import error_log
from serving import errors

_FILE_NAME = "serving/zoo_generation_service.proto"
PACKAGE = "zoo.serving"
SERVICE = f"{PACKAGE}.GenerationService"
DEFAULT_MAX_NEW_TOKENS = 16


def _build():
  pool = descriptor_pool.Default()
  try:
    pool.FindFileByName(_FILE_NAME)
  except KeyError:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package=PACKAGE, syntax="proto3",
        dependency=[model_pb2.DESCRIPTOR.name])
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def msg(name, fields):
      m = fdp.message_type.add(name=name)
      for number, (field_name, ftype, label, type_name) in enumerate(fields, 1):
        fd = m.field.add(name=field_name, number=number, type=ftype,
                         label=label)
        if type_name:
          fd.type_name = type_name

    msg("GenerateRequest", [
        ("model_spec", f.TYPE_MESSAGE, opt, ".tensorflow.serving.ModelSpec"),
        ("prompt", f.TYPE_STRING, opt, None),
        ("max_new_tokens", f.TYPE_INT32, opt, None),
        ("temperature", f.TYPE_FLOAT, opt, None),
        ("top_k", f.TYPE_INT32, opt, None),
        ("top_p", f.TYPE_FLOAT, opt, None),
        ("seed", f.TYPE_INT64, opt, None),
        ("stop", f.TYPE_STRING, rep, None)])
    msg("GenerateResponse", [
        ("text", f.TYPE_STRING, opt, None),
        ("num_tokens", f.TYPE_INT32, opt, None),
        ("prompt_tokens", f.TYPE_INT32, opt, None),
        ("finish_reason", f.TYPE_STRING, opt, None)])
    service = fdp.service.add(name="GenerationService")
    service.method.add(name="GenerateStream",
                       input_type=f".{PACKAGE}.GenerateRequest",
                       output_type=f".{PACKAGE}.GenerateResponse",
                       server_streaming=True)
    pool.Add(fdp)
  get = lambda name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
  return get("GenerateRequest"), get("GenerateResponse")


GenerateRequest, GenerateResponse = _build()
_METHOD = f"/{SERVICE}/GenerateStream"


def settings_from_request(request):
  return engine_lib.Settings(
      max_new_tokens=request.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
      temperature=request.temperature, top_k=request.top_k,
      top_p=request.top_p or 1.0, seed=request.seed, stop=tuple(request.stop))


def _deadline(context):
  remaining = context.time_remaining()
  if remaining is None or remaining > 1e7:
    return None
  return time.monotonic() + remaining


def _generate_stream(api, request, context):
  """Yields a GenerateResponse per text piece; aborts with the error code."""
  try:
    if not request.HasField("model_spec"):
      raise errors.invalid_argument("Missing ModelSpec")
    stream = api.start(request.model_spec, request.prompt,
                       settings_from_request(request), _deadline(context))
  except errors.ServingError as e:
    error_log.request_failed("GRPC", "GenerateStream", e)
    context.abort(e.code, e.message)
  context.add_callback(stream.cancel)  # the call ended: cancel or deadline
  while True:
    event = stream.get()
    if event.error is not None:
      context.abort(event.error.code, event.error.message)
    if event.text or event.finish_reason:
      yield GenerateResponse(text=event.text, num_tokens=event.num_tokens,
                             prompt_tokens=event.prompt_tokens,
                             finish_reason=event.finish_reason or "")
    if event.finish_reason:
      return


def add_to_server(server, api):
  """Registers GenerationService (over a GenerationApi) on a grpc.Server."""
  handler = grpc.unary_stream_rpc_method_handler(
      lambda request, context: _generate_stream(api, request, context),
      request_deserializer=GenerateRequest.FromString,
      response_serializer=GenerateResponse.SerializeToString)
  server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
      SERVICE, {"GenerateStream": handler}),))


def stub(channel):
  """A callable: stub(request, timeout=...) -> iterator of GenerateResponse."""
  return channel.unary_stream(
      _METHOD, request_serializer=GenerateRequest.SerializeToString,
      response_deserializer=GenerateResponse.FromString)
