"""Finds model versions on disk, loads and unloads them, and hands out servables.

Mirrors TF Serving's FileSystemStoragePathSource + AspiredVersionsManager with
the AvailabilityPreservingPolicy: every `file_system_poll_wait_seconds` each
model's base path is listed; integer-named sub-directories are versions and the
model's version policy (latest N, all, specific) picks the aspired ones. New
aspired versions load in the background (with warmup) and only then take
traffic; versions no longer aspired unload once an aspired version is
available and their in-flight requests have finished. A version that fails to
load is reported through `model_status` and leaves the served one in place.
"""

import concurrent.futures
import dataclasses
import logging
import os
import re
import threading
import time

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving import batching
from serving import config as config_lib
from serving import engine as engine_lib
from serving import errors
from serving import servable as servable_lib

State = get_model_status_pb2.ModelVersionStatus.State
_VERSION_DIR = re.compile(r"^\d{1,18}$")
log = logging.getLogger("serving.model_manager")


@dataclasses.dataclass
class ManagerOptions:
  file_system_poll_wait_seconds: float = 1.0
  saved_model_tags: tuple = ("serve",)
  num_load_threads: int = 1
  num_unload_threads: int = 1
  max_num_load_retries: int = 5
  load_retry_interval_seconds: float = 60.0
  enable_model_warmup: bool = True
  batching: object = None  # config.BatchingOptions or None
  # --enable_per_model_batching_parameters: a version's batching_params.pbtxt
  # replaces `batching` (but for its threads); no such file: no batching.
  per_model_batching: bool = False
  session_config: object = None  # tf.compat.v1.ConfigProto or None
  allow_version_labels_for_unavailable_models: bool = False
  # Ours: models with engine signatures get a GenerationEngine of this many
  # decode slots (0: none) and waiting requests (serving/engine.py).
  generation_slots: int = 0
  generation_max_queue: int = 128
  generation_tokens_per_step: int = 1


@dataclasses.dataclass
class _VersionState:
  state: int
  error: object = None  # errors.ServingError or None
  path: str = ""


class _Model:
  def __init__(self, model_config):
    self.config = model_config
    self.available = {}   # version -> Servable
    self.states = {}      # version -> _VersionState (kept after END, like TF Serving)
    self.loading = set()  # versions with a load scheduled or running
    self.failed = set()   # versions whose load failed; not retried while on disk
    self.aspired = set()
    self.labels = dict(model_config.version_labels)


