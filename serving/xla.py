"""XLA JIT off by default, as tensorflow_model_server runs it.

TF Serving's main.cc calls `tensorflow::DisableXlaCompilation()` unless
--xla_cpu_compilation_enabled or --xla_gpu_compilation_enabled is set: a
model that asks for XLA (a `jit_compile=True` function) then fails its first
compilation with "XLA compilation disabled" instead of compiling. The pip
TensorFlow has no Python binding for it, so `disable_compilation()` calls the
same exported C++ function in libtensorflow_cc through ctypes. It is process
wide and cannot be undone, so only the server's entry point calls it.
"""

import ctypes
import os

import tensorflow as tf

_SYMBOL = "_ZN10tensorflow21DisableXlaCompilationEv"  # tensorflow::DisableXlaCompilation()
_LIBRARY = "libtensorflow_cc.so.2"


def disable_compilation():
  """Turns XLA JIT compilation off for this process (OSError if unavailable)."""
  path = os.path.join(os.path.dirname(tf.__file__), _LIBRARY)
  try:
    function = getattr(ctypes.CDLL(path), _SYMBOL)
  except (OSError, AttributeError) as e:
    raise OSError(f"cannot turn XLA compilation off ({_SYMBOL} in {path}): {e}") from None
  function.restype = None
  function()
