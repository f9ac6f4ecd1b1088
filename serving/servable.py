"""One loaded SavedModel version: a tf.compat.v1 Session fed and fetched by tensor name.

This is how TF Serving's C++ loader runs a model: `loader.load(sess, tags,
path)` into a fresh Graph and Session, then a run with the tensor names the
SignatureDef gives, so TF1 graphs (tf.Example parsing, tables) and TF2
`tf.saved_model.save` exports serve alike. Runs go straight to the C API's
TF_SessionRun, as the C++ `Session::Run` of TF Serving does: Python's
`Session.run` would refuse a feed whose shape differs from the tensor's static
shape ("Cannot feed value of shape (3,) for Tensor x:0, which has shape
(?, 1)"), where TF Serving lets the kernels decide (x of shape [3] or a scalar
fed to half_plus_two's `x:0` is served). A servable counts the requests that
hold it, so the manager can unload a version only once they have finished.
"""

import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.python.client import pywrap_tf_session  # TF_SessionRun, no shape check

from serving import errors

try:  # TF Serving links the tensorflow-text ops; so do we when installed.
  import tensorflow_text  # noqa: F401  pylint: disable=unused-import
except ImportError:  # pragma: no cover
  pass


class Servable:
  """A loaded version. Use `acquire()`/`release()` (or `hold()`) around runs."""

  def __init__(self, name, version, path, tags=("serve",), session_config=None):
    self.name = name
    self.version = version
    self.path = path
    self._graph = tf.Graph()
    self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
    try:
      with self._graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(
            self._session, list(tags), path)
    except Exception:
      self._session.close()
      raise
    self.signature_defs = dict(meta_graph.signature_def)
    # TF_SessionRun sees only the nodes the session knows of: tell it of all.
    self._session._extend_graph()  # pylint: disable=protected-access
    self._endpoint_cache = {}
    self._endpoint_cache_lock = threading.Lock()
    self._refs = 0
    self._retired = False
    self._closed = False
    self._refs_cond = threading.Condition()
    self.batcher = None  # Set by the manager when batching is enabled.
    self.engine = None  # A GenerationEngine, set by the manager (serving/engine.py).

  # ---- reference counting -------------------------------------------------

  def acquire(self):
    """Takes a reference; False if the version is already being unloaded."""
    with self._refs_cond:
      if self._retired:
        return False
      self._refs += 1
      return True

  def release(self):
    with self._refs_cond:
      self._refs -= 1
      self._refs_cond.notify_all()

  def retire_and_close(self):
    """Stops new requests, waits for the in-flight ones, then frees the session."""
    with self._refs_cond:
      self._retired = True
      while self._refs > 0:
        self._refs_cond.wait()
    if self.batcher is not None:
      self.batcher.close()
    if self.engine is not None:
      self.engine.close()
    with self._endpoint_cache_lock:
      self._endpoint_cache.clear()
      self._closed = True
    self._session.close()

  # ---- running --------------------------------------------------------------

  def run(self, feeds, fetches, deadline=None):
    """Runs the graph: feeds {tensor name: ndarray}, fetches [tensor name]."""
    if self.batcher is not None:
      return self.batcher.submit(feeds, fetches, deadline)
    return self.run_unbatched(feeds, fetches, deadline)

  def run_unbatched(self, feeds, fetches, deadline=None):
    names = tuple(sorted(feeds))
    feed_outputs, fetch_outputs = self._endpoints(names, tuple(fetches))
    options = None
    if deadline is not None:
      remaining_ms = int((deadline - time.monotonic()) * 1000)
      if remaining_ms <= 0:
        raise errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
      options = pywrap_tf_session.TF_NewBufferFromString(
          tf.compat.v1.RunOptions(timeout_in_ms=remaining_ms).SerializeToString())
    try:
      outputs = pywrap_tf_session.TF_SessionRun_wrapper(
          self._session._session,  # pylint: disable=protected-access
          options, dict(zip(feed_outputs, (feeds[n] for n in names))),
          list(fetch_outputs), [], None)
    except tf.errors.OpError as e:
      raise errors.from_tf_error(e) from None
    except (ValueError, TypeError) as e:  # A value numpy cannot hand to TF.
      raise errors.invalid_argument(str(e)) from None
    finally:
      if options is not None:
        pywrap_tf_session.TF_DeleteBuffer(options)
    return [_as_array(o) for o in outputs]

  def _endpoints(self, feed_names, fetch_names):
    """The graph's TF_Outputs for these tensor names, cached; this is also where
    a run on an unloading version is refused."""
    key = (feed_names, fetch_names)
    found = self._endpoint_cache.get(key)
    if found is None:
      with self._endpoint_cache_lock:
        if self._closed:
          raise errors.unavailable(
              f"Servable {self.name} version {self.version} is unloading")
        found = self._endpoint_cache.get(key)
        if found is None:
          found = (self._outputs(feed_names, "feed"), self._outputs(fetch_names, "fetch"))
          self._endpoint_cache[key] = found
    return found

  def _outputs(self, names, what):
    outputs = []
    for name in names:
      try:
        tensor = self._graph.get_tensor_by_name(name)
      except (KeyError, ValueError) as e:
        raise errors.invalid_argument(
            f"Tensor {errors.echo(name)}, specified in {what}, is not in the graph: "
            f"{errors.echo(e)}") from None
      outputs.append(tensor._as_tf_output())  # pylint: disable=protected-access
    return outputs


def _as_array(value):
  return value if isinstance(value, np.ndarray) else np.asarray(value)


class Handle:
  """Context manager that holds a servable for the duration of a request."""

  def __init__(self, servable):
    self.servable = servable

  def __enter__(self):
    return self.servable

  def __exit__(self, *exc):
    self.servable.release()
    return False
