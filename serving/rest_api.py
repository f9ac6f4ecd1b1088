"""TF Serving's REST API as (method, path, body) -> (HTTP status, JSON object): model
status, metadata, :predict, :classify and :regress.

Paths and regular expressions are TF Serving's (http_rest_api_util.cc); errors
are `{"error": message}` with TF Serving's status-code-to-HTTP mapping. The
HTTP server in front of it (limits, timeouts, gzip, CORS) is serving/http_server.py.
"""

import re
import time
import urllib.parse

from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from serving import error_log
from serving import errors
from serving import inference
from serving import json_codec

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_INT64_MAX = 2**63 - 1


def deadline_after(timeout_ms):
  """The time.monotonic() deadline of a REST request that starts now, from
  --rest_api_timeout_in_ms (TF Serving's one timeout for every REST call);
  None (no deadline) for a value <= 0, as in TF Serving."""
  return time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None


def model_spec_from_path(name, version, label):
  """ModelSpec for the name/version/label parts of a REST path."""
  spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name or ""))
  if version:
    if len(version) > 19 or int(version) > _INT64_MAX:
      raise errors.invalid_argument(f"Failed to convert version: {errors.echo(version)} to numeric.")
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
      error_log.request_failed("REST", f"{method} {errors.echo(path, 128)}", e)
      return e.http_status, {"error": e.message}
    except Exception as e:  # pylint: disable=broad-except
      error_log.server_fault("REST", f"{method} {errors.echo(path, 128)}")
      return 500, {"error": errors.echo(f"{type(e).__name__}: {e}", 1024)}

  def _deadline(self):
    return deadline_after(self._timeout_ms)

  def _dispatch(self, method, path, body):
    malformed = errors.invalid_argument(
        f"Malformed request: {errors.echo(method)} {errors.echo(path)}")
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
