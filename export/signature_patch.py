"""Set SignatureDef method names that tf.saved_model.save cannot express.

TF Serving's Classify and Regress RPCs accept only signatures whose method_name
is tensorflow/serving/classify or .../regress; Keras and tf.saved_model always
write .../predict. We rewrite saved_model.pb after saving, and rewrite the
fingerprint so it matches the new file.
"""

import os

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting


def set_method_names(saved_model_dir, method_names):
  """method_names: {signature key: method name}."""
  if not method_names:
    return
  pb_path = os.path.join(saved_model_dir, "saved_model.pb")
  saved_model = saved_model_pb2.SavedModel()
  with open(pb_path, "rb") as f:
    saved_model.ParseFromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    for key, method in method_names.items():
      if key not in meta_graph.signature_def:
        raise KeyError(f"no signature {key!r} in {saved_model_dir}")
      meta_graph.signature_def[key].method_name = method
  with open(pb_path, "wb") as f:
    f.write(saved_model.SerializeToString(deterministic=True))
  fingerprint = fingerprinting.CreateFingerprintDef(saved_model_dir)
  with open(os.path.join(saved_model_dir, "fingerprint.pb"), "wb") as f:
    f.write(fingerprint)
