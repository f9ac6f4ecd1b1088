"""One harness for every generic task, on data a test writes (not the bundled sets).

In the manner of keras-hub's run_task_test: CASES is a table with one TaskCase
per task (its name, a writer that puts the user's files in a folder and
returns the trainer flags that read them, and for the families that serve, a
REST request and a check of the served answer). kill_and_rerun trains a case
uninterrupted and killed-and-rerun; ServerProcess runs `python -m
serving.server` on the export; differing_variables compares checkpoints.
tests/test_tasks_end_to_end.py runs every case through them.

The data are in formats and scripts the bundled recipes do not use:
  text_classification  CSV, RFC 4180 quoting (fields with commas and ""), the
                       columns `message` and `category`, three string labels
                       that a few keywords decide
  language_model       JSONL, the text under the key "body"
  translation          line-aligned Greek (.el) -> Russian (.ru) files
  masked_lm            a gzipped .txt file
"""

import csv
import dataclasses
import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

from tests.conftest import REPO_ROOT, python_env

# Training settings every case shares: the tiny preset, a few steps, a
# checkpoint every CHECKPOINT_EVERY (so a kill can land after the first), and
# dropout in every family (the tiny decoder and seq2seq presets have none),
# so that a resumed run has dropout masks to continue.
STEPS = 40
CHECKPOINT_EVERY = 10
COMMON_FLAGS = dict(preset="tiny", train_steps=STEPS, warmup_steps=5,
                    eval_every_steps=20, checkpoint_every_steps=CHECKPOINT_EVERY,
                    log_every_steps=10, max_checkpoints=5, seed=3,
                    model_overrides="dropout=0.1")

# --- the user's data ----------------------------------------------------------

LABELS = ["bug", "billing", "other"]  # --labels: id order, deliberately unsorted
_KEYWORDS = {
    "billing": ["invoice", "refund", "charged twice", "my card", "the payment"],
    "bug": ["the app crashes", "an error 500", "a stack trace", "it freezes",
            "the button is broken"],
    "other": ["thanks a lot", "the weather", "a nice day", "hello team",
              "a question about lunch"],
}
_FILLERS = ["Hi, ", "Well, honestly, ", "So, ", "Dear support, ", "Um, ok, "]
_ENDINGS = [", please help.", ", see \"attached\", thanks.", ", again, today.",
            ".", ", or so, I think."]


def classification_rows(count, seed):
  """(text, label) rows: every text has a comma, some a quote; the label is
  decided by the keyword it contains."""
  rng = random.Random(seed)
  rows = []
  for i in range(count):
    label = LABELS[i % len(LABELS)]
    text = (rng.choice(_FILLERS) + "about " + rng.choice(_KEYWORDS[label]) +
            rng.choice(_ENDINGS))
    rows.append((text, label))
  rng.shuffle(rows)
  return rows


