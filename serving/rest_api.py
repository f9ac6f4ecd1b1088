"""TF Serving's REST API on aiohttp: model status, metadata, :predict, :classify, :regress,
and the Prometheus metrics page.

Paths and regular expressions are TF Serving's (http_rest_api_util.cc). The event
loop runs in its own thread; inference runs on a thread pool so a slow Session
run never blocks other HTTP requests. Errors are `{"error": message}` with TF
Serving's status-code-to-HTTP mapping.
"""

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
import urllib.parse

from aiohttp import web
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from serving import errors
from serving import inference
from serving import json_codec

log = logging.getLogger("serving.rest")

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_INT64_MAX = 2**63 - 1


def model_spec_from_path(name, version, label):
  """ModelSpec for the name/version/label parts of a REST path."""
  spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name or ""))
  if version:
    if int(version) > _INT64_MAX:
      raise errors.invalid_argument(f"Failed to convert version: {version} to numeric.")
    spec.version.value = int(version)
  if label:
    spec.version_label = urllib.parse.unquote(label)
  return spec


class RestHandler:
  """Maps one HTTP request (method, path, body) to (HTTP status, JSON object)."""

  def __init__(self, api, manager, timeout_ms=30000):
    self._api = api
    self._manager = manager
    self._timeout_ms = timeout_ms

  def handle(self, method, path, body):
    try:
      return 200, self._dispatch(method, path, body)
    except errors.ServingError as e:
      return e.http_status, {"error": e.message}
    except Exception as e:  # pylint: disable=broad-except
      log.exception("internal error")
      return 500, {"error": f"{type(e).__name__}: {e}"}

  def _deadline(self):
    return time.monotonic() + self._timeout_ms / 1000 if self._timeout_ms > 0 else None

  def _dispatch(self, method, path, body):
    malformed = errors.invalid_argument(f"Malformed request: {method} {path}")
    if method == "POST":
      match = _PREDICTION_PATH.fullmatch(path)
      if not match:
        raise malformed
      spec = model_spec_from_path(*match.group(1, 2, 3))
      verb = match.group(4).lower()
      if verb == "predict":
        return self._predict(spec, body)
      if verb == "classify":
        return self._classify(spec, body)
      return self._regress(spec, body)
    if method == "GET":
      match = _STATUS_PATH.fullmatch(path)
      if not match:
        raise malformed
      if not match.group(1):
        raise errors.invalid_argument("Missing model name in request.")
      spec = model_spec_from_path(*match.group(1, 2, 3))
      if match.group(4):
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"])
        return json_codec.metadata_json(self._api.model_metadata(request, "REST"))
      return json_codec.status_json(self._manager.model_status(spec))
    raise malformed

  def _parse(self, api, spec, body):
    try:
      return json_codec.parse(body)
    except errors.ServingError as e:
      self._api.record_rejected(api, spec, e, "REST")
      raise

  def _predict(self, spec, body):
    request = predict_pb2.PredictRequest(model_spec=spec)
    doc = self._parse("Predict", spec, body)
    formats = []

    def fill(servable):
      request.model_spec.signature_name = json_codec.signature_name(doc)
      infos = inference.signature_inputs(servable, request.model_spec)
      formats.append(json_codec.fill_predict_request(doc, infos, request))

    response = self._api.predict(request, "REST", self._deadline(), prepare=fill)
    return json_codec.predict_response_json(response, formats[0])

  def _classify(self, spec, body):
    request = classification_pb2.ClassificationRequest(model_spec=spec)
    doc = self._parse("Classify", spec, body)
    response = self._api.classify(request, "REST", self._deadline(),
                                  prepare=lambda _: json_codec.fill_example_request(doc, request))
    return json_codec.classification_json(response.result)

  def _regress(self, spec, body):
    request = regression_pb2.RegressionRequest(model_spec=spec)
    doc = self._parse("Regress", spec, body)
    response = self._api.regress(request, "REST", self._deadline(),
                                 prepare=lambda _: json_codec.fill_example_request(doc, request))
    return json_codec.regression_json(response.result)


class RestServer:
  """aiohttp server on its own event-loop thread."""

  def __init__(self, handler, host, port, metrics=None, metrics_path=None,
               max_body_bytes=1 << 30, num_threads=64):
    self._handler = handler
    self._host = host
    self._port = port
    self._metrics = metrics
    self._metrics_path = metrics_path
    self._max_body = max_body_bytes
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest")
    self._loop = None
    self._runner = None
    self._thread = None
    self.port = None

  def start(self):
    started = threading.Event()
    failure = []

    def run():
      self._loop = asyncio.new_event_loop()
      asyncio.set_event_loop(self._loop)
      try:
        self._loop.run_until_complete(self._start())
      except Exception as e:  # pylint: disable=broad-except
        failure.append(e)
        started.set()
        return
      started.set()
      self._loop.run_forever()
      self._loop.run_until_complete(self._runner.cleanup())
      self._loop.close()

    self._thread = threading.Thread(target=run, name="rest-loop", daemon=True)
    self._thread.start()
    started.wait()
    if failure:
      raise failure[0]
    return self.port

  async def _start(self):
    app = web.Application(client_max_size=self._max_body)
    app.router.add_route("*", "/{tail:.*}", self._serve)
    self._runner = web.AppRunner(app, access_log=None)
    await self._runner.setup()
    site = web.TCPSite(self._runner, self._host, self._port)
    await site.start()
    self.port = self._runner.addresses[0][1]

  async def _serve(self, request):
    path = request.raw_path.split("?", 1)[0]
    if request.method == "GET" and self._metrics_path and path == self._metrics_path:
      body, content_type = self._metrics.render()
      return web.Response(body=body, headers={"Content-Type": content_type})
    try:
      body = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
      return _json_response(413, {"error": f"Request body too large: {e.text}"})
    status, obj = await asyncio.get_running_loop().run_in_executor(
        self._pool, self._handler.handle, request.method, path, body)
    return _json_response(status, obj)

  def stop(self):
    if self._loop is not None and self._loop.is_running():
      self._loop.call_soon_threadsafe(self._loop.stop)
    if self._thread is not None:
      self._thread.join()
    self._pool.shutdown(wait=True)


def _json_response(status, obj):
  return web.Response(status=status, body=json_codec.dumps(obj),
                      content_type="application/json")
