"""tf.distribute on CPU for every family: mirrored over two logical CPUs,
mixed precision and XLA under the strategies, kill -9 and rerun, and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 that
train, checkpoint and export once (the encoder's are preempted with SIGTERM
and rerun first).

Every run of a family uses the same settings with dropout 0, so the same
global batches give the same loss whichever way the batch is split: the
default-strategy run is the reference for all the others.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, data_flags, python_env, seed_model_dir
from tests.task_harness import wait_for

STEPS = 30
FAMILIES = {
    "encoder": ("sst2_subset", dict(task="text_classification", batch_size=32,
                                    learning_rate=2e-3)),
    "decoder": ("shakespeare_subset", dict(task="language_model", batch_size=16,
                                           learning_rate=3e-3)),
    "seq2seq": ("multi30k_subset", dict(task="translation", batch_size=32,
                                        learning_rate=3e-3,
                                        lr_schedule="inverse_sqrt")),
}
COMMON = dict(preset="tiny", train_steps=STEPS, warmup_steps=5,
              log_every_steps=1, eval_every_steps=15, checkpoint_every_steps=5,
              max_checkpoints=5, model_overrides="dropout=0.0")
# Same batches, same arithmetic up to the order of float32 sums: the loss of
# every step of a split-batch run is within this relative tolerance of the
# default strategy's.
LOSS_RTOL = 1e-4
# Mixed-precision and XLA runs under a strategy, one step each from scratch
# (XLA compiles dominate their cost). Every family runs float16 with loss
# scaling under mirrored (XLA on the forward/backward pass only); bfloat16
# runs under one_device for the encoder and under the default strategy (the
# whole step in XLA) for the decoder.
PRECISION_RUNS = {
    "mirrored_mixed_float16_jit": dict(distribution_strategy="mirrored",
                                       mixed_precision="mixed_float16",
                                       jit_compile=True),
    "one_device_mixed_bfloat16_jit": dict(distribution_strategy="one_device",
                                          mixed_precision="mixed_bfloat16",
                                          jit_compile=True),
    "default_mixed_bfloat16_jit": dict(distribution_strategy="default",
                                       mixed_precision="mixed_bfloat16",
                                       jit_compile=True),
}
PRECISION_RUNS_OF = {
    "encoder": ["mirrored_mixed_float16_jit", "one_device_mixed_bfloat16_jit"],
    "decoder": ["mirrored_mixed_float16_jit", "default_mixed_bfloat16_jit"],
    "seq2seq": ["mirrored_mixed_float16_jit"]}
# The multi-worker test preempts (SIGTERM) and restarts this family's run;
# the others train through in one go.
PREEMPTED_FAMILY = "encoder"


def family_settings(family, request):
  fixture, task_settings = FAMILIES[family]
  return dict(COMMON, **data_flags(task_settings["task"],
                                   request.getfixturevalue(fixture)),
              **task_settings)


def flags_of(settings):
  return [f"--{key}={value}" for key, value in settings.items()]


def train_losses(model_dir):
  """The per-step training loss the chief wrote to TensorBoard, by step."""
  import tensorflow as tf
  losses = {}
  train_dir = os.path.join(model_dir, "train")
  for name in sorted(os.listdir(train_dir)):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(train_dir, name)):
      for value in event.summary.value:
        if value.tag == "loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return [losses[step] for step in sorted(losses)]


def read_results(model_dir):
  with open(os.path.join(model_dir, "results.json")) as f:
    return json.load(f)


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def train_command(settings, **overrides):
  return [sys.executable, "-m", "trainers.train",
          *flags_of(dict(settings, **overrides))]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
  return request.param


def even_packed_batch_size(model_dir, settings):
  """The smallest global batch from settings' batch_size up whose packed
  batches (--pack_examples) have an even number of rows at every width on
  one replica: then two replicas get exactly the same batches."""
  import tensorflow as tf
  from trainers.example_packing import PackedEpochs, token_lists
  from zoo import model_config as zoo_model_config
  with open(os.path.join(model_dir, "config.json")) as f:
    model_config = json.load(f)["model"]
  tokenizer = zoo_model_config.build_tokenizer(model_config, model_dir)
  with open(settings["train_files"], encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]  # no header
  sentences = [row[0] for row in rows]
  labels = np.array([int(row[1]) for row in rows], np.int64)
  ids = token_lists(sentences, tokenizer)
  for batch_size in range(settings["batch_size"], settings["batch_size"] + 64):
    epochs = PackedEpochs(ids, labels, tokenizer.sequence_length, batch_size,
                          1, seed=0)
    if all(rows % 2 == 0 for rows in epochs.rows_per_batch.values()):
      return batch_size
  raise AssertionError("no batch size gives even row counts")


@pytest.fixture(scope="module")
def reference_runs(family, request, tmp_path_factory):
  """One process with two logical CPUs trains the family with the default
  strategy, mirrored over both CPUs, and the PRECISION_RUNS; for the
  encoder a second process trains both ways on packed batches with
  adversarial training (a second MirroredStrategy in one process reuses the
  first one's collective keys, and the packed step's gradients have other
  shapes)."""
  settings = family_settings(family, request)
  root = tmp_path_factory.mktemp(f"strategies_{family}")
  groups = [{"default": dict(distribution_strategy="default"),
             "mirrored": dict(distribution_strategy="mirrored"),
             **{name: dict(PRECISION_RUNS[name], train_steps=1,
                           checkpoint_every_steps=1)
                for name in PRECISION_RUNS_OF[family]}}]
  if family == "encoder":
    groups.append({f"{name}_packed": dict(distribution_strategy=name,
                                          pack_examples=True,
                                          adversarial_epsilon=0.5)
                   for name in ("default", "mirrored")})
  for group, runs in enumerate(groups):
    script = root / f"train_{group}.py"
    script.write_text(textwrap.dedent(f"""\
        import json, keras, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tests.conftest import tiny_config
        from tests.conftest import seed_model_dir
        from tests.trainers.test_distributed import even_packed_batch_size
        from trainers.loop import train_and_evaluate
        root, settings, runs = {str(root)!r}, {settings!r}, {runs!r}
        for name, run in runs.items():
          if name != "default":  # the vocabulary is learned once
            seed_model_dir(root + "/default", root + "/" + name)
          if run.get("pack_examples"):
            run["batch_size"] = even_packed_batch_size(root + "/default",
                                                       settings)
          train_and_evaluate(tiny_config(root + "/" + name,
                                         **dict(settings, **run)))
          keras.mixed_precision.set_global_policy("float32")
        """))
    result = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT,
                            env=python_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
  runs = {name: run for runs in groups for name, run in runs.items()}
  return family, settings, {name: str(root / name) for name in runs}


def test_mirrored_over_two_cpus_gives_the_default_loss_curve(reference_runs):
  _, _, dirs = reference_runs
  default, mirrored = (read_results(dirs[name]) for name in ("default",
                                                             "mirrored"))
  assert (default["num_replicas"], mirrored["num_replicas"]) == (1, 2)
  assert mirrored["steps"] == default["steps"] == STEPS
  expected, got = train_losses(dirs["default"]), train_losses(dirs["mirrored"])
  assert len(expected) == len(got) == STEPS
  np.testing.assert_allclose(got, expected, rtol=LOSS_RTOL)
  assert expected[-1] < expected[0]  # it learns at all


def test_packed_adversarial_batches_split_over_two_cpus_give_the_same_losses(
    reference_runs):
  """Each replica perturbs its own examples: the offsets, normalised per
  example, do not depend on how the batch is split."""
  family, _, dirs = reference_runs
  if family != "encoder":
    pytest.skip("packing is for classification")
  default, mirrored = (read_results(dirs[f"{name}_packed"])
                       for name in ("default", "mirrored"))
  assert (default["num_replicas"], mirrored["num_replicas"]) == (1, 2)
  expected = train_losses(dirs["default_packed"])
  got = train_losses(dirs["mirrored_packed"])
  assert len(expected) == len(got) == STEPS
  np.testing.assert_allclose(got, expected, rtol=LOSS_RTOL)
  assert expected[-1] < expected[0]


def test_mixed_precision_and_xla_train_under_the_strategies(reference_runs):
  family, _, dirs = reference_runs
  reference = train_losses(dirs["default"])[0]
  for run in PRECISION_RUNS_OF[family]:
    with open(os.path.join(dirs[run], "config.json")) as f:
      recorded = json.load(f)["train"]
    for key, value in PRECISION_RUNS[run].items():
      assert recorded[key] == value, run
    results = read_results(dirs[run])
    assert results["steps"] == 1, run
    losses = train_losses(dirs[run])
    assert len(losses) == 1 and np.isfinite(losses[0]), run
    # Lower precision, same initial model and batch: the first step's loss is
    # the float32 run's to within bfloat16/float16 rounding.
    assert abs(losses[0] - reference) < 0.05 * reference, (run, losses[0])
    assert all(np.isfinite(value) for value in results["final"].values()
               if isinstance(value, float)), run  # the dev metrics too


def test_kill_9_and_rerun_finishes_like_an_uninterrupted_run(reference_runs,
                                                            tmp_path):
  _, settings, dirs = reference_runs
  seed_model_dir(dirs["default"], tmp_path / "killed")
  command = train_command(settings, model_dir=tmp_path / "killed",
                          distribution_strategy="default")
  first = subprocess.Popen(command, cwd=REPO_ROOT, env=python_env(),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  progress = tmp_path / "killed" / "progress.json"  # written after a save
  wait_for(progress.exists, first, "the first checkpoint")
  first.kill()  # SIGKILL: no handler runs
  first.wait(timeout=60)
  assert first.returncode == -signal.SIGKILL
  assert not (tmp_path / "killed" / "results.json").exists()

  rerun = subprocess.run(command, cwd=REPO_ROOT, env=python_env(),
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "Resumed from" in rerun.stderr
  resumed, reference = (read_results(tmp_path / "killed"),
                        read_results(dirs["default"]))
  assert resumed["steps"] == reference["steps"] == STEPS
  np.testing.assert_allclose(resumed["final_train_loss"],
                             reference["final_train_loss"], rtol=LOSS_RTOL)


def start_workers(log_dir, *worker_settings):
  """One MultiWorkerMirroredStrategy worker per settings dict, on fresh
  127.0.0.1 ports; their logs go to log_dir/worker_<i>.log."""
  cluster = {"worker": [f"127.0.0.1:{port}"
                        for port in free_ports(len(worker_settings))]}
  workers = []
  for index, settings in enumerate(worker_settings):
    env = dict(python_env(), TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    with open(log_dir / f"worker_{index}.log", "w") as log:
      workers.append(subprocess.Popen(
          train_command(settings,
                        distribution_strategy="multi_worker_mirrored"),
          cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log))
  return workers


def finish(workers, log_dir, timeout=600):
  """Waits for the workers; returns [(log text, exit code)]."""
  outcomes = []
  for index, worker in enumerate(workers):
    worker.wait(timeout=timeout)
    outcomes.append(((log_dir / f"worker_{index}.log").read_text(),
                     worker.returncode))
  return outcomes


def test_multi_worker_trains_checkpoints_and_exports_once(reference_runs,
                                                         tmp_path):
  family, settings, dirs = reference_runs
  model_dir, export_dir = tmp_path / "mwms", tmp_path / "exports"
  worker_dir = model_dir / ".workers" / "worker_1"
  worker = dict(settings, model_dir=model_dir, export_dir=export_dir)
  if family == PREEMPTED_FAMILY:
    workers = start_workers(tmp_path, worker, worker)
    # Preempt the non-chief once it trains (its preemption handler is set).
    wait_for(lambda: "Training " in (tmp_path / "worker_1.log").read_text(),
             workers[1], "training to start")
    workers[1].send_signal(signal.SIGTERM)
    outcomes = finish(workers, tmp_path)
    assert [rc for _, rc in outcomes] == [42, 42], outcomes[1][0][-3000:]
    saved = {path: sorted(os.listdir(path / "checkpoints"))
             for path in (model_dir, worker_dir)}
    assert saved[model_dir] == saved[worker_dir]  # the same step on both
    assert any(name.endswith(".index") for name in saved[model_dir])
    assert not export_dir.exists()

  outcomes = finish(start_workers(tmp_path, worker, worker),
                    tmp_path)
  for log, rc in outcomes:
    assert rc == 0, log[-3000:]
    assert ("Resumed from" in log) == (family == PREEMPTED_FAMILY)
  chief, other = read_results(model_dir), read_results(worker_dir)
  assert chief["num_replicas"] == other["num_replicas"] == 2
  assert chief["steps"] == other["steps"] == STEPS
  assert (model_dir / "checkpoints" / f"ckpt-{STEPS}.index").exists()
  assert (worker_dir / "checkpoints" / f"ckpt-{STEPS}.index").exists()
  reference = read_results(dirs["default"])
  np.testing.assert_allclose(chief["final_train_loss"],
                             reference["final_train_loss"], rtol=LOSS_RTOL)
  # Only the chief writes summaries and exports, once.
  assert len(os.listdir(export_dir)) == 1
  assert chief["export"].startswith(str(export_dir))
  assert "export" not in other
  assert not (worker_dir / "train").exists() and not (worker_dir / "eval").exists()


def test_workers_with_different_data_stop_with_a_clear_error(sst2_subset,
                                                             tmp_path):
  other_data = tmp_path / "other_data"
  other_data.mkdir()
  for name in ("train.tsv", "dev.tsv"):
    with open(os.path.join(sst2_subset, name)) as f:
      (other_data / name).write_text("".join(f.readlines()[:1500]))
  settings = dict(COMMON, **FAMILIES["encoder"][1], model_dir=tmp_path / "m")
  workers = start_workers(
      tmp_path, dict(settings, **data_flags("text_classification", sst2_subset)),
      dict(settings, **data_flags("text_classification", other_data)))
  for stderr, returncode in finish(workers, tmp_path):
    assert returncode == 1, stderr[-3000:]
    assert ("the workers disagree on the model config and vocabulary"
            in stderr)
    assert "Traceback" not in stderr
  assert not (tmp_path / "m" / "checkpoints").exists()


def test_multi_worker_workers_train_on_their_own_files(shakespeare_subset,
                                                       tmp_path):
  """With as many training files as workers, worker i tokenizes and trains
  on file i only (distribute_datasets_from_function); both finish the run
  with the same step count and the chief exports."""
  with open(os.path.join(shakespeare_subset, "input.txt")) as f:
    text = f.read()
  lines = text.splitlines(keepends=True)
  half = len(lines) // 2
  files = []
  for index, part in enumerate((lines[:half], lines[half:])):
    path = tmp_path / f"part-{index}.txt"
    path.write_text("".join(part))
    files.append(str(path))
  model_dir = tmp_path / "mwms"
  settings = dict(COMMON, **FAMILIES["decoder"][1], model_dir=model_dir,
                  train_files=str(tmp_path / "part-*.txt"), train_steps=10,
                  eval_every_steps=10, checkpoint_every_steps=10)
  for log, rc in finish(start_workers(tmp_path, settings, settings), tmp_path):
    assert rc == 0, log[-3000:]
    assert "reads its own training files" in log
  chief = read_results(model_dir)
  other = read_results(model_dir / ".workers" / "worker_1")
  assert chief["data"]["worker_train_files"] == [files[0]]
  assert other["data"]["worker_train_files"] == [files[1]]
  assert chief["num_replicas"] == other["num_replicas"] == 2
  assert chief["steps"] == other["steps"] == 10
  assert np.isfinite(chief["final_train_loss"])
