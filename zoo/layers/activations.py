"""Activations by name that Keras does not register under a name of its own.

`gelu_approximate` is GELU's tanh approximation, the activation of BERT's and
GPT-2's feed-forward layers as keras-hub builds them (keras.activations.gelu
with approximate=True); plain "gelu" is the exact erf form.
"""

import keras


@keras.saving.register_keras_serializable(package="zoo")
def gelu_approximate(x):
  return keras.activations.gelu(x, approximate=True)


ACTIVATIONS = {"gelu": "gelu", "relu": "relu",
               "gelu_approximate": gelu_approximate}


def get_activation(name):
  """The activation called `name` (a key of ACTIVATIONS)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; choose one of "
                     f"{sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]
