"""Peak memory of training on a corpus and on one 10 times larger.

  python -m benchmarks.data_memory

The trainer streams its files through tf.data and learns the vocabulary from
the first --vocabulary_sample_lines rows, so its memory should not grow with
the corpus. This benchmark trains the same model for the same number of
steps on a corpus and on one --scale times larger, each in a fresh
`python -m trainers.train` process, and records each process's peak resident
set size (the kernel's ru_maxrss of that process, from os.wait4 in a small
launcher process: see LAUNCHER). The baseline, measured in the same run, is
the 1x corpus; the figure is the ratio
peak(10x) / peak(1x) per task (goal: at most 1.2).

  text_classification (--preset=small): the bundled SST-2 training rows, each
    ending in " r0" (1x: 67,349 rows), and the same rows --scale times, copy k
    ending in " rk" so that no two rows are equal (10x: 673,490 rows), written
    as --format (.csv or .jsonl.gz); dev: data/sst2/dev.tsv. The 1x rows fit
    in the shuffle buffer (--shuffle_buffer_size, default 100,000 rows) and
    are all held there; the 10x rows do not, so the buffer holds its maximum.
  language_model (--preset=tiny): the first 90% of the lines of
    tiny-shakespeare (1x) and that text --scale times over (10x); dev: the
    last 10% of the lines, the same file for both. The trainer writes the
    token ids of its training text to an unlinked file under the model_dir
    (int32, 4 bytes a character: corpus.token_id_mib) and reads each batch's
    windows back by position, so they are not held in memory.

Both sizes learn their vocabulary from the same first lines (the 10x corpus
starts with the 1x one). Writes benchmarks/results/data_memory.json: the
machine, the commands, and per run the corpus (rows, characters, bytes), the
peak RSS, the wall-clock seconds and the trainer's own results.
"""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

from benchmarks import environment

TASKS = ("text_classification", "language_model")
FORMATS = ("csv", "jsonl.gz")
GOAL_RATIO = 1.2  # issue 19: peak RSS at 10x within 1.2x of 1x

def define_flags():
  """The command line's flags; defined only when this runs as a program, so
  that tests can import its functions next to other benchmarks' flags."""
  flags.DEFINE_list("tasks", list(TASKS), f"Which of {list(TASKS)} to measure.")
  flags.DEFINE_integer("scale", 10, "How many times larger the big corpus is.",
                       lower_bound=2)
  flags.DEFINE_enum("format", "csv", FORMATS, "File type of the classification "
                    "corpora.")
  flags.DEFINE_string("sst2_train", "data/sst2/train.tsv", "SST-2 training rows "
                      "(sentence, label), the 1x classification corpus.")
  flags.DEFINE_string("sst2_dev", "data/sst2/dev.tsv", "SST-2 dev rows.")
  flags.DEFINE_string("shakespeare", "data/tinyshakespeare/input.txt",
                      "The language model's text.")
  flags.DEFINE_integer("classification_steps", 200, "Training steps of each "
                       "text_classification run.", lower_bound=1)
  flags.DEFINE_integer("language_model_steps", 200, "Training steps of each "
                       "language_model run.", lower_bound=1)
  flags.DEFINE_integer("vocabulary_sample_lines", 20_000, "--vocabulary_sample_"
                       "lines of every run.", lower_bound=1)
  flags.DEFINE_integer("shuffle_buffer_size", 100_000, "--shuffle_buffer_size "
                       "of every run (the trainer's default).", lower_bound=1)
  flags.DEFINE_float("poll_seconds", 0.5, "How often the RSS timeline is "
                     "sampled from /proc (the peak comes from the kernel).")
  flags.DEFINE_string("work_dir", "", "Where corpora and model_dirs go "
                      "(default: a temp dir, deleted afterwards).")
  flags.DEFINE_string("output", os.path.join(environment.ROOT, "benchmarks",
                                             "results", "data_memory.json"),
                      "Where the JSON goes.")


FLAGS = flags.FLAGS

MIB = 1 << 20


# --- corpora ----------------------------------------------------------------

