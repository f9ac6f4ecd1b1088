"""The throughput baseline: each family's architecture as a stock keras_hub
model trained with `model.fit`.

Same sizes as the zoo preset (layers, width, heads, feed-forward, vocabulary)
and the same batches; the differences are keras_hub's own: BERT adds a
[CLS] pooler and token-type embeddings, GPT-2 and BART learn their position
embeddings, BART's encoder and decoder have the same depth (the zoo's
seq2seq presets do too).
"""

import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf


def _common(arch):
  """keras_hub backbone arguments shared by every family, sized like arch."""
  return dict(vocabulary_size=arch["vocabulary_size"],
              num_heads=arch["num_heads"], hidden_dim=arch["hidden_dim"],
              intermediate_dim=arch["intermediate_dim"],
              dropout=arch["dropout"],
              max_sequence_length=arch["sequence_length"] + 1)


def _bert_classifier(arch):
  backbone = keras_hub.models.BertBackbone(num_layers=arch["num_layers"],
                                           **_common(arch))
  return keras_hub.models.BertTextClassifier(backbone, num_classes=2,
                                             preprocessor=None,
                                             dropout=arch["dropout"])


def _gpt2_causal_lm(arch):
  backbone = keras_hub.models.GPT2Backbone(num_layers=arch["num_layers"],
                                           **_common(arch))
  return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)


def _bart_seq2seq_lm(arch):
  if arch["num_encoder_layers"] != arch["num_decoder_layers"]:
    raise ValueError("BartBackbone needs equal encoder and decoder depth")
  backbone = keras_hub.models.BartBackbone(
      num_layers=arch["num_encoder_layers"], **_common(arch))
  return keras_hub.models.BartSeq2SeqLM(backbone, preprocessor=None)


def _encoder_batch(ids, labels):
  return ({"token_ids": ids, "segment_ids": tf.zeros_like(ids),
           "padding_mask": ids != 0}, labels)


def _decoder_batch(ids, targets):
  return {"token_ids": ids,
          "padding_mask": tf.ones_like(ids, tf.bool)}, targets


def _seq2seq_batch(features, targets):
  source, target_in = features["source_ids"], features["target_ids"]
  return ({"encoder_token_ids": source, "encoder_padding_mask": source != 0,
           "decoder_token_ids": target_in,
           "decoder_padding_mask": target_in != 0},
          targets, tf.cast(targets != 0, tf.float32))


# family -> (keras_hub task model sized like an architecture, converter of
# our (features, targets) batch to keras_hub's (x, y[, sample_weight]))
BASELINES = {
    "encoder": (_bert_classifier, _encoder_batch),
    "decoder": (_gpt2_causal_lm, _decoder_batch),
    "seq2seq": (_bart_seq2seq_lm, _seq2seq_batch),
}


def _baseline(family):
  if family not in BASELINES:
    raise ValueError(f"unknown family {family!r}; known: {sorted(BASELINES)}")
  return BASELINES[family]


def build_model(family, arch):
  """A compiled-ready keras_hub task model for `family` sized like `arch`."""
  return _baseline(family)[0](arch)


def to_keras_hub_batch(family, features, targets):
  """Our (features, targets) batch as keras_hub's (x, y, sample_weight)."""
  return _baseline(family)[1](features, targets)


def relaxed_signature(batch):
  """TensorSpecs of `batch` with every dimension unknown (batches of any
  width share one input signature)."""
  return tf.nest.map_structure(
      lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), batch)


class _PassTimer(keras.callbacks.Callback):
  """Times the batches from `start_batch` to the end of training."""

  def __init__(self, start_batch):
    super().__init__()
    self._start_batch = start_batch
    self.start = self.end = None

  def on_train_batch_begin(self, batch, logs=None):
    if batch == self._start_batch:
      self.start = time.perf_counter()

  def on_train_end(self, logs=None):
    self.end = time.perf_counter()


def fit_seconds(family, arch, batches, jit_compile, passes,
                learning_rate=1e-4):
  """Trains a fresh keras_hub model with model.fit on `batches`, 1 + passes
  times over (the first pass compiles every batch shape); returns the
  seconds the last `passes` passes took."""
  model = build_model(family, arch)
  model.compile(
      optimizer=keras.optimizers.AdamW(learning_rate=learning_rate,
                                       global_clipnorm=1.0),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      jit_compile=jit_compile)
  converted = [to_keras_hub_batch(family, *batch) for batch in batches]
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(converted * (1 + passes)),
      output_signature=relaxed_signature(converted[0])).prefetch(2)
  timer = _PassTimer(start_batch=len(batches))
  model.fit(dataset, epochs=1, verbose=0, callbacks=[timer])
  return timer.end - timer.start


def parameter_count(model):
  return int(sum(np.prod(v.shape) for v in model.trainable_variables))
