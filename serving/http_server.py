"""The REST port's HTTP server, on aiohttp: its limits, timeouts, connection cap,
gzip request bodies and CORS. What a request means is `rest_api.RestHandler`'s job.

The event loop runs in its own thread; each request body goes to the handler
on a thread pool, so a slow Session run never blocks other HTTP requests.
No client can hold the port's resources for long (HttpOptions):

- a body over `max_body_bytes` (after gzip decompression too) is answered
  413 as soon as its Content-Length is seen, without waiting for the body;
- a connection gets `header_timeout_seconds` to send a request's headers,
  counted from its opening or from the end of its last response (so an idle
  keep-alive connection is closed after that long too), and
  `body_timeout_seconds` to send the whole body (408 after that);
- at most `max_connections` connections are open; one more is answered 503
  and closed.

`Content-Encoding: gzip` bodies are decompressed (as TF Serving does), with
the body limit applied to the decompressed size. With `enable_cors` every
response carries TF Serving's CORS headers and an OPTIONS preflight is
answered 200, as `--rest_api_enable_cors_support` does in TF Serving.

With an `ssl_context` (serving/tls.py, from --ssl_config_file) the port speaks
only HTTPS, metrics path included; a TLS handshake gets
`header_timeout_seconds` too, and a failed one (plain HTTP, no or a wrongly
signed client certificate) closes that connection only.
"""

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import threading

from aiohttp import http_exceptions
from aiohttp import web
from aiohttp import web_protocol

from serving import error_log
from serving import errors
from serving import json_codec

log = logging.getLogger("serving.rest")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
# How long the rest of a refused body is read (and dropped) after the answer,
# so the client sees the answer rather than a reset connection.
_LINGER_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class HttpOptions:
  """Limits of the REST port (each a --rest_api_* flag of serving/server.py)."""
  max_body_bytes: int = 32 << 20
  header_timeout_seconds: float = 30.0
  body_timeout_seconds: float = 60.0
  max_connections: int = 1000
  num_threads: int = 64
  enable_cors: bool = False


class ConnectionLog:
  """The logger aiohttp's connection handler writes to: a malformed HTTP
  message is the client's error (one rate-limited line, no traceback); any
  other exception is ours and keeps its traceback."""

  def debug(self, *args, **kwargs):
    pass

  def exception(self, message, *args, exc_info=None, **kwargs):
    if isinstance(exc_info, (http_exceptions.HttpProcessingError,
                             web_protocol.RequestPayloadError)):
      error_log.client_error(
          "REST", f"malformed HTTP request: {type(exc_info).__name__}: {exc_info}")
      return
    log.error(message, *args, exc_info=exc_info or True, **kwargs)


class _ConnectionCap:
  """Counts open connections (used on the event-loop thread only)."""

  def __init__(self, limit):
    self.limit = limit
    self.open = 0

  def acquire(self):
    if self.open >= self.limit:
      return False
    self.open += 1
    return True

  def release(self):
    self.open -= 1


class _Connection(asyncio.Protocol):
  """One accepted connection: handed to aiohttp's handler while under the cap,
  else answered 503 and closed."""

  def __init__(self, make_handler, cap):
    self._make_handler = make_handler
    self._cap = cap
    self._handler = None

  def connection_made(self, transport):
    if not self._cap.acquire():
      error_log.client_error("REST", f"connection refused: {self._cap.limit} are open")
      transport.write(_raw_response(
          503, "Service Unavailable",
          f"Too many open connections: the server takes at most {self._cap.limit} "
          "(--rest_api_max_connections)"))
      transport.close()
      return
    self._handler = self._make_handler()
    self._handler.connection_made(transport)

  def data_received(self, data):
    if self._handler is not None:
      self._handler.data_received(data)

  def eof_received(self):
    return self._handler.eof_received() if self._handler is not None else None

  def pause_writing(self):
    if self._handler is not None:
      self._handler.pause_writing()

  def resume_writing(self):
    if self._handler is not None:
      self._handler.resume_writing()

  def connection_lost(self, exc):
    if self._handler is not None:
      self._cap.release()
      self._handler.connection_lost(exc)
      self._handler = None


