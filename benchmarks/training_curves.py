"""Training curves from TensorBoard event files: JSON + one PNG.

  python -m benchmarks.training_curves \
      --run=sst2_small:runs/sst2 --run=shakespeare_small:runs/shakespeare_small \
      --run=multi30k_small:runs/multi30k_small

For each run (NAME:MODEL_DIR) this reads the trainer's `train/` and `eval/`
summaries (tf.summary scalars) and writes benchmarks/results/
training_curves.json (every point, with the date, machine and commit) and
training_curves.png: the training loss and the dev metric the run selects
checkpoints by, against the step.
"""

import glob
import json
import os

from absl import app, flags

from benchmarks import environment
from zoo import model_dir as layout

flags.DEFINE_multi_string("run", [], "NAME:MODEL_DIR of a finished run.")
flags.DEFINE_string("output_dir", os.path.join(environment.ROOT, "benchmarks",
                                               "results"), "Where JSON/PNG go.")
FLAGS = flags.FLAGS


def read_scalars(folder):
  """{tag: [[step, value], ...]} from every event file in folder."""
  import tensorflow as tf
  series = {}
  for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        number = (float(tf.make_ndarray(value.tensor))
                  if value.HasField("tensor") else value.simple_value)
        series.setdefault(value.tag, []).append([int(event.step), number])
  return {tag: sorted(points) for tag, points in series.items()}


def plot(curves, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8),
                           squeeze=False)
  for ax, (name, run) in zip(axes[0], curves.items()):
    steps, values = zip(*run["train"].get("loss", [[0, 0]]))
    ax.plot(steps, values, label="training loss", alpha=0.8)
    dev = run["eval"].get("loss")
    if dev:
      steps, values = zip(*dev)
      ax.plot(steps, values, marker="o", label="dev loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    accuracy = run["eval"].get("accuracy")
    if accuracy and not dev:
      twin = ax.twinx()
      steps, values = zip(*accuracy)
      twin.plot(steps, [100 * v for v in values], marker="o", color="C2",
                label="dev accuracy")
      twin.set_ylabel("dev accuracy (%)")
      twin.legend(loc="center right")
    ax.set_title(name)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  curves = {}
  for spec in FLAGS.run:
    name, _, model_dir = spec.partition(":")
    if not model_dir or not os.path.isdir(model_dir):
      raise app.UsageError(f"--run={spec}: expected NAME:MODEL_DIR")
    curves[name] = {"model_dir": model_dir,
                    "train": read_scalars(layout.path(
                        model_dir, layout.TRAIN_SUMMARIES)),
                    "eval": read_scalars(layout.path(
                        model_dir, layout.EVAL_SUMMARIES))}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, "training_curves.json")
  with open(path, "w") as f:
    json.dump(dict(environment.describe(), runs=curves), f)
    f.write("\n")
  plot(curves, os.path.join(FLAGS.output_dir, "training_curves.png"))
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
