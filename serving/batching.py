"""Dynamic batching of Session runs, configured by TF Serving's BatchingParameters.

Like TF Serving's BatchingSession, a `BatchScheduler` sits in front of one
loaded version's `run(feeds, fetches)`. Concurrent runs with the same feed
tensor names, fetch tensor names and per-example shapes (shapes are ignored
when `pad_variable_length_inputs` pads them) wait in one queue; a batch thread
takes up to `max_batch_size` examples once the queue holds that many or its
oldest task has waited `batch_timeout_micros`, concatenates the inputs along
dimension 0 (padding to the next `allowed_batch_sizes` entry by repeating the
first example), runs once and hands each caller its slice of every output.
"""

import collections
import threading
import time

import grpc
import numpy as np

from serving import errors


class _Task:
  __slots__ = ("feeds", "size", "deadline", "enqueued", "done", "result", "error")

  def __init__(self, feeds, size, deadline):
    self.feeds = feeds
    self.size = size
    self.deadline = deadline
    self.enqueued = time.monotonic()
    self.done = threading.Event()
    self.result = None
    self.error = None


class BatchScheduler:
  """Merges concurrent `submit` calls into batched calls of `run_fn`.

  run_fn(feeds: dict name->ndarray, fetches: list[name]) -> list[ndarray].
  on_batch(num_examples, padded_size) is called after each batched run.
  """

  def __init__(self, options, run_fn, on_batch=None, name="batch"):
    self._options = options
    self._run_fn = run_fn
    self._on_batch = on_batch or (lambda n, padded: None)
    self._cond = threading.Condition()
    self._queues = collections.OrderedDict()  # key -> deque[_Task]
    self._closed = False
    self._threads = [
        threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
        for i in range(options.num_batch_threads)
    ]
    for t in self._threads:
      t.start()

  def submit(self, feeds, fetches, deadline=None):
    """Runs `fetches` for `feeds` as part of a batch; returns list of ndarrays."""
    size = _batch_size(feeds)
    if size is None:  # Scalars or ragged dim 0: this run cannot be batched.
      return self._run_fn(feeds, list(fetches))
    max_size = self._options.max_batch_size
    if size > max_size:
      raise errors.invalid_argument(
          f"Task size {size} is larger than maximum input batch size {max_size}")
    key = self._key(feeds, fetches)
    task = _Task(feeds, size, deadline)
    with self._cond:
      if self._closed:
        raise errors.unavailable("The batch scheduler is shut down")
      queue = self._queues.setdefault(key, collections.deque())
      queued = sum(t.size for t in queue) + size
      if -(-queued // max_size) > self._options.max_enqueued_batches:
        raise errors.unavailable(
            "The batch scheduling queue to which this task was submitted is full")
      queue.append(task)
      self._cond.notify_all()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.result

  def close(self):
    """Finishes queued work, then stops the batch threads."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for t in self._threads:
      t.join()

  def _key(self, feeds, fetches):
    names = tuple(sorted(feeds))
    if self._options.pad_variable_length_inputs:
      shapes = tuple(feeds[n].ndim for n in names)
    else:
      shapes = tuple(feeds[n].shape[1:] for n in names)
    dtypes = tuple(feeds[n].dtype.str for n in names)
    return names, tuple(fetches), shapes, dtypes

  def _work(self):
    while True:
      with self._cond:
        key = None
        while key is None:
          key, wait = self._ready_queue()
          if key is None:
            if self._closed and not self._queues:
              return
            self._cond.wait(wait)
        tasks = self._take(key)
      self._run_batch(key, tasks)

  def _ready_queue(self):
    """(key of a queue ready to run, None) or (None, seconds until one may be)."""
    now = time.monotonic()
    timeout = self._options.batch_timeout_micros / 1e6
    wait = None
    for key, queue in self._queues.items():
      if (self._closed or sum(t.size for t in queue) >= self._options.max_batch_size
          or now - queue[0].enqueued >= timeout):
        return key, None
      remaining = queue[0].enqueued + timeout - now
      wait = remaining if wait is None else min(wait, remaining)
    return None, wait

  def _take(self, key):
    queue = self._queues[key]
    tasks, total = [], 0
    while queue and total + queue[0].size <= self._options.max_batch_size:
      task = queue.popleft()
      tasks.append(task)
      total += task.size
    if not queue:
      del self._queues[key]
    else:  # Keep fairness between queues: move this one to the back.
      self._queues.move_to_end(key)
    return tasks

  def _run_batch(self, key, tasks):
    now = time.monotonic()
    live = []
    for task in tasks:
      if task.deadline is not None and now >= task.deadline:
        task.error = errors.ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue")
        task.done.set()
      else:
        live.append(task)
    if not live:
      return
    names, fetches = key[0], list(key[1])
    try:
      total = sum(t.size for t in live)
      padded = _padded_size(total, self._options.allowed_batch_sizes)
      feeds = {n: _concat([t.feeds[n] for t in live], padded - total,
                          self._options.pad_variable_length_inputs)
               for n in names}
      outputs = self._run_fn(feeds, fetches)
      self._on_batch(total, padded)
      if not all(o.ndim >= 1 and o.shape[0] == padded for o in outputs):
        # Outputs without the batch dimension: run these tasks one by one.
        self._run_each(live, fetches)
        return
      start = 0
      for task in live:
        task.result = [o[start:start + task.size] for o in outputs]
        start += task.size
        task.done.set()
    except errors.ServingError as e:
      for task in live:
        task.error = e
        task.done.set()
    except Exception as e:  # pylint: disable=broad-except
      err = errors.ServingError(grpc.StatusCode.INTERNAL, f"batched run failed: {e}")
      for task in live:
        task.error = err
        task.done.set()

  def _run_each(self, tasks, fetches):
    for task in tasks:
      try:
        task.result = self._run_fn(task.feeds, fetches)
      except errors.ServingError as e:
        task.error = e
      task.done.set()


def _batch_size(feeds):
  sizes = {a.shape[0] if a.ndim else None for a in feeds.values()}
  if len(sizes) != 1 or None in sizes:
    return None
  size = sizes.pop()
  return size if size > 0 else None


def _padded_size(total, allowed):
  for size in allowed:
    if size >= total:
      return size
  return total


def _concat(arrays, extra_rows, pad_variable_length):
  if pad_variable_length:
    arrays = _pad_to_common_shape(arrays)
  if extra_rows:
    first = arrays[0][:1]
    arrays = list(arrays) + [np.repeat(first, extra_rows, axis=0)]
  return np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]


def _pad_to_common_shape(arrays):
  """Pads dims 1.. of each array to the largest size, with the array's first element."""
  target = [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
  out = []
  for a in arrays:
    pad = [(0, 0)] + [(0, t - s) for t, s in zip(target, a.shape[1:])]
    if any(p[1] for p in pad):
      if a.size == 0:
        raise errors.invalid_argument("cannot pad an empty tensor")
      if a.dtype == object:
        padded = np.full([a.shape[0]] + target, a.flat[0], dtype=object)
        padded[tuple(slice(0, s) for s in a.shape)] = a
        a = padded
      else:
        a = np.pad(a, pad, mode="constant", constant_values=a.flat[0])
    out.append(a)
  return out
