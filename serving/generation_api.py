"""Streaming generation, transport-free: a ModelSpec and settings in, events out.

`GenerationApi.start` resolves the model through the manager (the version is
held until the stream ends, so an unload waits for it, as for any request),
refuses a model without a generation engine, and queues the request on the
version's engine. The gRPC service, the REST SSE route and the OpenAI API all
go through here. `Stream` hands events to a thread (`get`) or to an asyncio
loop (`aget`), and `cancel()` frees the request's slot before the next step.
"""

import asyncio
import queue

import grpc

from serving import errors


class Stream:
  """The events of one generation (serving.engine.Event), in order."""

  def __init__(self, release, loop=None, sink=None, tag=None):
    self._loop = loop
    self._queue = asyncio.Queue() if loop is not None else queue.Queue()
    self._sink = sink  # an asyncio.Queue several streams share: (tag, event)
    self._tag = tag
    self._request = None
    self._engine = None
    self._release = release  # called once the last event is in

  def attach(self, request, engine):
    self._request, self._engine = request, engine

  def push(self, event):  # from the engine thread
    if event.finish_reason is not None or event.error is not None:
      self._release()
    if self._sink is not None:
      self._loop.call_soon_threadsafe(self._sink.put_nowait, (self._tag, event))
    elif self._loop is not None:
      self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
    else:
      self._queue.put(event)

  def get(self, timeout=None):
    """The next event (blocking); None after `timeout` seconds."""
    try:
      return self._queue.get(timeout=timeout)
    except queue.Empty:
      return None

  async def aget(self, timeout=None):
    try:
      return await asyncio.wait_for(self._queue.get(), timeout)
    except asyncio.TimeoutError:
      return None

  def cancel(self):
    if self._request is not None:
      self._request.cancel()
      self._engine.wake()


class GenerationApi:
  """Starts generations on the engines of the manager's models."""

  def __init__(self, manager):
    self._manager = manager

  def engine_for(self, model_spec):
    """(handle, engine) of the version a ModelSpec asks for; the caller
    releases the handle (handle.__exit__) unless it passes it to start."""
    handle = self._manager.get_handle(model_spec)
    engine = handle.servable.engine
    if engine is None:
      handle.__exit__(None, None, None)
      raise errors.ServingError(
          grpc.StatusCode.UNIMPLEMENTED,
          f"Model {errors.echo(model_spec.name)} has no generation engine: "
          "its SavedModel lacks the engine_init, engine_prefill and "
          "engine_step signatures (or the server runs with "
          "--generation_slots=0)")
    return handle, engine

  def start(self, model_spec, prompt, settings, deadline=None, loop=None,
            sink=None, tag=None):
    """A Stream of the generation; ServingError if it cannot start. Events go
    to get() (no loop), to aget() (an asyncio loop) or, as (tag, event), to
    the asyncio.Queue `sink` (with its loop)."""
    handle, engine = self.engine_for(model_spec)
    released = []

    def release():
      if not released:
        released.append(True)
        handle.__exit__(None, None, None)
    stream = Stream(release, loop, sink, tag)
    try:
      stream.attach(engine.submit(prompt, settings, stream.push, deadline),
                    engine)
    except BaseException:
      release()
      raise
    return stream