def write_classification(folder):
  """train.csv / dev.csv with quoted fields; returns the trainer's flags."""
  paths = {}
  for split, count, seed in (("train", 300, 0), ("dev", 60, 1)):
    paths[split] = os.path.join(folder, f"{split}.csv")
    with open(paths[split], "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
      writer.writerow(["id", "message", "category"])
      for i, (text, label) in enumerate(classification_rows(count, seed)):
        writer.writerow([i, text, label])
  with open(paths["train"], encoding="utf-8") as f:
    content = f.read()
  assert '"' in content and '""' in content  # quoted commas and quotes
  return dict(task="text_classification", train_files=paths["train"],
              eval_files=paths["dev"], text_column="message",
              label_column="category", labels=",".join(LABELS),
              batch_size=16, learning_rate=3e-3)


_LM_WORDS = ("the quiet river runs past an old mill where seven ravens sing "
             "of amber fields and silver rain").split()


def write_language_model(folder):
  """corpus.jsonl: one {"id", "body"} object a line; no eval files (the last
  10% of the text is the dev set)."""
  rng = random.Random(2)
  path = os.path.join(folder, "corpus.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for i in range(400):
      body = " ".join(rng.choice(_LM_WORDS) for _ in range(rng.randint(6, 14)))
      f.write(json.dumps({"id": i, "body": body.capitalize() + "."}) + "\n")
  return dict(task="language_model", train_files=path, text_column="body",
              batch_size=8, learning_rate=3e-3)


def write_sentencepiece_language_model(folder):
  """part-1.txt, part-2.txt (a glob) and dev.txt: plain text with blank lines
  and double spaces (SentencePiece must keep them), subword tokenizer."""
  rng = random.Random(3)
  lines = [" ".join(rng.choice(_LM_WORDS) for _ in range(rng.randint(4, 12)))
           .capitalize() + ("." if i % 5 else ".  Then\n") for i in range(500)]
  for name, part in (("part-1.txt", lines[:220]), ("part-2.txt", lines[220:450]),
                     ("dev.txt", lines[450:])):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
      f.write("\n".join(part) + "\n")
  return dict(task="language_model", tokenizer="sentencepiece",
              vocabulary_size=64,
              train_files=os.path.join(folder, "part-*.txt"),
              eval_files=os.path.join(folder, "dev.txt"), batch_size=8,
              learning_rate=3e-3)


# Greek -> Russian, word by word (subject, verb, place): sentences in two
# scripts that neither bundled dataset has.
_SUBJECTS = {"ο σκύλος": "собака", "η γάτα": "кошка", "το παιδί": "ребёнок",
             "ο δάσκαλος": "учитель", "η μητέρα": "мать"}
_VERBS = {"τρέχει": "бежит", "κοιμάται": "спит", "τρώει": "ест",
          "παίζει": "играет"}
_PLACES = {"στο σπίτι": "дома", "στον κήπο": "в саду", "στην πόλη": "в городе",
           "στη θάλασσα": "у моря"}


def translation_pairs():
  return [(f"{s} {v} {p}.", f"{S} {V} {P}.")
          for s, S in _SUBJECTS.items() for v, V in _VERBS.items()
          for p, P in _PLACES.items()]


def write_translation(folder):
  """train.el/train.ru and dev.el/dev.ru, line-aligned; returns the flags."""
  pairs = translation_pairs()
  random.Random(4).shuffle(pairs)
  splits = {"train": pairs * 3, "dev": pairs[:20]}
  # The corpus has about 70 SentencePiece pieces: below the tiny preset's 500.
  flags = dict(task="translation", source_language="el", target_language="ru",
               vocabulary_size=64, batch_size=16, learning_rate=3e-3, lr_schedule="inverse_sqrt")
  for split, rows in splits.items():
    for side, language in ((0, "el"), (1, "ru")):
      path = os.path.join(folder, f"{split}.{language}")
      with open(path, "w", encoding="utf-8") as f:
        f.writelines(row[side] + "\n" for row in rows)
      flags[f"{split}_{'source' if side == 0 else 'target'}_files"] = path
  flags["eval_source_files"] = flags.pop("dev_source_files")
  flags["eval_target_files"] = flags.pop("dev_target_files")
  return flags


def write_masked_lm(folder):
  """sentences.txt.gz: the classification texts, one a line (the last 10%
  held out as dev)."""
  path = os.path.join(folder, "sentences.txt.gz")
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for text, _ in classification_rows(200, 5):
      f.write(text + "\n")
  return dict(task="masked_lm", train_files=path, batch_size=16,
              learning_rate=3e-3)


# --- serving checks -------------------------------------------------------------

def check_classification(predictions, card):
  assert card["labels"] == LABELS
  assert {p["label"] for p in predictions} <= set(LABELS)
  for p in predictions:
    assert len(p["probabilities"]) == len(LABELS)
    assert LABELS[p["label_id"]] == p["label"]


def check_language_model(predictions, card):
  assert card["task"] == "language_model"
  assert [p["num_tokens"] for p in predictions] == [12, 5]
  for p in predictions:
    assert isinstance(p["text"], str) and len(p["text"]) == p["num_tokens"]
    # Characters of the training text only (the vocabulary is learned from it).
    assert set(p["text"]) <= set(" .\n" + "".join(_LM_WORDS) +
                                 "".join(_LM_WORDS).upper())


def check_sentencepiece_language_model(predictions, card):
  assert (card["task"], card["tokenizer"]) == ("language_model",
                                               "sentencepiece_lm")
  assert [p["num_tokens"] for p in predictions] == [12, 5]
  for p in predictions:  # pieces: at least a character each, never [UNK]
    assert isinstance(p["text"], str) and len(p["text"]) >= p["num_tokens"]
    assert "\u2047" not in p["text"]
    assert set(p["text"]) <= set(" .\n" + "".join(_LM_WORDS) + "T" +
                                 "".join(_LM_WORDS).upper())


def check_translation(predictions, card):
  assert (card["source_language"], card["target_language"]) == ("el", "ru")
  assert [len(p["translations"]) for p in predictions] == [4, 4]
  for p in predictions:
    assert all(isinstance(t, str) for t in p["translations"])
    assert len(p["scores"]) == 4


@dataclasses.dataclass
class TaskCase:
  name: str  # the --task value
  write_data: Callable  # write_data(folder) -> the trainer's data flags
  request: dict = None  # a REST :predict body for the export; None: not served
  check: Callable = None  # check(predictions, model_card)


# One greedy and one sampled prompt for the language models' `generate`.
GENERATE_REQUEST = {"signature_name": "generate", "instances": [
    {"prompt": "The quiet", "max_new_tokens": 12, "temperature": 0.0,
     "top_k": 0, "top_p": 1.0, "seed": 0},
    {"prompt": "Ravens", "max_new_tokens": 5, "temperature": 0.8,
     "top_k": 5, "top_p": 0.9, "seed": 7}]}

CASES = {
    "text_classification": TaskCase(
        "text_classification", write_classification,
        {"instances": ["Hi, about the invoice, charged twice, please help.",
                       "the app crashes, with \"an error 500\"",
                       "hello team, a nice day, thanks a lot"]},
        check_classification),
    "language_model": TaskCase(
        "language_model", write_language_model, GENERATE_REQUEST,
        check_language_model),
    "language_model_sentencepiece": TaskCase(
        "language_model", write_sentencepiece_language_model,
        GENERATE_REQUEST, check_sentencepiece_language_model),
    "translation": TaskCase(
        "translation", write_translation,
        {"signature_name": "translate", "instances": [
            {"source": "ο σκύλος τρέχει στον κήπο.", "beam_size": 4,
             "max_output_length": 16, "length_penalty": 0.6},
            {"source": "η γάτα κοιμάται.", "beam_size": 2,
             "max_output_length": 8, "length_penalty": 0.0}]},
        check_translation),
    "masked_lm": TaskCase("masked_lm", write_masked_lm),
}
SERVED = [name for name, case in CASES.items() if case.request is not None]


def train_flags(case, folder, model_dir, **overrides):
  """Every flag of a case's run: COMMON_FLAGS, the data's and `overrides`."""
  flags = dict(COMMON_FLAGS, **case.write_data(str(folder)))
  flags.update(model_dir=str(model_dir), **overrides)
  return flags


def train_command(flags):
  return [sys.executable, "-m", "trainers.train",
          *(f"--{key}={value}" for key, value in flags.items())]


@dataclasses.dataclass
class KilledAndUninterrupted:
  """Two model_dirs of the same run: one trained through, one killed with
  SIGKILL after its first checkpoint and rerun."""
  uninterrupted: str  # its model_dir
  results: dict  # its results.json
  killed: str  # the killed-and-rerun model_dir
  killed_after: list  # the checkpoints the killed run had listed when killed
  rerun_log: str  # the rerun's stderr


def kill_and_rerun(case, folder, export_base=""):
  """Writes case's data twice under `folder` (one copy per run). Starts
  `python -m trainers.train` of the case, kills it with SIGKILL as soon as
  its first checkpoint is listed and reruns the same command to the end;
  meanwhile the same command trains uninterrupted in another process
  (exporting to `export_base` if given). Both runs are subprocesses with the
  same environment, so nothing this test process has imported or set can
  make their arithmetic differ."""
  folder = str(folder)
  flags = {}
  for run in ("uninterrupted", "killed"):
    os.makedirs(os.path.join(folder, run))
    flags[run] = train_flags(case, os.path.join(folder, run),
                             os.path.join(folder, run, "model"))
  if export_base:
    flags["uninterrupted"]["export_dir"] = export_base
  killed_dir = flags["killed"]["model_dir"]
  command = train_command(flags["killed"])
  log_path = os.path.join(folder, "killed.log")
  with open(log_path, "wb") as log:
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=python_env(),
                             stdout=subprocess.DEVNULL, stderr=log)
  through = subprocess.Popen(train_command(flags["uninterrupted"]),
                             cwd=REPO_ROOT, env=python_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
  try:
    wait_for(lambda: checkpoint_listed(killed_dir, CHECKPOINT_EVERY), first,
             "the first checkpoint")
  except AssertionError as e:
    with open(log_path, encoding="utf-8", errors="replace") as f:
      raise AssertionError(f"{e}\n{f.read()[-3000:]}")
  finally:
    first.send_signal(signal.SIGKILL)  # no handler runs, nothing is flushed
    first.wait(timeout=60)
  assert first.returncode == -signal.SIGKILL
  with open(os.path.join(killed_dir, "checkpoints", "checkpoint"),
            encoding="utf-8") as f:
    killed_after = re.findall(r'all_model_checkpoint_paths: "(ckpt-\d+)"',
                              f.read())
  assert not os.path.exists(os.path.join(killed_dir, "results.json")), (
      "the run ended before the kill")
  rerun = subprocess.run(command, cwd=REPO_ROOT, env=python_env(),
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _, through_log = through.communicate(timeout=600)
  assert through.returncode == 0, through_log[-3000:]
  model_dir = flags["uninterrupted"]["model_dir"]
  with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as f:
    results = json.load(f)
  return KilledAndUninterrupted(model_dir, results, killed_dir, killed_after,
                                rerun.stderr)


# --- processes ------------------------------------------------------------------

def wait_for(condition, process, what, timeout=300):
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(f"the process ended (rc {process.returncode}) "
                           f"before {what}")
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.02)


def checkpoint_listed(model_dir, step):
  """Whether model_dir/checkpoints/checkpoint lists ckpt-<step> (written
  after the checkpoint's files, so the checkpoint is complete)."""
  path = os.path.join(str(model_dir), "checkpoints", "checkpoint")
  try:
    with open(path, encoding="utf-8") as f:
      return f"ckpt-{step}\"" in f.read()
  except FileNotFoundError:
    return False


class ServerProcess:
  """`python -m serving.server` on 127.0.0.1 with ports the OS picks (0 and
  -1); the bound ports are read from its log."""

  def __init__(self, model_name, base_path, log_path):
    self.model_name = model_name
    self._log_path = log_path
    self._log = open(log_path, "wb")  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port=0",
         "--rest_api_port=-1", "--host=127.0.0.1",
         f"--model_name={model_name}", f"--model_base_path={base_path}",
         "--enable_model_warmup=true", "--file_system_poll_wait_seconds=0"],
        cwd=REPO_ROOT, env=python_env(), stdout=self._log,
        stderr=subprocess.STDOUT)
    self.grpc_port = self.rest_port = None

  def log(self):
    with open(self._log_path, encoding="utf-8", errors="replace") as f:
      return f.read()

  def wait_until_available(self, timeout=180):
    def ports_bound():
      text = self.log()
      grpc_port = re.search(r"Running gRPC ModelServer at [\d.]+:(\d+)", text)
      rest_port = re.search(r"HTTP/REST API at:[\d.]+:(\d+)", text)
      if grpc_port and rest_port:
        self.grpc_port, self.rest_port = (int(grpc_port.group(1)),
                                          int(rest_port.group(1)))
        return True
      return False

    def available():
      try:
        status = self.get(f"/v1/models/{self.model_name}")
      except (urllib.error.URLError, ConnectionError):
        return False
      return any(v["state"] == "AVAILABLE"
                 for v in status["model_version_status"])

    try:
      wait_for(ports_bound, self.process, "the server's ports", timeout)
      wait_for(available, self.process, "the model to load", timeout)
    except AssertionError as e:
      raise AssertionError(f"{e}\n{self.log()[-3000:]}") from None
    return self

  def get(self, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}",
                                timeout=30) as response:
      return json.load(response)

  def predict(self, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{self.rest_port}/v1/models/{self.model_name}"
        ":predict", data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
      return json.load(response)["predictions"]

  def stop(self):
    """SIGTERM, then the exit code (0 for a clean shutdown)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
      try:
        self.process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    self._log.close()
    return self.process.returncode


# --- checkpoints ----------------------------------------------------------------

def checkpoint_values(prefix):
  """{variable name: numpy value} of a checkpoint, save_counter (how many
  saves this directory made) and the object graph excluded."""
  import numpy as np
  import tensorflow as tf
  reader = tf.train.load_checkpoint(prefix)
  return {name: np.asarray(reader.get_tensor(name))
          for name in reader.get_variable_to_shape_map()
          if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT"))}


def differing_variables(first, second):
  """Names of the variables whose values differ between two checkpoints (or
  that only one has)."""
  import numpy as np
  a, b = checkpoint_values(first), checkpoint_values(second)
  names = sorted(set(a) | set(b))
  return [n for n in names
          if n not in a or n not in b or a[n].shape != b[n].shape or
          not np.array_equal(a[n], b[n])]
