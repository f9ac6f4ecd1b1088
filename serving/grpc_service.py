"""The gRPC side: PredictionService and ModelService servicers, health and reflection.

Servicers translate `ServingError` into gRPC status codes with TF Serving's
messages; the request deadline is passed down so a Session run (or a wait in the
batch queue) stops when the client stops waiting. The services are registered
like the generated `add_*Servicer_to_server`, except that a request whose bytes
do not parse is answered INTERNAL (as gRPC C++ answers it) with one log line,
not grpcio's traceback (serving/error_log.py).
"""

import concurrent.futures
import time

import grpc
from google.protobuf import message as message_lib
from google.protobuf import message_factory
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import error_log
from serving import errors
from serving import generation_service

PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


def _deadline(context):
  remaining = context.time_remaining()
  if remaining is None or remaining > 1e7:
    return None
  return time.monotonic() + remaining


def _serve(context, api, fn):
  try:
    return fn()
  except errors.ServingError as e:
    error_log.request_failed("GRPC", api, e)
    context.abort(e.code, e.message)
  except Exception as e:  # pylint: disable=broad-except
    error_log.server_fault("GRPC", api)
    context.abort(grpc.StatusCode.INTERNAL, errors.echo(f"{type(e).__name__}: {e}", 1024))


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """tensorflow.serving.PredictionService over a PredictionApi."""

  def __init__(self, api):
    self._api = api

  def Predict(self, request, context):
    return _serve(context, "Predict",
                  lambda: self._api.predict(request, "GRPC", _deadline(context)))

  def Classify(self, request, context):
    return _serve(context, "Classify",
                  lambda: self._api.classify(request, "GRPC", _deadline(context)))

  def Regress(self, request, context):
    return _serve(context, "Regress",
                  lambda: self._api.regress(request, "GRPC", _deadline(context)))

  def MultiInference(self, request, context):
    return _serve(context, "MultiInference",
                  lambda: self._api.multi_inference(request, "GRPC", _deadline(context)))

  def GetModelMetadata(self, request, context):
    return _serve(context, "GetModelMetadata",
                  lambda: self._api.model_metadata(request, "GRPC"))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService over a ModelManager."""

  def __init__(self, manager):
    self._manager = manager

  def GetModelStatus(self, request, context):
    def run():
      if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")
      return self._manager.model_status(request.model_spec)
    return _serve(context, "GetModelStatus", run)

  def HandleReloadConfigRequest(self, request, context):
    def run():
      self._manager.reload_config(request.config)
      response = model_management_pb2.ReloadConfigResponse()
      response.status.error_code = 0
      for name in request.metric_names:  # No TF-internal metrics to diff here.
        metric = response.metric.add()
        metric.name = name
      return response
    return _serve(context, "HandleReloadConfigRequest", run)


def build_server(api, manager, host, port, max_workers, channel_options=(),
                 credentials=None, socket_path="", generation_api=None):
  """(grpc.Server not yet started, bound port, HealthServicer); the port is
  TLS with `credentials` (grpc.ServerCredentials), else plain text. With
  `socket_path` the server also listens on that UNIX socket (TF Serving's
  --grpc_socket_path, same credentials); port None: no TCP port, bound None.
  With `generation_api` it also serves our streaming GenerationService."""
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="grpc"),
      options=list(channel_options))
  _add_service(server, prediction_service_pb2, "PredictionService", PredictionServicer(api))
  _add_service(server, model_service_pb2, "ModelService", ModelServicer(manager))
  extra = ()
  if generation_api is not None:
    generation_service.add_to_server(server, generation_api)
    extra = (generation_service.SERVICE,)
  health_servicer = health.HealthServicer(experimental_non_blocking=True)
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
  reflection.enable_server_reflection(
      (PREDICTION_SERVICE, MODEL_SERVICE,
       health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
       reflection.SERVICE_NAME) + extra, server)
  bound = None
  if port is not None:
    bound = _listen(server, f"{_host_for_grpc(host)}:{port}", credentials)
    if not bound:
      raise OSError(f"cannot bind gRPC port {host}:{port}")
  if socket_path and not _listen(server, f"unix:{socket_path}", credentials):
    raise OSError(f"cannot listen on the gRPC UNIX socket {socket_path}")
  return server, bound, health_servicer


def _listen(server, address, credentials):
  return (server.add_secure_port(address, credentials) if credentials is not None
          else server.add_insecure_port(address))


class _Unparsed:
  """What the deserializer hands a method for bytes that are not its request."""

  def __init__(self, type_name, error):
    self.type_name = type_name
    self.error = error


def _parser(message_class):
  def parse(data):
    try:
      return message_class.FromString(data)
    except message_lib.DecodeError as e:
      return _Unparsed(message_class.DESCRIPTOR.full_name, e)
  return parse


def _refusing_unparsed(method_name, behavior):
  def handle(request, context):
    if isinstance(request, _Unparsed):
      error_log.client_error("GRPC", f"{method_name}: request is not a valid "
                             f"{request.type_name}: {request.error}")
      context.abort(grpc.StatusCode.INTERNAL,
                    f"Failed to parse the request as a {request.type_name}")
    return behavior(request, context)
  return handle


def _add_service(server, pb2_module, service_name, servicer):
  """Registers the unary methods of `service_name` (from `pb2_module`) on `servicer`."""
  service = pb2_module.DESCRIPTOR.services_by_name[service_name]
  handlers = {}
  for method in service.methods:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    handlers[method.name] = grpc.unary_unary_rpc_method_handler(
        _refusing_unparsed(method.name, getattr(servicer, method.name)),
        request_deserializer=_parser(request_class),
        response_serializer=response_class.SerializeToString)
  server.add_generic_rpc_handlers(
      (grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _host_for_grpc(host):
  return f"[{host}]" if ":" in host and not host.startswith("[") else host


# The names TF Serving's --enable_grpc_healthcheck_service reports SERVING.
TF_SERVING_HEALTH_NAMES = ("ModelService", "PredictionService")


def update_health(health_servicer, manager, extra_names=()):
  """SERVING for '', the services and `extra_names` once every model has an
  available version; per-model entries (service name = model name) say which
  models are ready."""
  serving = health_pb2.HealthCheckResponse.SERVING
  not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
  overall = serving if manager.all_models_available() else not_serving
  for service in ("", PREDICTION_SERVICE, MODEL_SERVICE) + tuple(extra_names):
    health_servicer.set(service, overall)
  for name in manager.model_names():
    ready = _model_ready(manager, name)
    health_servicer.set(name, serving if ready else not_serving)


def _model_ready(manager, name):
  try:
    with manager.get_handle(model_pb2.ModelSpec(name=name)):
      return True
  except errors.ServingError:
    return False
