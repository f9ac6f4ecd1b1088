"""`python -m serving.warmup_from_log`: request logs -> a warmup file for the next export.

  python -m serving.warmup_from_log --log='/var/log/serving/sst2.*.tfrecord' \
      --output=EXPORT/VERSION/assets.extra/tf_serving_warmup_requests

Reads the PredictionLog files serving/request_log.py writes (globs, comma
separated; a bare filename_prefix means all of its files) and writes at most
1000 records (TF Serving's limit, serving/warmup.py) in the warmup format:
PredictionLogs that hold only the request, with the model spec's version and
label cleared so they fit any version. Every (API, signature) pair in the log
keeps at least one record; the other places go to a uniform sample (seeded)
of the remaining records, in log order. A file cut short (a server stopped
mid-write) is read up to its last whole record. The file is written next to
its final path and renamed into place.
"""

import collections
import os
import random
import sys

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import request_log
from serving import warmup

FLAGS = flags.FLAGS
_REPLAYED = frozenset(request_log.LOG_FIELDS.values())  # What warmup.py replays.


def define_flags():
  flags.DEFINE_string("log", None, "Request log files: comma-separated globs, or a "
                      "logging_config filename_prefix.", required=True)
  flags.DEFINE_string("output", None, "The warmup file to write, normally "
                      "EXPORT_DIR/assets.extra/tf_serving_warmup_requests.", required=True)
  flags.DEFINE_string("model_name", "", "Keep only records of this model ('' : all).")
  flags.DEFINE_integer("max_records", warmup.MAX_RECORDS, "Most records to write.",
                       lower_bound=1, upper_bound=warmup.MAX_RECORDS)
  flags.DEFINE_integer("seed", 0, "Seed of the sample.")


def log_files(patterns):
  """Sorted files matching comma-separated globs; a directory or a bare
  filename_prefix stands for the request logs in it or of it."""
  files = set()
  for pattern in filter(None, (p.strip() for p in patterns.split(","))):
    if tf.io.gfile.isdir(pattern):
      pattern = os.path.join(pattern, f"*{request_log.SUFFIX}")
    matched = tf.io.gfile.glob(pattern) or tf.io.gfile.glob(
        f"{pattern}.*{request_log.SUFFIX}")
    files.update(m for m in matched if not tf.io.gfile.isdir(m))
  return sorted(files)


def read_log(paths, model_name=""):
  """Yields the PredictionLogs of `paths` that warmup can replay (of `model_name`)."""
  for path in paths:
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        record = prediction_log_pb2.PredictionLog.FromString(raw)
        if record.WhichOneof("log_type") not in _REPLAYED:
          continue
        if model_name and record.log_metadata.model_spec.name != model_name:
          continue
        yield record
    except tf.errors.DataLossError:
      print(f"warmup_from_log: {path} ends in a partial record; read up to it",
            file=sys.stderr)


def warmup_record(record):
  """The request part of a logged PredictionLog, fit for any version."""
  kind = record.WhichOneof("log_type")
  out = prediction_log_pb2.PredictionLog()
  request = getattr(out, kind).request
  request.CopyFrom(getattr(record, kind).request)
  specs = ([t.model_spec for t in request.tasks] if kind == "multi_inference_log"
           else [request.model_spec])
  for spec in specs:
    spec.ClearField("version_choice")
  return out


def _key(record):
  kind = record.WhichOneof("log_type")
  request = getattr(record, kind).request
  if kind == "multi_inference_log":
    return kind, tuple(sorted(t.model_spec.signature_name for t in request.tasks))
  return kind, request.model_spec.signature_name


def select(records, max_records=warmup.MAX_RECORDS, seed=0):
  """At most `max_records` of `records` (in order): the first of each (API,
  signature) pair, then a seeded uniform sample of the rest."""
  rng = random.Random(seed)
  firsts = {}  # key -> (index, record)
  reservoir, seen = [], 0  # Reservoir sample of the other records.
  for index, record in enumerate(records):
    key = _key(record)
    if key not in firsts:
      firsts[key] = (index, record)
      continue
    seen += 1
    if len(reservoir) < max_records:
      reservoir.append((index, record))
    else:
      slot = rng.randrange(seen)
      if slot < max_records:
        reservoir[slot] = (index, record)
  chosen = sorted(firsts.values(), key=lambda item: item[0])[:max_records]
  room = max_records - len(chosen)
  chosen += rng.sample(reservoir, min(room, len(reservoir)))
  return [record for _, record in sorted(chosen, key=lambda item: item[0])]


def write_warmup_file(records, output):
  """Writes `records` as a TFRecord at `output` (temp file + rename)."""
  parent = os.path.dirname(output)
  if parent:
    tf.io.gfile.makedirs(parent)
  tmp = f"{output}.tmp-{os.getpid()}"
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      writer.write(record.SerializeToString())
  tf.io.gfile.rename(tmp, output, overwrite=True)


def convert(patterns, output, model_name="", max_records=warmup.MAX_RECORDS, seed=0):
  """Log files -> warmup file; returns {(API field, signature): records written}."""
  paths = log_files(patterns)
  if not paths:
    raise FileNotFoundError(f"no request log files match {patterns!r}")
  records = [warmup_record(r) for r in select(read_log(paths, model_name), max_records, seed)]
  if not records:
    raise ValueError(f"no Predict/Classify/Regress/MultiInference records"
                     f"{' of model ' + model_name if model_name else ''} in {len(paths)} "
                     "log files")
  write_warmup_file(records, output)
  return collections.Counter(_key(r) for r in records)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    counts = convert(FLAGS.log, FLAGS.output, FLAGS.model_name, FLAGS.max_records,
                     FLAGS.seed)
  except (OSError, ValueError, tf.errors.OpError) as e:
    print(f"warmup_from_log: error: {e}", file=sys.stderr)
    return 1
  summary = ", ".join(f"{kind}/{sig or '(default)'}: {n}"
                      for (kind, sig), n in sorted(counts.items()))
  print(f"wrote {sum(counts.values())} warmup records to {FLAGS.output} ({summary})")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
