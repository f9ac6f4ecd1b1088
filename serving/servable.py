"""One loaded SavedModel version: a tf.compat.v1 Session fed and fetched by tensor name.

This is how TF Serving's C++ loader runs a model: `loader.load(sess, tags,
path)` into a fresh Graph and Session, then `Session.run` with the tensor names
the SignatureDef gives, so TF1 graphs (tf.Example parsing, tables) and TF2
`tf.saved_model.save` exports serve alike. A servable counts the requests that
hold it, so the manager can unload a version only once they have finished.
"""

import threading
import time

import grpc
import numpy as np
import tensorflow as tf

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
    self._callables = {}
    self._callables_lock = threading.Lock()
    self._refs = 0
    self._retired = False
    self._closed = False
    self._refs_cond = threading.Condition()
    self.batcher = None  # Set by the manager when batching is enabled.

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
    with self._callables_lock:
      self._callables.clear()
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
    try:
      fn = self._callable(names, tuple(fetches))
      if deadline is not None:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
          raise errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        outputs = fn(*[feeds[n] for n in names],
                     options=tf.compat.v1.RunOptions(timeout_in_ms=remaining_ms))
      else:
        outputs = fn(*[feeds[n] for n in names])
    except tf.errors.OpError as e:
      raise errors.from_tf_error(e) from None
    except (ValueError, TypeError) as e:
      raise errors.invalid_argument(str(e)) from None
    return [_as_array(o) for o in outputs]

  def _callable(self, feed_names, fetch_names):
    """A cached Session callable for these feeds and fetches; it takes an
    optional `options=RunOptions` (deadlines). With a feed list, TF's
    make_callable still goes through Session.run on every call (see
    BUILD_NOTES), so this saves no per-request work; it is where a run on an
    unloading version is refused."""
    key = (feed_names, fetch_names)
    fn = self._callables.get(key)
    if fn is None:
      with self._callables_lock:
        if self._closed:
          raise errors.unavailable(
              f"Servable {self.name} version {self.version} is unloading")
        fn = self._callables.get(key)
        if fn is None:
          try:
            fn = self._session.make_callable(
                list(fetch_names), feed_list=list(feed_names),
                accept_options=True)
          except (KeyError, ValueError, TypeError) as e:
            raise errors.invalid_argument(str(e)) from None
          self._callables[key] = fn
    return fn


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
