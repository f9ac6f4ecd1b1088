"""Serving signatures of the encoder classifier, as a keras ExportArchive.

  serving_default  text string[B] -> probabilities float[B,C], label string[B],
                   label_id int64[B]
  classify         inputs string[B] (serialized tf.Example, bytes feature
                   `text`, and `text_pair` for pairs) -> classes string[B,C],
                   scores float[B,C]
                   (method tensorflow/serving/classify, for TF Serving's
                   Classify RPC and REST :classify)
  encode           text string[B] -> pooled float[B,D], sequence float[B,T,D],
                   mask int32[B,T]

A model trained on sentence pairs takes `text` and `text_pair` (string[B]
each) wherever `text` is listed. Plain graph functions (no XLA), tokenizer in
the graph, vocabulary as an asset.
"""

import keras
import tensorflow as tf

from export import warmup
from zoo.tokenizers.wordpiece import longest_row, row_lengths

CLASSIFY_METHOD = "tensorflow/serving/classify"
EXAMPLE_TEXT_FEATURE = "text"
EXAMPLE_FEATURES = (EXAMPLE_TEXT_FEATURE, "text_pair")  # inputs, in order


def trim_padding(ids):
  """int32[B, T] -> int32[B, W]: drops the padding columns after the longest
  row (W >= 1). Padding is masked, so the logits do not change; a batch of
  short sentences no longer pays for the model's full sequence length."""
  return ids[:, :tf.maximum(longest_row(ids), 1)]


# A request batch of more rows than this runs as length-sorted chunks of this
# many rows, each cut to its own longest row (see classify_in_sorted_chunks).
SORTED_CHUNK_ROWS = 16
# No generation loop to XLA-compile (the exporter refuses --xla_generation).
XLA_GENERATION = False


def classify_in_sorted_chunks(ids, classify_fn, rows=SORTED_CHUNK_ROWS,
                              type_ids=None):
  """int32[B, T] ids -> float32[B, C]: classify_fn(int32[b, W], type ids
  int32[b, W] or None) -> [b, C] over chunks of `rows` rows of similar
  length, results back in input order (type_ids: sentence pairs, cut and
  reordered with the ids).

  A server batch mixes short and long sentences, and one padded batch makes
  every row pay for the longest. Sorting rows by length and running each
  chunk at its own width skips most of that padding (tested against the
  unchunked model through the TF1 loader). Batches of at most `rows` rows run as one call, as before.
  """
  count = tf.shape(ids)[0]

  def run(chunk, types):
    chunk = trim_padding(chunk)  # [b, W]
    return classify_fn(chunk, None if types is None else
                       types[:, :tf.shape(chunk)[1]])

  def in_chunks():
    order = tf.argsort(row_lengths(ids), stable=True)  # [B], shortest first
    ordered = tf.gather(ids, order)  # [B, T]
    ordered_types = None if type_ids is None else tf.gather(type_ids, order)
    chunks = (count + rows - 1) // rows

    def body(i, outputs):
      chunk = ordered[i * rows:(i + 1) * rows]  # [<=rows, T]
      types = (None if ordered_types is None else
               ordered_types[i * rows:(i + 1) * rows])
      return i + 1, outputs.write(i, run(chunk, types))

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

  return tf.cond(count > rows, in_chunks, lambda: run(ids, type_ids))


def build_archive(model, tokenizer, model_config):
  """Returns (archive, {signature: method name other than predict}).

  A model trained on sentence pairs (model_config["text_pair"]) takes
  `text` and `text_pair` in every signature (classify: both features)."""
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.track(tokenizer)
  label_names = tf.constant(model_config["labels"])  # [C]
  pairs = bool(model_config.get("text_pair"))

  def features(ids, type_ids):
    return ids if type_ids is None else {"token_ids": ids, "type_ids": type_ids}

  def probabilities(ids, type_ids):
    logits = model(features(ids, type_ids), training=False)  # [b, C]
    return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # [b, C]

  def tokenize(texts):
    """string[B] (or two) -> (ids int32[B, L], type ids or None)."""
    return tokenizer.pair(*texts) if pairs else (tokenizer(texts[0]), None)

  def predict_probabilities(*texts):
    ids, type_ids = tokenize(texts)
    result = classify_in_sorted_chunks(ids, probabilities, type_ids=type_ids)
    result.set_shape([None, label_names.shape[0]])  # lost in the while loop
    return result  # [B, C]

  def serve(*texts):
    probabilities = predict_probabilities(*texts)  # [B, C]
    label_id = tf.argmax(probabilities, axis=-1)  # [B] int64
    return {"probabilities": probabilities,
            "label": tf.gather(label_names, label_id),  # [B]
            "label_id": label_id}

  def classify(inputs):
    names = EXAMPLE_FEATURES if pairs else EXAMPLE_FEATURES[:1]
    parsed = tf.io.parse_example(inputs, {
        name: tf.io.FixedLenFeature([], tf.string, default_value="")
        for name in names})
    scores = predict_probabilities(*(parsed[n] for n in names))  # [B, C]
    classes = tf.tile(label_names[None, :], [tf.shape(scores)[0], 1])  # [B, C]
    return {"classes": classes, "scores": scores}

  def encode(*texts):
    ids, type_ids = tokenize(texts)
    encoded = model.encode(ids, training=False, type_ids=type_ids)
    return {"pooled": tf.cast(encoded["pooled"], tf.float32),  # [B, D]
            "sequence": tf.cast(encoded["sequence"], tf.float32),  # [B, T, D]
            "mask": encoded["mask"]}  # [B, T] int32

  text_spec = [tf.TensorSpec([None], tf.string, name=name)
               for name in (EXAMPLE_FEATURES if pairs else EXAMPLE_FEATURES[:1])]
  archive.add_endpoint("serving_default", serve, input_signature=text_spec)
  archive.add_endpoint(
      "classify", classify,
      input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  archive.add_endpoint("encode", encode, input_signature=text_spec)
  return archive, {"classify": CLASSIFY_METHOD}


def warmup_logs(model_name, model_config):
  """PredictionLogs replayed before a version takes traffic, one a signature,
  on two training rows of the run."""
  names = (EXAMPLE_FEATURES if model_config.get("text_pair")
           else EXAMPLE_FEATURES[:1])
  inputs = {name: warmup.warmup_inputs(model_config, name) for name in names}
  examples = [tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[inputs[name][i].encode()])) for name in names}))
              for i in range(2)]
  return [
      warmup.predict_log(model_name, "serving_default", inputs),
      warmup.classify_log(model_name, "classify", examples),
      warmup.predict_log(model_name, "encode", inputs),
  ]


def limits(model_config):
  return {
      "max_input_tokens": model_config["architecture"]["sequence_length"],
      "truncation": "inputs longer than max_input_tokens word pieces "
                    "(including [CLS]) are truncated",
      "unknown_text": "characters outside the vocabulary map to [UNK]",
  }
