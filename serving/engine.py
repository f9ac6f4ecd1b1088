"""Continuously batched generation over a loaded model's engine signatures.

A `GenerationEngine` drives one servable whose SavedModel has the engine
signatures (`engine_init`, `engine_prefill`, `engine_step`: see
README, "Streaming generation"); it knows nothing else of the model. One
thread runs the loop (iteration-level scheduling, as Orca, vLLM and
JetStream do):

  1. free the slots of cancelled or expired requests;
  2. take waiting requests into the free slots, all in one engine_prefill
     call (each gets its first token there);
  3. one engine_step advances every occupied slot by `tokens_per_step`
     tokens (1 by default); a finished, stopped, cancelled or expired
     request leaves its slot at once.

The queue of waiting requests is bounded (`submit` raises RESOURCE_EXHAUSTED
when it is full); settings are checked before a request is queued
(INVALID_ARGUMENT). Stop strings are matched on the text: the text of a stop
string is not sent, and text that could still begin one is held back until
it cannot. Each request gets `Event`s through its own callback, from the
engine thread: text pieces, then one final event with the finish reason
("length" or "stop") or an error.
"""

import codecs
import collections
import dataclasses
import logging
import threading
import time

import grpc
import numpy as np

from serving import errors

INIT, PREFILL, STEP = "engine_init", "engine_prefill", "engine_step"
log = logging.getLogger("serving.engine")


def has_engine_signatures(servable):
  return all(k in servable.signature_defs for k in (INIT, PREFILL, STEP))


@dataclasses.dataclass
class Settings:
  """Per-request generation settings (those of the `generate` signature)."""
  max_new_tokens: int = 16
  temperature: float = 0.0  # 0 = greedy
  top_k: int = 0  # 0 = no limit
  top_p: float = 1.0  # 1 = no limit
  seed: int = 0
  stop: tuple = ()  # stop strings; none is sent


@dataclasses.dataclass
class Event:
  text: str = ""  # new text since the last event
  num_tokens: int = 0  # tokens generated so far
  prompt_tokens: int = 0
  finish_reason: str = None  # "length" or "stop" on the last event
  error: errors.ServingError = None  # set on a last event that failed


class Request:
  """One generation; `cancel()` frees its slot before the next step."""

  def __init__(self, prompt, settings, notify, deadline):
    self.prompt = prompt
    self.settings = settings
    self.notify = notify  # called with each Event, from the engine thread
    self.deadline = deadline  # time.monotonic() value or None
    self.cancelled = False
    self.finished = False
    self.submitted = time.monotonic()
    self.last_token_time = None
    self.text = ""  # generated so far
    self.sent = 0  # characters of text already sent
    # Tokens are bytes (a byte-level BPE token may end inside a character):
    # bytes of an unfinished UTF-8 character wait for the next token.
    self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    self.num_tokens = 0
    self.prompt_tokens = 0

  def cancel(self):
    self.cancelled = True

  def expired(self, now):
    return self.deadline is not None and now >= self.deadline


def _holdback(text, stops):
  """Length of the longest end of `text` that begins some stop string."""
  longest = 0
  for stop in stops:
    for n in range(min(len(stop) - 1, len(text)), longest, -1):
      if text.endswith(stop[:n]):
        longest = n
        break
  return longest