def read_tsv(path):
  """[(sentence, label)] of a GLUE-style TSV with a sentence, label header."""
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    text, label = header.index("sentence"), header.index("label")
    rows = []
    for line in f:
      fields = line.rstrip("\n").split("\t")
      if len(fields) == len(header):
        rows.append((fields[text], fields[label]))
  return rows


def write_classification_corpus(rows, copies, path):
  """Writes `copies` passes over rows to path (.csv or .jsonl.gz), copy k's
  texts ending in " r<k>"; returns the number of rows written. Streamed: one
  row in memory at a time beyond `rows`."""
  count = 0
  if path.endswith(".jsonl.gz"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
      for k in range(copies):
        for text, label in rows:
          f.write(json.dumps({"sentence": f"{text} r{k}", "label": label})
                  + "\n")
          count += 1
  elif path.endswith(".csv"):
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["sentence", "label"])
      for k in range(copies):
        for text, label in rows:
          writer.writerow([f"{text} r{k}", label])
          count += 1
  else:
    raise ValueError(f"{path}: expected a .csv or .jsonl.gz name")
  return count


def split_text(path):
  """(first 90% of the lines, the last 10%) of a text file, as str."""
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  if lines and not lines[-1].endswith("\n"):
    lines[-1] += "\n"
  cut = len(lines) - len(lines) // 10
  return "".join(lines[:cut]), "".join(lines[cut:])


def write_text_corpus(text, copies, path):
  """Writes text `copies` times over; returns the number of characters."""
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(copies):
      f.write(text)
  return len(text) * copies


# --- measuring ----------------------------------------------------------------

def rss_mib(pid):
  """VmRSS of a live process in MiB, or None once it is gone."""
  rss = environment.rss_bytes(pid)
  return None if rss is None else rss / 2**20


# Runs in its own small process between this one and the trainer: a child
# spawned straight from here would inherit this process's peak RSS in its
# ru_maxrss (Linux counts the memory a process had before exec), and this
# process has TensorFlow loaded. Writes the trainer's exit status and
# ru_maxrss (KiB) as JSON to argv[1].
LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
  json.dump({"returncode": os.waitstatus_to_exitcode(status),
             "maxrss_kib": usage.ru_maxrss}, f)
