"""Exports a model_dir's weights with an older commit's code (a baseline).

A speed bar stated against an older commit needs that commit's export of the
same weights. Its layers may name their variables differently (before the
decoding work, encoder blocks were keras_hub TransformerEncoders:
self_attention_layer, feedforward_intermediate_dense, ...), so a checkpoint
of today's code does not restore there. This tool reads the checkpoint with
today's code, writes every weight by variable path to an .npz, and runs a
script in a worktree of the old commit that builds that commit's model from
the same config.json, assigns the weights by path (RENAMES applied), saves a
checkpoint it reads and exports it with its own exporter.

  git worktree add /tmp/old93 93488f8
  python -m benchmarks.old_commit_export --model_dir=runs/multi30k_small \\
      --checkpoint=averaged --worktree=/tmp/old93 --export_base=/tmp/mt_old
"""

import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("model_dir", "runs/multi30k_small", "A trained model_dir.")
flags.DEFINE_string("checkpoint", "averaged", "Its checkpoint to export.")
flags.DEFINE_string("worktree", None, "A checkout of the older commit.")
flags.DEFINE_string("export_base", None, "Where the old code's export goes.")
FLAGS = flags.FLAGS

# Today's variable path pieces -> the older encoder blocks' (keras_hub names).
RENAMES = (("/attention/", "/self_attention_layer/"),
           ("/attention_norm/", "/self_attention_layer_norm/"),
           ("/mlp_norm/", "/feedforward_layer_norm/"),
           ("/mlp_in/", "/feedforward_intermediate_dense/"),
           ("/mlp_out/", "/feedforward_output_dense/"))

OLD_SIDE = '''
import json, os, shutil, sys
import numpy as np, tensorflow as tf
from zoo import model_config
source, work, weights, renames = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
for name in os.listdir(source):
  if os.path.isfile(os.path.join(source, name)):
    shutil.copy(os.path.join(source, name), work)
config = json.load(open(os.path.join(work, "config.json")))["model"]
model = model_config.build_model(config)
model(model_config.dummy_inputs(config))
values = dict(np.load(weights))
def old_path(path):
  if "/encoder_block_" in path:
    for new, old in renames:
      path = path.replace(new, old)
  return path
values = {old_path(k): v for k, v in values.items()}
targets = {w.path: w for w in model.weights}
assert set(targets) == set(values), (sorted(set(targets) ^ set(values)))[:8]
for path, variable in targets.items():
  variable.assign(values[path])
print(tf.train.Checkpoint(model=model).save(os.path.join(work, "converted", "ckpt")))
'''


def main(argv):
  del argv
  import numpy as np
  from export.exporter import load_trained_model
  model = load_trained_model(FLAGS.model_dir, FLAGS.checkpoint)[0]
  work = tempfile.mkdtemp(prefix="old_commit_")
  weights = os.path.join(work, "weights.npz")
  np.savez(weights, **{w.path: w.numpy() for w in model.weights})
  env = dict(os.environ, PYTHONPATH=FLAGS.worktree)
  checkpoint = subprocess.run(
      [sys.executable, "-c", OLD_SIDE, os.path.abspath(FLAGS.model_dir), work,
       weights, repr(RENAMES)], cwd=FLAGS.worktree, env=env, check=True,
      capture_output=True, text=True).stdout.strip().splitlines()[-1]
  subprocess.run([sys.executable, "-m", "export.export_main",
                  f"--model_dir={work}", f"--export_base={FLAGS.export_base}",
                  f"--checkpoint={checkpoint}"], cwd=FLAGS.worktree, env=env,
                 check=True)
  print(f"exported {FLAGS.model_dir} with {FLAGS.worktree}'s code under "
        f"{FLAGS.export_base}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["worktree", "export_base"])
  app.run(main)
