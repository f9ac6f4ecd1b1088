"""Masked-LM pretraining on a classification task's own training text.

`--task=sst2_mlm` pretrains the encoder backbone on the SST-2 training
sentences (labels unused); `--task=sst2 --init_checkpoint=<that model_dir>`
then fine-tunes from it. Masking follows BERT: 15% of real tokens are chosen,
80% of those become [MASK], 10% a random token, 10% stay.
"""

import numpy as np
import tensorflow as tf
import keras
import keras_hub

from trainers import classification_data
from trainers.classification_task import ClassificationTask
from zoo.tokenizers.wordpiece import MASK, PAD_ID, read_vocabulary

MASK_RATE = 0.15


class MaskedLMTask(ClassificationTask):
  """Reads data like its classification task; trains and scores a masked LM."""

  primary_metric = "accuracy"  # masked-token accuracy on the dev text
  supports_consistency = False  # its own data and loss: no R-Drop pairs
  supports_packing = False  # masks whole rows: no packed examples
  supports_adversarial = False  # its own loss on masked tokens

  def new_model_config(self, model_dir):
    model_config = super().new_model_config(model_dir)
    model_config["task"] = self.spec.name + "_mlm"
    model_config["head"] = "masked_lm"
    return model_config

  def build_model(self, model_config):
    from zoo import model_config as zoo_model_config
    model = zoo_model_config.build_model(model_config)
    length = model_config["architecture"]["sequence_length"]
    model({"token_ids": tf.zeros([1, length], tf.int32),
           "mask_positions": tf.zeros([1, self._max_predictions(length)],
                                      tf.int32)})
    return model

  @staticmethod
  def _max_predictions(sequence_length):
    return max(1, int(round(sequence_length * MASK_RATE)))

  def _masker(self, tokenizer):
    vocabulary = read_vocabulary(tokenizer.vocabulary_file)
    special = [i for i, token in enumerate(vocabulary)
               if token.startswith("[") and token.endswith("]")]
    return keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tokenizer.vocabulary_size,
        mask_selection_rate=MASK_RATE, mask_token_id=vocabulary.index(MASK),
        mask_selection_length=self._max_predictions(tokenizer.sequence_length),
        unselectable_token_ids=sorted(set(special + [PAD_ID])))

  def _mask(self, masker):
    def mask(ids, unused_labels):
      out = masker(ids)
      features = {"token_ids": out["token_ids"],
                  "mask_positions": out["mask_positions"]}
      return features, {"ids": out["mask_ids"], "weights": out["mask_weights"]}
    return mask

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1):
    del num_replicas  # batches of examples split evenly without help
    sentences, labels = self.train_examples()
    ds = classification_data.train_dataset(
        sentences, labels, tokenizer, global_batch_size, self.config.seed,
        skip_batches)
    return ds.map(self._mask(self._masker(tokenizer)))

  def eval_dataset(self, tokenizer, batch_size, split_or_path="dev"):
    ds = super().eval_dataset(tokenizer, batch_size, split_or_path)
    # Cached: every evaluation scores the same masked positions.
    return ds.map(self._mask(self._masker(tokenizer))).cache()

  def per_example_loss(self, targets, logits):
    """Mean cross-entropy over each example's masked tokens: float32[B]."""
    weights = targets["weights"]  # [B, P]
    token_loss = keras.losses.sparse_categorical_crossentropy(
        targets["ids"], tf.cast(logits, tf.float32), from_logits=True)  # [B, P]
    return tf.reduce_sum(token_loss * weights, axis=-1) / tf.maximum(
        tf.reduce_sum(weights, axis=-1), 1.0)

  def correct_predictions(self, targets, logits):
    """Fraction of each example's masked tokens predicted exactly: float32[B]."""
    weights = targets["weights"]
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B, P]
    hits = tf.cast(tf.equal(predicted, tf.cast(targets["ids"], tf.int32)),
                   tf.float32)
    return tf.reduce_sum(hits * weights, axis=-1) / tf.maximum(
        tf.reduce_sum(weights, axis=-1), 1.0)

  def evaluate(self, predict_fn, dataset):
    """Masked-token accuracy and loss (nats) over the dev text."""
    hits = total = loss = 0.0
    for features, targets in dataset:
      logits = predict_fn(features)
      weights = targets["weights"].numpy()
      token_loss = keras.losses.sparse_categorical_crossentropy(
          targets["ids"], tf.cast(logits, tf.float32), from_logits=True).numpy()
      predicted = np.argmax(logits, axis=-1)
      hits += float(((predicted == targets["ids"].numpy()) * weights).sum())
      loss += float((token_loss * weights).sum())
      total += float(weights.sum())
    return {"accuracy": hits / max(total, 1.0), "loss": loss / max(total, 1.0),
            "masked_tokens": int(total)}