class RestServer:
  """aiohttp server on its own event-loop thread; `handler.handle(method, path,
  body)` -> (HTTP status, JSON object) answers each request, but for those of
  a route in `routes` (`matches(method, path)`, `async respond(request, path,
  body)` -> a Response it writes on the loop: the streaming ones)."""

  def __init__(self, handler, host, port, metrics=None, metrics_path=None,
               options=HttpOptions(), ssl_context=None, routes=()):
    self._handler = handler
    self._routes = tuple(routes)
    self._ssl_context = ssl_context
    self._host = host
    self._port = port
    self._metrics = metrics
    self._metrics_path = metrics_path
    self._options = options
    self._cap = _ConnectionCap(options.max_connections)
    self._pool = concurrent.futures.ThreadPoolExecutor(
        options.num_threads, thread_name_prefix="rest")
    self._loop = None
    self._runner = None
    self._server = None
    self._thread = None
    self.port = None

  @property
  def open_connections(self):
    return self._cap.open

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
      self._loop.run_until_complete(self._cleanup())
      self._loop.close()

    self._thread = threading.Thread(target=run, name="rest-loop", daemon=True)
    self._thread.start()
    started.wait()
    if failure:
      raise failure[0]
    return self.port

  async def _start(self):
    app = web.Application(client_max_size=self._options.max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", self._serve)
    # aiohttp's keep-alive timer runs from a connection's opening and from the
    # end of each response until the next request's headers are in: the header
    # timeout.
    self._runner = web.AppRunner(
        app, access_log=None, logger=ConnectionLog(),
        keepalive_timeout=self._options.header_timeout_seconds,
        lingering_time=min(_LINGER_SECONDS, self._options.body_timeout_seconds))
    await self._runner.setup()
    tls = {} if self._ssl_context is None else {
        "ssl": self._ssl_context,
        "ssl_handshake_timeout": self._options.header_timeout_seconds}
    self._server = await asyncio.get_running_loop().create_server(
        lambda: _Connection(self._runner.server, self._cap), self._host, self._port, **tls)
    self.port = self._server.sockets[0].getsockname()[1]

  async def _cleanup(self):
    if self._server is not None:
      self._server.close()
    await self._runner.cleanup()

  async def _serve(self, request):
    response = await self._respond(request)
    if self._options.enable_cors:
      response.headers.update(CORS_HEADERS)
    return response

  async def _respond(self, request):
    path = request.raw_path.split("?", 1)[0]
    if request.method == "GET" and self._metrics_path and path == self._metrics_path:
      body, content_type = self._metrics.render()
      return web.Response(body=body, headers={"Content-Type": content_type})
    if request.method == "OPTIONS" and self._options.enable_cors:
      return web.Response(status=200)
    body = await self._read_body(request)
    if isinstance(body, web.Response):
      return body
    for route in self._routes:
      if route.matches(request.method, path):
        return await route.respond(request, path, body)
    status, obj = await asyncio.get_running_loop().run_in_executor(
        self._pool, self._handler.handle, request.method, path, body)
    return json_response(status, obj)

  async def _read_body(self, request):
    """The (decompressed) body, or the error Response that refuses it."""
    limit = self._options.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
      return _refuse(413, f"Request body of {length} bytes is over the limit of {limit} "
                     "bytes (--rest_api_max_body_bytes)")
    try:
      async with asyncio.timeout(self._options.body_timeout_seconds):
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
      return _refuse(413, f"Request body is over the limit of {limit} bytes "
                     "(--rest_api_max_body_bytes)")
    except TimeoutError:
      return _refuse(408, "Request body not received within "
                     f"{self._options.body_timeout_seconds:g} seconds "
                     "(--rest_api_body_timeout_seconds)")
    except (web_protocol.RequestPayloadError, http_exceptions.HttpProcessingError) as e:
      return _refuse(400, f"Failed to read the request body: {errors.echo(e)}")

  def stop(self):
    if self._loop is not None and self._loop.is_running():
      self._loop.call_soon_threadsafe(self._loop.stop)
    if self._thread is not None:
      self._thread.join()
    self._pool.shutdown(wait=True)


def json_response(status, obj):
  return web.Response(status=status, body=json_codec.dumps(obj),
                      content_type="application/json")


def _refuse(status, message):
  """An error answer after which the connection is closed (its body is unread)."""
  error_log.client_error("REST", f"HTTP {status}: {message}")
  response = json_response(status, {"error": message})
  response.force_close()
  return response


def _raw_response(status, reason, message):
  body = json.dumps({"error": message}).encode("utf-8")
  head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
  return head.encode("ascii") + body
