"""OpenAI-compatible completions on the REST port, over the generation engine.

  GET  /v1/models        the models with a generation engine, as OpenAI's
                         model list ({"object": "list", "data": [...]}); with
                         none, TF Serving's answer (400, no model name).
                         TF Serving's GET /v1/models/NAME stays its status call.
  POST /v1/completions   model, prompt (a string or a list of strings),
                         max_tokens (16), temperature (1), top_p (1), seed
                         (random when absent), stop (a string or up to 4),
                         stream, stream_options.include_usage; and top_k (as
                         vLLM takes it). n, best_of, echo, logprobs, suffix,
                         penalties and logit_bias only at their defaults.

Answers follow OpenAI's: a `text_completion` object with one choice a prompt
(index, text, finish_reason "length" or "stop", logprobs null) and `usage`
(prompt_tokens, completion_tokens, total_tokens); with stream, server-sent
`data:` chunks of the same object carrying each new piece, the last one of a
choice with its finish_reason, then `data: [DONE]`. Errors are OpenAI's shape
{"error": {"message", "type", "param", "code"}} with the HTTP status of the
gRPC code (serving/errors.py: 400 bad settings, 404 unknown model, 429 full
queue, 504 past the deadline). A stream's headers go out with its first
chunk, so an error before it is such an answer too; after it, an error is a
`data: {"error": ...}` chunk followed by `data: [DONE]` (as vLLM ends a
stream that fails). The deadline is --rest_api_timeout_in_ms from the
request's start (<= 0: none), for every prompt of the request: the engine
frees the slots once it has passed and the answer ends with
DEADLINE_EXCEEDED. So the official `openai` client works unchanged with
base_url="http://HOST:PORT/v1".
"""

import asyncio
import secrets
import time
import uuid

from aiohttp import web
from tensorflow_serving.apis import model_pb2

from serving import engine as engine_lib
from serving import error_log
from serving import errors
from serving import generation_rest as rest
from serving import rest_api

DEFAULT_MAX_TOKENS = 16  # OpenAI's default
MAX_STOP_STRINGS = 4
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error",
                429: "rate_limit_error"}
_UNSUPPORTED = (("n", 1), ("best_of", 1), ("echo", False), ("logprobs", None),
                ("suffix", None), ("presence_penalty", 0),
                ("frequency_penalty", 0), ("logit_bias", None))


def error_body(error):
  status = error.http_status
  return status, {"error": {"message": error.message,
                            "type": _ERROR_TYPES.get(status, "server_error"),
                            "param": None, "code": error.code_name.lower()}}


def error_response(error):
  status, body = error_body(error)
  return web.json_response(body, status=status)


def parse_completion_request(obj):
  """(model name, [prompts], Settings, stream, include_usage) or
  INVALID_ARGUMENT."""
  model = obj.get("model")
  if not isinstance(model, str) or not model:
    raise errors.invalid_argument("model must be a model name")
  prompt = obj.get("prompt", "")
  if isinstance(prompt, str):
    prompts = [prompt]
  elif (isinstance(prompt, list) and prompt
        and all(isinstance(p, str) for p in prompt)):
    prompts = prompt
  else:
    raise errors.invalid_argument(
        "prompt must be a string or a non-empty list of strings (token ids "
        "are not taken)")
  for name, default in _UNSUPPORTED:
    value = obj.get(name)
    if value is not None and value != default and not (
        name == "logit_bias" and value == {}):
      raise errors.invalid_argument(f"{name} is only supported at its "
                                    f"default ({default})")
  stop = rest.stop_strings(obj.get("stop"))
  if len(stop) > MAX_STOP_STRINGS:
    raise errors.invalid_argument(
        f"stop takes at most {MAX_STOP_STRINGS} strings")
  seed = rest.field(obj, "seed", int, None)
  settings = engine_lib.Settings(
      max_new_tokens=rest.field(obj, "max_tokens", int, DEFAULT_MAX_TOKENS),
      temperature=rest.field(obj, "temperature", float, 1.0),
      top_k=rest.field(obj, "top_k", int, 0),
      top_p=rest.field(obj, "top_p", float, 1.0),
      seed=secrets.randbits(63) if seed is None else seed, stop=stop)
  stream = rest.field(obj, "stream", bool, False)
  options = obj.get("stream_options") or {}
  if not isinstance(options, dict):
    raise errors.invalid_argument("stream_options must be an object")
  include_usage = rest.field(options, "include_usage", bool, False)
  return model, prompts, settings, stream, include_usage


