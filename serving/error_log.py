"""How failed requests are logged: a client's mistake is one line at most,
rate-limited; only a fault of the server itself logs a traceback.

A malformed request (bad bytes, bad JSON, unknown model, wrong dtype) is the
client's error: it gets its status, and the log gets one line, at most
`LINES_PER_WINDOW` of them every `WINDOW_SECONDS` (then one line saying how
many were left out), so a fuzzer or a broken client cannot flood the log. A
ServingError with a server-side code (INTERNAL, UNKNOWN, DATA_LOSS) gets one
ERROR line; an exception that is not a ServingError is a bug of ours and is
logged with its traceback.
"""

import logging
import threading
import time

import grpc

from serving import errors

log = logging.getLogger("serving.requests")

LINES_PER_WINDOW = 10
WINDOW_SECONDS = 10.0
SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                           grpc.StatusCode.DATA_LOSS})


class RateLimiter:
  """Lets at most `lines` log lines through per `window` seconds."""

  def __init__(self, lines=LINES_PER_WINDOW, window=WINDOW_SECONDS, clock=time.monotonic):
    self._lines = lines
    self._window = window
    self._clock = clock
    self._lock = threading.Lock()
    self._start = None
    self._used = 0
    self.suppressed = 0

  def allow(self):
    """(whether this line may be logged, lines refused in the window that just ended)."""
    with self._lock:
      now = self._clock()
      ended = 0
      if self._start is None or now - self._start >= self._window:
        ended, self.suppressed = self.suppressed, 0
        self._start, self._used = now, 0
      if self._used < self._lines:
        self._used += 1
        return True, ended
      self.suppressed += 1
      return False, ended


_LIMITER = RateLimiter()


def _line(level, text, *args):
  allowed, suppressed = _LIMITER.allow()
  if suppressed:
    log.info("%d more failed requests were not logged in the last %gs",
             suppressed, WINDOW_SECONDS)
  if allowed:
    log.log(level, text, *args)


def request_failed(entrypoint, api, error):
  """One (rate-limited) line for a request answered with ServingError `error`."""
  level = logging.ERROR if error.code in SERVER_FAULTS else logging.INFO
  _line(level, "%s %s failed: %s: %s", entrypoint, api, error.code.name,
        errors.echo(error.message, 512))


def client_error(entrypoint, what):
  """One (rate-limited) line for a client error found outside the request
  handlers (an unparsable message, a malformed HTTP request)."""
  _line(logging.INFO, "%s: %s", entrypoint, errors.echo(what, 512))


def server_fault(entrypoint, api):
  """Call inside `except`: the traceback of a fault of the server itself."""
  log.exception("%s %s: internal error", entrypoint, api)

