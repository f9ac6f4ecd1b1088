"""TensorFlow runtime settings the model server picks before TF is imported.

Import this module and call `apply_defaults()` before anything imports
tensorflow: TF reads these environment variables once, at import. Each
default is only a default (`os.environ.setdefault`), so a user who exports the
variable keeps their value.

TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's x86 wheels swap in oneDNN kernels for
MatMul, BatchMatMul, LayerNorm and friends. oneDNN builds (JIT-compiles) a
primitive per input shape and keeps them in an LRU cache, which suits
fixed-shape batch jobs. A server of text models sees a new shape with nearly
every request (batch size x sentence length), so it keeps rebuilding
primitives. Measured on the SST-2 export of this repository (2-core CPU, TF1
session, the server's loader): a one-sentence request takes 0.71 ms with the
default Eigen kernels against 2.25 ms with oneDNN's, a batch of 32 takes the
same (15.7 against 15.2 ms), and the server answers 32 concurrent clients
at about twice the rate without batching and a third faster with it. The
stock tensorflow_model_server is built without oneDNN unless built with
--config=mkl, so this is also what TF Serving runs. Set TF_ENABLE_ONEDNN_OPTS=1
to compare.
"""

import os

DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def apply_defaults():
  """Sets each of DEFAULTS not already in the environment; returns the values
  now in force (name -> value)."""
  for name, value in DEFAULTS.items():
    os.environ.setdefault(name, value)
  return {name: os.environ[name] for name in DEFAULTS}