class OpenAiRoutes:
  """The /v1/models and /v1/completions routes over a GenerationApi;
  `timeout_ms` is --rest_api_timeout_in_ms."""

  def __init__(self, api, manager, timeout_ms=30000):
    self._api = api
    self._manager = manager
    self._timeout_ms = timeout_ms

  def matches(self, method, path):
    if (method, path) == ("GET", "/v1/models"):
      return bool(self._models()["data"])  # else TF Serving's 400
    return (method, path) == ("POST", "/v1/completions")

  async def respond(self, request, path, body):
    if path == "/v1/models":
      return web.json_response(self._models())
    deadline = rest_api.deadline_after(self._timeout_ms)
    try:
      model, prompts, settings, stream, include_usage = (
          parse_completion_request(rest.parse_json_object(body)))
      streams, merged = self._start(model, prompts, settings, deadline)
    except errors.ServingError as e:
      error_log.request_failed("REST", "completions", e)
      return error_response(e)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": model,
            "system_fingerprint": None}
    events = self._events(request, streams, merged, deadline)
    try:
      if stream:
        return await self._stream(request, head, events, len(streams),
                                  include_usage)
      return await self._complete(head, events, len(streams))
    finally:
      await events.aclose()
      for s in streams:
        s.cancel()  # a no-op for finished ones

  def _models(self):
    data = []
    for name in self._manager.model_names():
      try:
        handle, _ = self._api.engine_for(model_pb2.ModelSpec(name=name))
      except errors.ServingError:
        continue
      with handle:
        data.append({"id": name, "object": "model", "created": 0,
                     "owned_by": "zoo"})
    return {"object": "list", "data": data}

  def _start(self, model, prompts, settings, deadline):
    """(streams, the asyncio.Queue of their (index, event)s)."""
    streams = []
    merged = asyncio.Queue()
    loop = asyncio.get_running_loop()
    try:
      for index, prompt in enumerate(prompts):
        streams.append(self._api.start(model_pb2.ModelSpec(name=model),
                                       prompt, settings, deadline,
                                       loop=loop, sink=merged, tag=index))
    except errors.ServingError:
      for s in streams:
        s.cancel()
      raise
    return streams, merged

  async def _events(self, request, streams, merged, deadline):
    """Yields (index, event) as they come, from every stream, and (None, an
    Event with the error) if the deadline passes first; returns early if the
    client goes away (the caller then cancels the streams)."""
    pending = set(range(len(streams)))
    while pending:
      try:
        item = await rest.next_event(
            lambda timeout: _get_within(merged, timeout), request, deadline)
      except errors.ServingError as e:  # the deadline passed
        yield None, engine_lib.Event(error=e)
        return
      if item is None:
        return
      index, event = item
      if event.error is not None or event.finish_reason:
        pending.discard(index)
      yield index, event

  async def _complete(self, head, events, count):
    texts = [""] * count
    reasons = [None] * count
    usage = [(0, 0)] * count
    async for index, event in events:
      if event.error is not None:
        error_log.request_failed("REST", "completions", event.error)
        return error_response(event.error)
      texts[index] += event.text
      reasons[index] = event.finish_reason
      usage[index] = (event.prompt_tokens, event.num_tokens)
    choices = [{"text": t, "index": i, "logprobs": None, "finish_reason": r}
               for i, (t, r) in enumerate(zip(texts, reasons))]
    return web.json_response(dict(head, choices=choices,
                                  usage=_usage(usage)))

  async def _stream(self, request, head, events, count, include_usage):
    response = None  # the event stream, once the first chunk is ready
    usage = [(0, 0)] * count
    extra = {"usage": None} if include_usage else {}
    finished = 0
    failure = None
    try:
      async for index, event in events:
        if event.error is not None:
          failure = event.error
          break
        if response is None:
          response = await rest.start_sse(request)
        usage[index] = (event.prompt_tokens, event.num_tokens)
        finished += bool(event.finish_reason)
        await rest.send_sse(response, dict(head, choices=[{
            "text": event.text, "index": index, "logprobs": None,
            "finish_reason": event.finish_reason}], **extra))
      if failure is not None:
        error_log.request_failed("REST", "completions", failure)
        if response is None:
          return error_response(failure)
        await rest.send_sse(response, error_body(failure)[1])
      elif finished < count:  # the client went away
        return response or web.Response(status=499)
      elif include_usage:
        await rest.send_sse(response, dict(head, choices=[],
                                           usage=_usage(usage)))
      await response.write(b"data: [DONE]\n\n")
      await response.write_eof()
    except ConnectionError:  # the client went away; the streams are cancelled
      pass
    return response or web.Response(status=499)


async def _get_within(queue, timeout):
  """The next item of an asyncio.Queue; None after `timeout` seconds."""
  try:
    return await asyncio.wait_for(queue.get(), timeout)
  except asyncio.TimeoutError:
    return None


def _usage(pairs):
  prompt = sum(p for p, _ in pairs)
  completion = sum(c for _, c in pairs)
  return {"prompt_tokens": prompt, "completion_tokens": completion,
          "total_tokens": prompt + completion}
