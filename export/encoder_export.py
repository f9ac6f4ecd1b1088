"""Serving signatures of the encoder classifier, as a keras ExportArchive.

  serving_default  text string[B] -> probabilities float[B,C], label string[B],
                   label_id int64[B]
  classify         inputs string[B] (serialized tf.Example, bytes feature
                   `text`) -> classes string[B,C], scores float[B,C]
                   (method tensorflow/serving/classify, for TF Serving's
                   Classify RPC and REST :classify)
  encode           text string[B] -> pooled float[B,D], sequence float[B,T,D],
                   mask int32[B,T]

Plain graph functions (no XLA), tokenizer in the graph, vocabulary as an asset.
"""

import keras
import tensorflow as tf

from export import warmup
from zoo.tokenizers.wordpiece import longest_row, row_lengths

CLASSIFY_METHOD = "tensorflow/serving/classify"
EXAMPLE_TEXT_FEATURE = "text"


def trim_padding(ids):
  """int32[B, T] -> int32[B, W]: drops the padding columns after the longest
  row (W >= 1). Padding is masked, so the logits do not change; a batch of
  short sentences no longer pays for the model's full sequence length."""
  return ids[:, :tf.maximum(longest_row(ids), 1)]


# A request batch of more rows than this runs as length-sorted chunks of this
# many rows, each cut to its own longest row (see classify_in_sorted_chunks).
SORTED_CHUNK_ROWS = 16


def classify_in_sorted_chunks(ids, classify_fn, rows=SORTED_CHUNK_ROWS):
  """int32[B, T] ids -> float32[B, C]: classify_fn(int32[b, W]) -> [b, C]
  over chunks of `rows` rows of similar length, results back in input order.

  A server batch mixes short and long sentences, and one padded batch makes
  every row pay for the longest. Sorting rows by length and running each
  chunk at its own width skips most of that padding (tested against the
  unchunked model through the TF1 loader). Batches of at most `rows` rows run as one call, as before.
  """
  count = tf.shape(ids)[0]

  def in_chunks():
    order = tf.argsort(row_lengths(ids), stable=True)  # [B], shortest first
    ordered = tf.gather(ids, order)  # [B, T]
    chunks = (count + rows - 1) // rows

    def body(i, outputs):
      chunk = ordered[i * rows:(i + 1) * rows]  # [<=rows, T]
      return i + 1, outputs.write(i, classify_fn(trim_padding(chunk)))

    # One chunk at a time: a TF1 session (TF Serving's loader) lowers this
    # loop to Switch/Merge and by default runs 10 iterations at once, which
    # on a CPU makes the chunks fight over the same cores (a batch of 32:
    # 19.1 ms, against 14.5 ms one at a time).
    _, outputs = tf.while_loop(
        lambda i, _: i < chunks, body,
        [0, tf.TensorArray(tf.float32, size=chunks, infer_shape=False)],
        parallel_iterations=1)
    in_order = outputs.concat()  # [B, C], sorted order
    return tf.scatter_nd(order[:, None], in_order, tf.shape(in_order))

  return tf.cond(count > rows, in_chunks,
                 lambda: classify_fn(trim_padding(ids)))


def build_archive(model, tokenizer, model_config):
  """Returns (archive, {signature: method name other than predict})."""
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.track(tokenizer)
  label_names = tf.constant(model_config["labels"])  # [C]

  def probabilities(ids):
    logits = model(ids, training=False)  # [b, C]
    return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # [b, C]

  def predict_probabilities(text):
    result = classify_in_sorted_chunks(tokenizer(text), probabilities)
    result.set_shape([None, label_names.shape[0]])  # lost in the while loop
    return result  # [B, C]

  def serve(text):
    probabilities = predict_probabilities(text)  # [B, C]
    label_id = tf.argmax(probabilities, axis=-1)  # [B] int64
    return {"probabilities": probabilities,
            "label": tf.gather(label_names, label_id),  # [B]
            "label_id": label_id}

  def classify(inputs):
    features = tf.io.parse_example(inputs, {
        EXAMPLE_TEXT_FEATURE: tf.io.FixedLenFeature([], tf.string,
                                                    default_value="")})
    scores = predict_probabilities(features[EXAMPLE_TEXT_FEATURE])  # [B, C]
    classes = tf.tile(label_names[None, :], [tf.shape(scores)[0], 1])  # [B, C]
    return {"classes": classes, "scores": scores}

  def encode(text):
    features = model.encode(tokenizer(text), training=False)
    return {"pooled": tf.cast(features["pooled"], tf.float32),  # [B, D]
            "sequence": tf.cast(features["sequence"], tf.float32),  # [B, T, D]
            "mask": features["mask"]}  # [B, T] int32

  text_spec = [tf.TensorSpec([None], tf.string, name="text")]
  archive.add_endpoint("serving_default", serve, input_signature=text_spec)
  archive.add_endpoint(
      "classify", classify,
      input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  archive.add_endpoint("encode", encode, input_signature=text_spec)
  return archive, {"classify": CLASSIFY_METHOD}


def warmup_logs(model_name, model_config):
  """PredictionLogs replayed before a version takes traffic, one a signature,
  on two training texts of the run."""
  sentences = warmup.warmup_inputs(model_config, "text")
  examples = [tf.train.Example(features=tf.train.Features(feature={
      EXAMPLE_TEXT_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[s.encode()]))})) for s in sentences]
  return [
      warmup.predict_log(model_name, "serving_default", {"text": sentences}),
      warmup.classify_log(model_name, "classify", examples),
      warmup.predict_log(model_name, "encode", {"text": sentences}),
  ]


def limits(model_config):
  return {
      "max_input_tokens": model_config["architecture"]["sequence_length"],
      "truncation": "inputs longer than max_input_tokens word pieces "
                    "(including [CLS]) are truncated",
      "unknown_text": "characters outside the vocabulary map to [UNK]",
  }