class GenerationEngine:
  """The scheduler over `num_slots` decode slots of one servable."""

  def __init__(self, servable, num_slots, max_queue, metrics=None,
               tokens_per_step=1):
    self._servable = servable
    self.num_slots = num_slots
    self.tokens_per_step = tokens_per_step
    self.max_queue = max_queue
    self._metrics = metrics  # GenerationMetrics or None
    self._signatures = {k: servable.signature_defs[k]
                        for k in (INIT, PREFILL, STEP)}
    self._cond = threading.Condition()
    self._queue = collections.deque()
    self._slots = [None] * num_slots  # Request or None
    self._closed = False
    out = self._run(INIT, {"slot": np.arange(num_slots, dtype=np.int32)})
    self.context = int(out["context"][0])
    self._warm_up()
    self._thread = threading.Thread(
        target=self._loop, name=f"engine-{servable.name}-{servable.version}",
        daemon=True)
    self._thread.start()

  # ---- the signatures ----------------------------------------------------

  def _run(self, key, inputs):
    signature = self._signatures[key]
    feeds = {signature.inputs[k].name: v for k, v in inputs.items()}
    aliases = sorted(signature.outputs)
    values = self._servable.run_unbatched(
        feeds, [signature.outputs[a].name for a in aliases])
    return dict(zip(aliases, values))

  def _prefill(self, requests, slots):
    s = [r.settings for r in requests]
    return self._run(PREFILL, {
        "prompt": np.array([r.prompt.encode("utf-8") for r in requests],
                           object),
        "slot": np.array(slots, np.int32),
        "max_new_tokens": np.array([x.max_new_tokens for x in s], np.int32),
        "temperature": np.array([x.temperature for x in s], np.float32),
        "top_k": np.array([x.top_k for x in s], np.int32),
        "top_p": np.array([x.top_p for x in s], np.float32),
        "seed": np.array([x.seed for x in s], np.int64)})

  def _warm_up(self):
    """One prefill and step, so the first request does not pay for them."""
    self._prefill([Request("", Settings(max_new_tokens=2), None, None)], [0])
    self._run(STEP, {"active": np.eye(self.num_slots, 1, dtype=bool)[:, 0],
                     "steps": np.ones([self.num_slots], np.int32)})
    self._run(INIT, {"slot": np.arange(self.num_slots, dtype=np.int32)})

  # ---- the API -------------------------------------------------------------

  def validate(self, settings):
    """INVALID_ARGUMENT for settings the model cannot take."""
    s = settings
    problems = []
    if not 0 <= s.max_new_tokens <= self.context - 1:
      problems.append(f"max_new_tokens must be in [0, {self.context - 1}] "
                      f"(the context minus the start token), got "
                      f"{s.max_new_tokens}")
    if not s.temperature >= 0:
      problems.append(f"temperature must be >= 0 (0 = greedy), got "
                      f"{s.temperature}")
    if s.top_k < 0:
      problems.append(f"top_k must be >= 0 (0 = no limit), got {s.top_k}")
    if not 0 < s.top_p <= 1:
      problems.append(f"top_p must be in (0, 1] (1 = no limit), got {s.top_p}")
    if not -2**63 <= s.seed < 2**63:
      problems.append("seed must be a 64-bit signed integer")
    if any(not isinstance(x, str) or not x for x in s.stop):
      problems.append("stop strings must be non-empty strings")
    if problems:
      raise errors.invalid_argument("; ".join(problems))

  def submit(self, prompt, settings, notify, deadline=None):
    """Queues a generation; returns its Request (cancel() to stop it)."""
    self.validate(settings)
    request = Request(prompt, settings, notify, deadline)
    with self._cond:
      if self._closed:
        raise errors.unavailable("the generation engine is stopping")
      if len(self._queue) >= self.max_queue:
        raise errors.ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the generation queue is full ({self.max_queue} waiting)")
      self._queue.append(request)
      self._update_gauges()
      self._cond.notify_all()
    return request

  def wake(self):
    """Makes the loop look at cancellations now (e.g. after cancel())."""
    with self._cond:
      self._cond.notify_all()

  def occupancy(self):
    with self._cond:
      return sum(r is not None for r in self._slots), len(self._queue)

  def close(self):
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    self._thread.join()
    for request in list(self._queue) + [r for r in self._slots if r]:
      self._finish(request, error=errors.unavailable(
          "the model version is unloading"))

  # ---- the loop ------------------------------------------------------------

  def _loop(self):
    while True:
      with self._cond:
        while not self._closed and not self._queue and not any(self._slots):
          self._cond.wait()
        if self._closed:
          return
      try:
        self._free_abandoned()
        self._admit()
        if any(self._slots):
          self._step()
      except errors.ServingError as e:  # the model failed: fail its requests
        log.error("generation engine step failed: %s", e.message)
        for request in [r for r in self._slots if r]:
          self._finish(request, error=e)
      except Exception as e:  # pylint: disable=broad-except
        log.exception("generation engine failed")
        failure = errors.ServingError(grpc.StatusCode.INTERNAL,
                                      f"{type(e).__name__}: {e}")
        for request in [r for r in self._slots if r]:
          self._finish(request, error=failure)

  def _free_abandoned(self):
    now = time.monotonic()
    for request in [r for r in self._slots if r]:
      if request.cancelled:
        self._finish(request, error=errors.ServingError(
            grpc.StatusCode.CANCELLED, "the request was cancelled"))
      elif request.expired(now):
        self._finish(request, error=errors.ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

  def _admit(self):
    now = time.monotonic()
    taken, slots = [], []
    with self._cond:
      stale = [r for r in self._queue if r.cancelled or r.expired(now)]
      for request in stale:
        self._queue.remove(request)
      free = [i for i, r in enumerate(self._slots) if r is None]
      while free and self._queue:
        request = self._queue.popleft()
        slot = free.pop(0)
        self._slots[slot] = request
        taken.append(request)
        slots.append(slot)
      self._update_gauges()
    for request in stale:
      self._finish(request, error=errors.ServingError(
          grpc.StatusCode.CANCELLED, "the request was cancelled")
          if request.cancelled else errors.ServingError(
              grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    if not taken:
      return
    try:
      out = self._prefill(taken, slots)
    except errors.ServingError as e:
      for request in taken:
        self._finish(request, error=e)
      return
    for row, request in enumerate(taken):
      request.prompt_tokens = int(out["prompt_tokens"][row])
      self._deliver(request, out, row)

  def _step(self):
    active = np.array([r is not None for r in self._slots])
    start = time.monotonic()
    out = self._run(STEP, {"active": active, "steps": np.full(
        [self.num_slots], self.tokens_per_step, np.int32)})
    if self._metrics is not None:
      self._metrics.step_seconds.observe(time.monotonic() - start)
    for slot, request in enumerate(self._slots):
      if request is not None:
        self._deliver(request, out, slot)

  def _deliver(self, request, out, row):
    """Hands a request its new token's text; finishes it when done."""
    now = time.monotonic()
    count = int(out["num_tokens"][row])
    if count > request.num_tokens and self._metrics is not None:
      if request.last_token_time is None:
        self._metrics.time_to_first_token.observe(now - request.submitted)
      else:  # a step may bring several tokens: the mean gap of each
        self._metrics.inter_token_latency.observe(
            (now - request.last_token_time) / (count - request.num_tokens))
      self._metrics.tokens_generated.inc(count - request.num_tokens)
    if count > request.num_tokens:
      request.last_token_time = now
    request.num_tokens = count
    request.text += request.utf8.decode(out["text"][row],
                                        final=bool(out["done"][row]))
    stops = request.settings.stop
    found = [i for i in (request.text.find(s, max(0, request.sent - len(s)))
                         for s in stops) if i >= 0]
    if found:
      request.text = request.text[:min(found)]
      self._finish(request, finish_reason="stop")
    elif out["done"][row]:
      self._finish(request, finish_reason="length")
    else:
      ready = len(request.text) - _holdback(request.text, stops)
      if ready > request.sent:
        piece = request.text[request.sent:ready]
        request.sent = ready
        self._send(request, Event(piece, count, request.prompt_tokens))

  def _finish(self, request, finish_reason=None, error=None):
    if request.finished:
      return
    request.finished = True
    with self._cond:
      for slot, r in enumerate(self._slots):
        if r is request:
          self._slots[slot] = None
      self._update_gauges()
    piece = "" if error is not None else request.text[request.sent:]
    request.sent = len(request.text)
    self._send(request, Event(piece, request.num_tokens, request.prompt_tokens,
                              finish_reason, error))

  def _send(self, request, event):
    try:
      request.notify(event)
    except Exception:  # pylint: disable=broad-except
      log.exception("a generation stream's callback failed")
      request.cancel()

  def _update_gauges(self):
    if self._metrics is not None:
      self._metrics.queue_length.set(len(self._queue))
      self._metrics.slots_occupied.set(sum(r is not None for r in self._slots))
