"""TensorFlow runtime settings the model server picks before TF is imported.

Import this module and call `apply_defaults()` before anything imports
tensorflow: TF reads these environment variables once, at import. Each
default is only a default (`os.environ.setdefault`), so a user who exports the
variable keeps their value.

TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's x86 wheels swap in oneDNN kernels for
MatMul, BatchMatMul, LayerNorm and friends; the stock tensorflow_model_server
is built without them (its oneDNN build is the separate --config=mkl image),
so the default here runs the kernels TF Serving runs. oneDNN builds a
primitive per input shape, which suits fixed shapes; a text classifier sees
a new shape with nearly every request (batch size x sentence length).
Measured on this repository's exports through the TF1 session loader (2-core
CPU), oneDNN off against on:
- SST-2 classifier: one sentence 0.71 against 2.25 ms, a batch of 32 15.7
  against 15.2 ms; the server answers 32 concurrent clients 1.6 times as
  fast without batching and 1.2 times as fast with it
  (benchmarks/results/serving_load_sst2.json against
  serving_load_sst2_onednn.json).
- Multi30k translator, beam 4: one sentence 161 against 135 ms, a batch of 8
  2.09 against 1.29 s.
- Character LM, 100 characters: one prompt 351 against 301 ms, a batch of 8
  1.10 against 1.08 s.
So a server of generative models may want TF_ENABLE_ONEDNN_OPTS=1, as it
would want TF Serving's oneDNN image.
"""

import os

DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def apply_defaults():
  """Sets each of DEFAULTS not already in the environment; returns the values
  now in force (name -> value)."""
  for name, value in DEFAULTS.items():
    os.environ.setdefault(name, value)
  return {name: os.environ[name] for name in DEFAULTS}
