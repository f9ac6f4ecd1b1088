"""The one error type of the server: a gRPC status code plus TF Serving's message.

Every layer raises `ServingError`; the gRPC service turns it into a status, the
REST API into an HTTP code and `{"error": message}` (TF Serving's mapping).
A message never grows with the request: `echo()` cuts every piece of input a
message quotes (names, keys, values) and the message as a whole, so a 100,000
character model name still comes back as a small NOT_FOUND (a status message
over ~8 KB makes the stock grpcio client report RESOURCE_EXHAUSTED instead).
"""

import grpc

# TF Serving's http_server.cc mapping from status code to HTTP status.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# tensorflow.error.Code numbers are the gRPC status numbers.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# UTF-8 bytes of one quoted piece of input, and of a whole message. gRPC
# percent-encodes a status message (up to 3 bytes per byte) into a trailer that
# clients accept up to 8 KB, so 2 KB always arrives.
ECHO_LIMIT = 256
MESSAGE_LIMIT = 2048


def echo(value, limit=ECHO_LIMIT):
  """`value` as text for an error message, cut to `limit` UTF-8 bytes."""
  text = value if isinstance(value, str) else str(value)
  if len(text) <= limit // 4:  # Fast path: cannot be over the limit.
    return text
  data = text.encode("utf-8", "surrogatepass")
  if len(data) <= limit:
    return text
  suffix = f"...({len(text)} characters)"
  cut = data[:max(0, limit - len(suffix))].decode("utf-8", "ignore")
  return cut + suffix


class ServingError(Exception):
  """A request failed with `code` (a grpc.StatusCode) and `message`."""

  def __init__(self, code, message):
    message = echo(message, MESSAGE_LIMIT)
    super().__init__(message)
    self.code = code
    self.message = message

  @property
  def http_status(self):
    return _HTTP_STATUS.get(self.code, 500)

  @property
  def code_name(self):
    return self.code.name

  def __repr__(self):
    return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message):
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message):
  return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def code_from_number(number):
  """grpc.StatusCode for a tensorflow.error.Code / grpc status number."""
  return _BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)


def from_tf_error(error):
  """ServingError for a tf.errors.OpError raised by Session.run."""
  return ServingError(code_from_number(error.error_code), error.message)
