"""Streaming generation on the REST port: our server-sent events route.

  POST /v1/models/NAME[/versions/N|/labels/L]:generate_stream
       {"prompt": "...", "max_new_tokens": 16, "temperature": 0, "top_k": 0,
        "top_p": 1, "seed": 0, "stop": ["..."]}
  ->   text/event-stream, one event a text piece:
       data: {"text": "...", "num_tokens": 3, "prompt_tokens": 6,
              "finish_reason": null}
       the last one with "finish_reason" "length" or "stop".

The headers go out with the first event, so an error before it (bad
settings, a full queue, a deadline passed while waiting for a slot) is TF
Serving's REST error (HTTP status and {"error": message}); after it, an
`event: error` with {"error", "code"} ends the stream. The request's deadline
is TF Serving's one REST timeout, --rest_api_timeout_in_ms from the request's
start (<= 0: none), given to the engine as the gRPC service gives a call's
(the engine frees the slot or queue place before its next step once it has
passed); the route also ends the answer when it passes, even mid-step
(DEADLINE_EXCEEDED: HTTP 504 before the first event). A client that goes
away cancels its request: the connection is watched while waiting for
tokens, so its slot is freed before the next step. The OpenAI-compatible
routes live in serving/openai_api.py; both answer on the event loop and
never hold a REST pool thread while streaming.
"""

import asyncio
import json
import re
import time

import grpc
from aiohttp import web

from serving import engine as engine_lib
from serving import error_log
from serving import errors
from serving import rest_api

_STREAM_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":generate_stream", re.IGNORECASE)
POLL_SECONDS = 0.02  # how often a waiting stream checks its connection
DEFAULT_MAX_NEW_TOKENS = 16


def parse_json_object(body):
  try:
    obj = json.loads(body or b"{}")
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.invalid_argument(f"JSON parse error: {e}") from None
  if not isinstance(obj, dict):
    raise errors.invalid_argument("the request body must be a JSON object")
  return obj


def field(obj, name, kind, default):
  """obj[name] checked against `kind` (int, float, str or bool); absent or
  null: `default`."""
  value = obj.get(name)
  if value is None:
    return default
  if kind in (bool, str):
    ok = isinstance(value, kind)
  else:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
      ok = float(value).is_integer()
  if not ok:
    raise errors.invalid_argument(
        f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, "
        f"got {errors.echo(json.dumps(value), 64)}")
  return kind(value)


def stop_strings(value):
  if value is None:
    return ()
  if isinstance(value, str):
    return (value,)
  if isinstance(value, list) and all(isinstance(s, str) for s in value):
    return tuple(value)
  raise errors.invalid_argument("stop must be a string or a list of strings")


def connection_lost(request):
  transport = request.transport
  return transport is None or transport.is_closing()


def deadline_exceeded():
  """The error of a request past its deadline (the engine's and gRPC's)."""
  return errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                             "Deadline Exceeded")


async def next_event(get, request, deadline):
  """What `get(timeout)` (a coroutine: the next item, or None once `timeout`
  seconds have passed) brings next; None if the client went away. Raises
  DEADLINE_EXCEEDED once `deadline` (a time.monotonic() value or None) has
  passed, even while items keep coming."""
  while True:
    wait = POLL_SECONDS
    if deadline is not None:
      wait = min(wait, deadline - time.monotonic())
      if wait <= 0:
        raise deadline_exceeded()
    item = await get(wait)
    if item is not None:
      return item
    if connection_lost(request):
      return None


async def start_sse(request):
  response = web.StreamResponse(headers={
      "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
  await response.prepare(request)
  return response


async def send_sse(response, obj, event=None):
  head = f"event: {event}\n" if event else ""
  await response.write(f"{head}data: {json.dumps(obj)}\n\n".encode("utf-8"))


class StreamRoute:
  """POST ...:generate_stream over a GenerationApi; `timeout_ms` is
  --rest_api_timeout_in_ms."""

  def __init__(self, api, timeout_ms=30000):
    self._api = api
    self._timeout_ms = timeout_ms

  def matches(self, method, path):
    return method == "POST" and _STREAM_PATH.fullmatch(path) is not None

  async def respond(self, request, path, body):
    deadline = rest_api.deadline_after(self._timeout_ms)
    try:
      spec = rest_api.model_spec_from_path(
          *_STREAM_PATH.fullmatch(path).group(1, 2, 3))
      obj = parse_json_object(body)
      prompt = field(obj, "prompt", str, "")
      settings = engine_lib.Settings(
          max_new_tokens=field(obj, "max_new_tokens", int,
                               DEFAULT_MAX_NEW_TOKENS),
          temperature=field(obj, "temperature", float, 0.0),
          top_k=field(obj, "top_k", int, 0),
          top_p=field(obj, "top_p", float, 1.0),
          seed=field(obj, "seed", int, 0), stop=stop_strings(obj.get("stop")))
      stream = self._api.start(spec, prompt, settings, deadline,
                               loop=asyncio.get_running_loop())
    except errors.ServingError as e:
      return _error_response(e)
    response = None  # the event stream, once the first event is in
    try:
      while True:
        try:
          event = await next_event(stream.aget, request, deadline)
        except errors.ServingError as e:  # the deadline passed
          event = engine_lib.Event(error=e)
        if event is None:  # the client went away
          stream.cancel()
          return response or web.Response(status=499)
        if event.error is not None:
          stream.cancel()  # frees the slot now if the engine has not yet
          if response is None:
            return _error_response(event.error)
          error_log.request_failed("REST", "generate_stream", event.error)
          await send_sse(response, {"error": event.error.message,
                                    "code": event.error.code_name}, "error")
          break
        if response is None:
          response = await start_sse(request)
        await send_sse(response, {
            "text": event.text, "num_tokens": event.num_tokens,
            "prompt_tokens": event.prompt_tokens,
            "finish_reason": event.finish_reason})
        if event.finish_reason:
          break
      await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
      stream.cancel()
      raise
    return response


def _error_response(error):
  error_log.request_failed("REST", "generate_stream", error)
  return web.json_response({"error": error.message}, status=error.http_status)
