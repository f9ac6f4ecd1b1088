"""keras-hub GPT-2 converted into a zoo CausalLanguageModel.

Our ids are GPT-2's plus one (id 0 is our padding), so the converted model
fed ids + 1 must give keras-hub's logits in columns 1..V, to 1e-4; column 0
(PAD) is never generated.
"""

import numpy as np
import tensorflow as tf

from zoo.pretrained import gpt2
from zoo.tasks.causal_lm import build_causal_lm

ATOL = 1e-4


def tiny_gpt2(seed=0, vocabulary_size=60, max_sequence_length=32):
  import keras
  import keras_hub
  keras.utils.set_random_seed(seed)
  return keras_hub.models.GPT2Backbone(
      vocabulary_size=vocabulary_size, num_layers=2, num_heads=2,
      hidden_dim=16, intermediate_dim=32,
      max_sequence_length=max_sequence_length)


def test_converted_logits_equal_keras_hubs():
  backbone = tiny_gpt2()
  architecture = gpt2.GPT2.architecture(backbone)
  architecture["sequence_length"] = 24  # a shorter context: positions cut
  model = build_causal_lm(architecture, suppressed_ids=(0,))
  model(tf.zeros([1, 24], tf.int32))
  gpt2.GPT2.copy_weights(backbone, model, 24)
  ids = np.random.default_rng(0).integers(0, 60, size=(3, 24)).astype("int32")
  hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)},
                    training=False)
  expected = backbone.token_embedding(hidden, reverse=True).numpy()  # [B,T,V]
  got = model(ids + 1, training=False).numpy()  # [B, T, V + 1]
  np.testing.assert_allclose(got[..., 1:], expected, atol=ATOL)
  np.testing.assert_allclose(got[..., 0], 0.0)  # PAD's zero embedding row


def test_cached_steps_equal_the_full_pass():
  backbone = tiny_gpt2(seed=1)
  architecture = gpt2.GPT2.architecture(backbone)
  model = build_causal_lm(architecture, suppressed_ids=(0,))
  model(tf.zeros([1, 32], tf.int32))
  gpt2.GPT2.copy_weights(backbone, model, 32)
  ids = tf.constant(np.random.default_rng(1).integers(1, 61, size=(2, 10)),
                    tf.int32)
  full = model.backbone(ids, training=False)  # [B, T, D]
  cache = model.backbone.empty_cache(2)
  for t in range(10):
    step, cache = model.backbone.call_step(ids[:, t:t + 1], t, cache)
    np.testing.assert_allclose(step[:, 0].numpy(), full[:, t].numpy(),
                               atol=1e-5)
