"""TaskModel: the base of task models that hold a backbone (keras-hub style).

It puts the backbone's own config inside the task model's config and rebuilds
it in from_config, so every task model round-trips through keras.saving.
"""

import keras


class TaskModel(keras.Model):
  """A keras.Model with a `backbone` attribute, serialised with its config."""

  def __init__(self, backbone, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone

  def get_config(self):
    config = super().get_config()
    config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    return cls(**config)