"""


def child_pid(pid):
  """The first child of process pid, or None."""
  try:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
      children = f.read().split()
  except OSError:
    return None
  return int(children[0]) if children else None


def measure(command, log_path, poll_seconds=0.5, cwd=None):
  """Runs command to its end; returns {returncode, peak_rss_mib (the kernel's
  ru_maxrss of the command's process), wall_seconds, rss_timeline_mib
  [(s, MiB)]}. Output goes to log_path."""
  samples = []
  usage_path = log_path + ".rusage.json"
  if os.path.exists(usage_path):
    os.remove(usage_path)
  with open(log_path, "w") as log:
    start = time.perf_counter()
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, usage_path, *command], cwd=cwd,
        stdout=log, stderr=subprocess.STDOUT)
    done = threading.Event()

    def poll():
      pid = None
      while not done.wait(poll_seconds):
        pid = pid or child_pid(launcher.pid)
        value = rss_mib(pid) if pid else None
        if value is not None:
          samples.append((round(time.perf_counter() - start, 1),
                          round(value, 1)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    launcher.wait()
    wall = time.perf_counter() - start
    done.set()
    poller.join()
  try:
    with open(usage_path) as f:
      usage = json.load(f)
  except (OSError, ValueError):  # the launcher itself failed
    usage = {"returncode": launcher.returncode or -1, "maxrss_kib": 0}
  return {"returncode": usage["returncode"],
          "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1),
          "wall_seconds": round(wall, 1),
          "rss_timeline_mib": thin(samples, 60)}


def thin(samples, most):
  """At most `most` of the samples, evenly spaced, the largest kept."""
  if len(samples) <= most:
    return samples
  step = len(samples) / most
  kept = [samples[int(i * step)] for i in range(most)]
  peak = max(samples, key=lambda s: s[1])
  return sorted(set(kept) | {peak})


# --- the runs -------------------------------------------------------------------

def trainer_command(task_flags, train_file, model_dir, steps):
  return [sys.executable, "-m", "trainers.train", *task_flags,
          f"--train_files={train_file}", f"--model_dir={model_dir}",
          f"--train_steps={steps}", f"--eval_every_steps={steps}",
          f"--checkpoint_every_steps={steps}",
          f"--log_every_steps={max(1, steps // 4)}",
          f"--vocabulary_sample_lines={FLAGS.vocabulary_sample_lines}",
          f"--shuffle_buffer_size={FLAGS.shuffle_buffer_size}", "--seed=0"]


def classification_runs(work_dir):
  """[(scale, corpus dict, trainer flags, train file)] for both sizes."""
  rows = read_tsv(os.path.join(environment.ROOT, FLAGS.sst2_train))
  task_flags = ["--task=text_classification", "--preset=small",
                f"--eval_files={FLAGS.sst2_dev}", "--text_column=sentence",
                "--label_column=label"]
  runs = []
  for scale in (1, FLAGS.scale):
    path = os.path.join(work_dir, f"sst2_train_x{scale}.{FLAGS.format}")
    count = write_classification_corpus(rows, scale, path)
    runs.append((scale, {"file": os.path.basename(path), "rows": count,
                         "bytes": os.path.getsize(path),
                         "shuffle_buffer_rows": min(
                             count, FLAGS.shuffle_buffer_size),
                         "fits_in_shuffle_buffer":
                             count <= FLAGS.shuffle_buffer_size},
                 task_flags, path))
  return runs


def language_model_runs(work_dir):
  train, dev = split_text(os.path.join(environment.ROOT, FLAGS.shakespeare))
  dev_path = os.path.join(work_dir, "shakespeare_dev.txt")
  write_text_corpus(dev, 1, dev_path)
  task_flags = ["--task=language_model", "--preset=tiny",
                f"--eval_files={dev_path}"]
  runs = []
  for scale in (1, FLAGS.scale):
    path = os.path.join(work_dir, f"shakespeare_train_x{scale}.txt")
    characters = write_text_corpus(train, scale, path)
    runs.append((scale, {"file": os.path.basename(path),
                         "lines": train.count("\n") * scale,
                         "characters": characters,
                         "bytes": os.path.getsize(path),
                         "token_id_mib": round(4 * characters / MIB, 1),
                         "dev_characters": len(dev)},
                 task_flags, path))
  return runs


def trainer_results(model_dir):
  """The trainer's results.json, reduced to what this benchmark reports."""
  path = os.path.join(model_dir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  final = results.get("final") or {}
  kept = {k: final[k] for k in ("accuracy", "loss") if k in final}
  return {"steps": results.get("steps"),
          "train_seconds": round(results.get("train_seconds", 0.0), 1),
          "data": results.get("data"), "final_dev": kept}


def shown(command, work_dir):
  """The command as a shell line, the temp dir written as $WORK."""
  line = " ".join(["python", *command[1:]])
  return line.replace(work_dir, "$WORK")


def run_task(task, work_dir):
  make = {"text_classification": classification_runs,
          "language_model": language_model_runs}[task]
  steps = {"text_classification": FLAGS.classification_steps,
           "language_model": FLAGS.language_model_steps}[task]
  runs = []
  for scale, corpus, task_flags, path in make(work_dir):
    model_dir = os.path.join(work_dir, f"{task}_x{scale}")
    shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run, never a resume
    command = trainer_command(task_flags, path, model_dir, steps)
    print(f"{task} x{scale}: {corpus['bytes'] / MIB:.1f} MiB corpus ...",
          flush=True)
    result = measure(command, model_dir + ".log", FLAGS.poll_seconds,
                     cwd=environment.ROOT)
    if result["returncode"] != 0:
      with open(model_dir + ".log") as f:
        tail = f.read()[-3000:]
      raise RuntimeError(f"{shown(command, work_dir)} failed "
                         f"({result['returncode']}):\n{tail}")
    runs.append(dict(scale=scale, corpus=corpus,
                     command=shown(command, work_dir), **result,
                     trainer=trainer_results(model_dir)))
    print(f"  peak RSS {result['peak_rss_mib']:.0f} MiB, "
          f"{result['wall_seconds']:.0f} s", flush=True)
  small, large = runs
  ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
  summary = {"task": task, "train_steps": steps, "runs": runs,
             "peak_rss_ratio": round(ratio, 3),
             "peak_rss_growth_mib": round(large["peak_rss_mib"] -
                                          small["peak_rss_mib"], 1),
             "goal_ratio": GOAL_RATIO, "meets_goal": ratio <= GOAL_RATIO}
  if task == "language_model":
    summary["token_id_growth_mib"] = round(
        large["corpus"]["token_id_mib"] - small["corpus"]["token_id_mib"], 1)
  return summary


def table(summaries):
  lines = [f"{'task':20s} {'scale':>5s} {'corpus MiB':>10s} {'rows/chars':>11s} "
           f"{'peak RSS MiB':>12s} {'wall s':>7s}"]
  for summary in summaries:
    for run in summary["runs"]:
      corpus = run["corpus"]
      size = corpus.get("rows", corpus.get("characters"))
      lines.append(f"{summary['task']:20s} {run['scale']:>4d}x "
                   f"{corpus['bytes'] / MIB:10.1f} {size:11,d} "
                   f"{run['peak_rss_mib']:12.0f} {run['wall_seconds']:7.0f}")
    lines.append(f"{'':20s} ratio {summary['peak_rss_ratio']:.3f} "
                 f"(goal <= {GOAL_RATIO}: "
                 f"{'met' if summary['meets_goal'] else 'NOT met'})")
  return "\n".join(lines)


NOTES = [
    "peak_rss_mib: ru_maxrss of the trainer process (os.wait4 in a small "
    "launcher process, so that the benchmark's own memory is not counted), "
    "the most resident memory it held at any moment; rss_timeline_mib: "
    "VmRSS sampled from /proc every poll_seconds, thinned to about 60 "
    "points.",
    "Both sizes of a task train the same model with the same flags and "
    "steps; only --train_files differs. Every run learns its vocabulary from "
    "the same first --vocabulary_sample_lines rows.",
    "text_classification: the trainer counts and checks every row in a "
    "first streamed pass, then streams them again through tf.data. Its "
    "shuffle buffer holds min(rows, --shuffle_buffer_size) rows: all of the "
    "1x corpus, and --shuffle_buffer_size rows of the 10x one "
    "(corpus.shuffle_buffer_rows), so part of any growth is the larger "
    "buffer, bounded by the flag, not by the corpus.",
    "language_model: the trainer writes the int32 token ids of the whole "
    "training text to an unlinked file under the model_dir "
    "(corpus.token_id_mib, 4 bytes a character) and reads each batch's "
    "windows back with positioned reads; the ids are not kept in memory.",
]


def main(argv):
  del argv
  unknown = [t for t in FLAGS.tasks if t not in TASKS]
  if unknown:
    raise app.UsageError(f"--tasks: unknown {unknown}; choose from "
                         f"{list(TASKS)}")
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="data_memory_")
  os.makedirs(work_dir, exist_ok=True)
  try:
    summaries = [run_task(task, work_dir) for task in FLAGS.tasks]
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  command = " ".join(["python -m benchmarks.data_memory",
                      *(f"--{name}={FLAGS[name].serialize().split('=', 1)[1]}"
                        for name in ("tasks", "scale", "format",
                                     "classification_steps",
                                     "language_model_steps",
                                     "vocabulary_sample_lines",
                                     "shuffle_buffer_size")
                        if FLAGS[name].present)])
  result = dict(environment.describe(), benchmark="data_memory",
                command=command, baseline="the 1x corpus of the same task, "
                "measured in the same run", scale=FLAGS.scale,
                format=FLAGS.format,
                vocabulary_sample_lines=FLAGS.vocabulary_sample_lines,
                shuffle_buffer_size=FLAGS.shuffle_buffer_size,
                notes=NOTES, tasks=summaries)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print(table(summaries))
  print("wrote", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