class ModelManager:
  """Owns every loaded version. Thread-safe."""

  def __init__(self, server_config, options, warmup_fn=None, metrics=None,
               status_note=None, generation_metrics=None):
    """status_note(model name) -> '' or a problem GetModelStatus reports on the
    model's available versions (with error_code OK: they serve)."""
    config_lib.validate_model_server_config(server_config)
    self._options = options
    self._status_note = status_note
    self._warmup_fn = warmup_fn
    self._metrics = metrics
    self._generation_metrics = generation_metrics  # GenerationFamilies or None
    self._lock = threading.RLock()
    self._models = {}
    self._listeners = []
    self._stop = threading.Event()
    self._load_pool = concurrent.futures.ThreadPoolExecutor(
        max(1, options.num_load_threads), thread_name_prefix="model-load")
    self._unload_pool = concurrent.futures.ThreadPoolExecutor(
        max(1, options.num_unload_threads), thread_name_prefix="model-unload")
    self._poll_thread = None
    for model_config in server_config.model_config_list.config:
      self._models[model_config.name] = _Model(model_config)

  # ---- lifecycle --------------------------------------------------------------

  def start(self):
    """Polls once now (loads run in the background), then keeps polling."""
    self.poll()
    wait = self._options.file_system_poll_wait_seconds
    if wait > 0:
      self._poll_thread = threading.Thread(
          target=self._poll_loop, args=(wait,), name="fs-poll", daemon=True)
      self._poll_thread.start()

  def stop(self):
    self._stop.set()
    if self._poll_thread is not None:
      self._poll_thread.join()
    self._load_pool.shutdown(wait=True, cancel_futures=True)
    with self._lock:
      servables = [s for m in self._models.values() for s in m.available.values()]
      for model in self._models.values():
        model.available.clear()
    for s in servables:
      s.retire_and_close()
    self._unload_pool.shutdown(wait=True)

  def add_listener(self, fn):
    """fn() is called after any version changes state."""
    self._listeners.append(fn)

  def wait_until_available(self, timeout):
    """True once every model has an available version or nothing left to load."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
      if self.all_models_settled():
        return True
      time.sleep(0.05)
    return self.all_models_settled()

  def all_models_settled(self):
    with self._lock:
      return all(m.available or not (m.loading or m.aspired - m.failed)
                 for m in self._models.values())

  def all_models_available(self):
    with self._lock:
      return bool(self._models) and all(m.available for m in self._models.values())

  # ---- polling ------------------------------------------------------------------

  def _poll_loop(self, wait):
    while not self._stop.wait(wait):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        log.exception("file system poll failed")

  def poll(self):
    """Lists every base path once and schedules loads and unloads."""
    with self._lock:
      models = list(self._models.values())
    for model in models:
      on_disk = _list_versions(model.config.base_path)
      if on_disk is None:
        continue
      aspired = _apply_policy(model.config.model_version_policy, on_disk)
      with self._lock:
        if self._models.get(model.config.name) is not model:
          continue
        model.aspired = set(aspired)
        model.failed &= set(on_disk)  # Forget failures of versions gone from disk.
        for version in sorted(aspired):
          if (version not in model.available and version not in model.loading
              and version not in model.failed):
            model.loading.add(version)
            model.states[version] = _VersionState(State.START, None, on_disk[version])
            self._load_pool.submit(self._load, model, version, on_disk[version])
        self._unload_unaspired(model)
    self._notify()

  def _unload_unaspired(self, model):
    """Unloads versions no longer aspired, keeping the model available."""
    aspired_ready = any(v in model.available for v in model.aspired)
    pending = any(v in model.loading for v in model.aspired)
    for version in list(model.available):
      if version in model.aspired:
        continue
      if aspired_ready or (not model.aspired and not pending):
        self._unload(model, version)

  def _unload(self, model, version):
    servable = model.available.pop(version)
    model.states[version] = _VersionState(State.UNLOADING, None, servable.path)
    log.info("Unloading servable version {name: %s version: %d}", model.config.name, version)
    self._unload_pool.submit(self._finish_unload, model, servable)

  def _finish_unload(self, model, servable):
    servable.retire_and_close()
    with self._lock:
      model.states[servable.version] = _VersionState(State.END, None, servable.path)
    log.info("Done unloading servable version {name: %s version: %d}",
             servable.name, servable.version)
    self._notify()

  def _load(self, model, version, path):
    name = model.config.name
    with self._lock:
      model.states[version] = _VersionState(State.LOADING, None, path)
    self._notify()
    start = time.monotonic()
    error, servable = None, None
    for attempt in range(1 + max(0, self._options.max_num_load_retries)):
      if self._stop.is_set():
        error = errors.ServingError(grpc.StatusCode.CANCELLED, "server is stopping")
        break
      if attempt:
        log.info("Retrying load of servable version {name: %s version: %d}", name, version)
        if self._stop.wait(self._options.load_retry_interval_seconds):
          break
      try:
        servable = self._load_once(name, version, path)
        error = None
        break
      except errors.ServingError as e:
        error = e
      except Exception as e:  # pylint: disable=broad-except
        error = errors.ServingError(
            grpc.StatusCode.UNKNOWN, f"Failed to load servable {name} "
            f"version {version} from {path}: {type(e).__name__}: {e}")
      log.error("Loading servable version {name: %s version: %d} failed: %s",
                name, version, error.message)
    if self._metrics is not None:
      self._metrics.record_load(name, time.monotonic() - start, error is None)
    with self._lock:
      model.loading.discard(version)
      still_wanted = (self._models.get(name) is model and version in model.aspired
                      and not self._stop.is_set())
      if servable is not None and still_wanted:
        model.available[version] = servable
        model.states[version] = _VersionState(State.AVAILABLE, None, path)
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)
        self._unload_unaspired(model)
      else:
        if error is not None:
          model.failed.add(version)
        model.states[version] = _VersionState(State.END, error, path)
        if servable is not None:
          self._unload_pool.submit(servable.retire_and_close)
        if self._models.get(name) is model:
          self._unload_unaspired(model)
    self._notify()

  def _load_once(self, name, version, path):
    servable = servable_lib.Servable(
        name, version, path, tags=self._options.saved_model_tags,
        session_config=self._options.session_config)
    try:
      if self._options.enable_model_warmup and self._warmup_fn is not None:
        self._warmup_fn(servable)
      batching_options = self._batching_options(path)
      if batching_options is not None:
        servable.batcher = batching.BatchScheduler(
            batching_options, servable.run_unbatched,
            on_batch=self._batch_recorder(name), name=f"batch-{name}-{version}")
      slots = self._options.generation_slots
      if slots > 0 and engine_lib.has_engine_signatures(servable):
        metrics = (self._generation_metrics.for_model(name)
                   if self._generation_metrics is not None else None)
        if metrics is not None:
          metrics.slots_total.set(slots)
        servable.engine = engine_lib.GenerationEngine(
            servable, slots, self._options.generation_max_queue, metrics,
            self._options.generation_tokens_per_step)
    except BaseException:
      servable.retire_and_close()
      raise
    return servable

  def _batching_options(self, path):
    """As TF Serving's GetPerModelBatchingParams."""
    common = self._options.batching
    if common is None or not self._options.per_model_batching:
      return common
    return config_lib.read_version_batching_options(path, common)

  def _batch_recorder(self, name):
    if self._metrics is None:
      return None
    return lambda size, padded: self._metrics.record_batch(name, size, padded)

  def _notify(self):
    for fn in self._listeners:
      try:
        fn()
      except Exception:  # pylint: disable=broad-except
        log.exception("state listener failed")

  # ---- config reload ----------------------------------------------------------------

  def reload_config(self, server_config):
    """HandleReloadConfigRequest: replaces the model list (ServingError if invalid)."""
    if server_config.WhichOneof("config") != "model_config_list":
      raise errors.invalid_argument(
          "ServerModelConfig type not supported by HandleReloadConfigRequest. "
          "Only ModelConfigList is currently supported")
    try:
      config_lib.validate_model_server_config(server_config)
    except config_lib.ConfigError as e:
      raise errors.invalid_argument(str(e)) from None
    with self._lock:
      new_configs = {c.name: c for c in server_config.model_config_list.config}
      for model_config in new_configs.values():
        model = self._models.get(model_config.name)
        for label, version in model_config.version_labels.items():
          ok = model is not None and version in model.available
          if not ok and not self._options.allow_version_labels_for_unavailable_models:
            raise errors.failed_precondition(
                f"Request to assign label to version {version} of model "
                f"{model_config.name}, which is not currently available for inference")
      for name in list(self._models):
        if name not in new_configs:
          model = self._models.pop(name)
          model.aspired = set()
          for version in list(model.available):
            self._unload(model, version)
      for name, model_config in new_configs.items():
        model = self._models.get(name)
        if model is None or model.config.base_path != model_config.base_path:
          if model is not None:
            for version in list(model.available):
              self._unload(model, version)
          self._models[name] = _Model(model_config)
        else:
          model.config = model_config
          model.labels = dict(model_config.version_labels)
    self.poll()

  def model_names(self):
    with self._lock:
      return sorted(self._models)

  # ---- lookups ----------------------------------------------------------------------

  def get_handle(self, model_spec):
    """A Handle (context manager) on the servable a ModelSpec asks for."""
    if not model_spec.name:
      raise errors.invalid_argument("ModelSpec has no name specified.")
    for _ in range(100):
      servable = self._find(model_spec)
      if servable.acquire():
        return servable_lib.Handle(servable)
      time.sleep(0.001)  # It was unloading; the map now has its successor.
    raise errors.unavailable("Servable is being reloaded; try again")

  def _find(self, spec):
    name = spec.name
    choice = spec.WhichOneof("version_choice")
    with self._lock:
      model = self._models.get(name)
      if choice == "version_label":
        label = spec.version_label
        if model is None or label not in model.labels:
          raise errors.invalid_argument(
              f"Unrecognized servable version label: {errors.echo(label)}")
        version = model.labels[label]
        request = f"Specific({errors.echo(name)}, {version})"
      elif choice == "version":
        version = spec.version.value
        request = f"Specific({errors.echo(name)}, {version})"
      else:
        version = None
        request = f"Latest({errors.echo(name)})"
      if model is not None:
        if version is None and model.available:
          return model.available[max(model.available)]
        if version is not None and version in model.available:
          return model.available[version]
        loading = model.loading if version is None else model.loading & {version}
        if loading:
          raise errors.unavailable(
              f"Servable not found for request: {request}; the model is still loading")
      raise errors.not_found(f"Servable not found for request: {request}")

  def model_status(self, model_spec):
    """GetModelStatusResponse for GetModelStatus (TF Serving's messages)."""
    name = model_spec.name
    response = get_model_status_pb2.GetModelStatusResponse()
    with self._lock:
      model = self._models.get(name)
      states = dict(model.states) if model is not None else {}
      if model_spec.WhichOneof("version_choice") == "version_label":
        label = model_spec.version_label
        if model is None or label not in model.labels:
          raise errors.invalid_argument(
              f"Unrecognized servable version label: {errors.echo(label)}")
        wanted = model.labels[label]
      elif model_spec.HasField("version"):
        wanted = model_spec.version.value
      else:
        wanted = None
    if wanted is not None:
      if wanted not in states:
        raise errors.not_found(f"Could not find version {wanted} of model {errors.echo(name)}")
      states = {wanted: states[wanted]}
    elif not states:
      raise errors.not_found(f"Could not find any versions of model {errors.echo(name)}")
    note = self._status_note(name) if self._status_note is not None else ""
    for version in sorted(states, reverse=True):
      st = states[version]
      entry = response.model_version_status.add()
      entry.version = version
      entry.state = st.state
      entry.status.SetInParent()  # TF Serving always reports a status (OK if healthy).
      if st.error is not None:
        entry.status.error_code = st.error.code.value[0]
        entry.status.error_message = st.error.message
      elif note and st.state == State.AVAILABLE:
        entry.status.error_message = note
    return response

  def logging_configs(self):
    """{model name: LoggingConfig} of the models whose config has one."""
    with self._lock:
      return {name: m.config.logging_config for name, m in self._models.items()
              if m.config.HasField("logging_config")}

  def version_states(self):
    """{model: {version: state enum}} for metrics."""
    with self._lock:
      return {name: {v: s.state for v, s in m.states.items()}
              for name, m in self._models.items()}


def _list_versions(base_path):
  """{version: path} of integer-named sub-directories, or None if unreadable."""
  try:
    entries = os.listdir(base_path)
  except OSError as e:
    log.warning("Cannot list model base path %s: %s", base_path, e)
    return None
  versions = {}
  for entry in entries:
    path = os.path.join(base_path, entry)
    if _VERSION_DIR.match(entry) and os.path.isdir(path):
      versions[int(entry)] = path
  if not versions:
    log.warning("No versions of servable found under base path %s", base_path)
  return versions


def _apply_policy(policy, on_disk):
  """The aspired versions of a ServableVersionPolicy over the versions on disk."""
  which = policy.WhichOneof("policy_choice")
  versions = sorted(on_disk)
  if which == "all":
    return versions
  if which == "specific":
    return [v for v in versions if v in set(policy.specific.versions)]
  num = policy.latest.num_versions if which == "latest" else 1
  return versions[-max(1, num):] if versions else []

