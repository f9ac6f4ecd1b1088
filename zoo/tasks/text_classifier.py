"""Text classifier: encoder backbone + pooled classification head.

Token ids in, logits out (float32 even under mixed precision). `encode` exposes
the pooled and per-token features with their mask for use as a feature
extractor. Tokenization is separate (zoo.tokenizers) so training runs on ids
and exports put the tokenizer in front. Training may also feed packed rows
(several examples per row, trainers/example_packing.py): a dict of token_ids,
segment_ids and positions, with logits per segment.
"""

import keras
from keras import ops

from zoo.backbones.encoder import build_encoder_backbone
from zoo.layers.hashed_dropout import HashedDropout
from zoo.tasks.task_model import TaskModel
from zoo.tokenizers.wordpiece import PAD_ID

# Packed training rows hold at most this many examples each.
MAX_SEGMENTS = 16

# mean: average of the unpadded positions; max: their element-wise maximum (a
# length-independent summary); mean_max: both, concatenated ([B, 2D]); cls:
# the first position; attention: a weighted mean whose weights are a softmax,
# over the unpadded positions, of a learned score of each position's vector
# (one Dense(1) more); pooler: BERT's, tanh(Dense(D)) of the first position
# (its weights come from a BERT preset, zoo.pretrained).
POOLINGS = ("mean", "max", "mean_max", "cls", "attention", "pooler")


@keras.saving.register_keras_serializable(package="zoo")
class TextClassifier(TaskModel):
  """int[B, T] token ids -> float32[B, num_classes] logits."""

  def __init__(self, backbone, num_classes, pooling="mean", dropout=0.1,
               **kwargs):
    super().__init__(backbone, **kwargs)
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    self.num_classes = num_classes
    self.pooling = pooling
    self.dropout = dropout
    if pooling == "attention":
      self.pooling_score = keras.layers.Dense(1, name="pooling_score")
    if pooling == "pooler":
      self.pooler = keras.layers.Dense(backbone.hidden_dim, activation="tanh",
                                       name="pooler")
    self.head_dropout = HashedDropout(dropout, name="head_dropout")
    self.head = keras.layers.Dense(num_classes, dtype="float32", name="logits")

  def encode(self, token_ids, training=None, embedding_offsets=None,
             type_ids=None):
    """Returns pooled float[B, D], sequence float[B, T, D], mask int32[B, T].
    type_ids int[B, T]: the token types of sentence pairs (or None)."""
    sequence = self.backbone(token_ids, embedding_offsets=embedding_offsets,
                             type_ids=type_ids,
                             training=training)  # [B, T, D]
    mask = ops.cast(ops.not_equal(token_ids, PAD_ID), "int32")  # [B, T]
    return {"pooled": self._pool(sequence, mask), "sequence": sequence,
            "mask": mask}

  def _pool(self, sequence, mask):
    """float[N, T, D], int32[N, T] -> float[N, D or 2D] over mask's positions
    (cls: the first position of each row)."""
    if self.pooling == "cls":
      return sequence[:, 0, :]  # [N, D]
    if self.pooling == "pooler":
      return self.pooler(sequence[:, 0, :])  # [N, D]
    if self.pooling == "attention":
      return attention_pooling(sequence, mask,
                               self.pooling_score(sequence))  # [N, D]
    return masked_pooling(sequence, mask, self.pooling)  # [N, D or 2D]

  def call(self, inputs, training=None, embedding_offsets=None):
    """int[B, T] ids -> float32[B, C]; or a packed dict (token_ids,
    segment_ids, positions: int[R, L]) -> float32[R, S, C], one row of
    logits per segment s + 1 (S = zoo's MAX_SEGMENTS; empty slots give the
    head's bias alone). embedding_offsets float[B or R, T, D]: see
    EncoderBackbone.call. Sentence pairs come as a dict of token_ids and
    type_ids int[B, T] -> float32[B, C]."""
    if isinstance(inputs, dict) and "type_ids" in inputs:  # sentence pairs
      pooled = self.encode(inputs["token_ids"], training=training,
                           embedding_offsets=embedding_offsets,
                           type_ids=inputs["type_ids"])["pooled"]
    elif isinstance(inputs, dict):
      pooled = self._pool_segments(inputs, training,
                                   embedding_offsets)  # [R, S, D]
    else:
      pooled = self.encode(inputs, training=training,
                           embedding_offsets=embedding_offsets)["pooled"]
    pooled = self.head_dropout(pooled, training=training)
    return self.head(pooled)  # [B, C] or [R, S, C], float32

  def _pool_segments(self, packed, training, embedding_offsets=None):
    """Pools each segment of packed rows on its own: float[R, S, D]."""
    segment_ids = ops.cast(packed["segment_ids"], "int32")  # [R, L]
    sequence = self.backbone(packed["token_ids"], segment_ids=segment_ids,
                             positions=packed["positions"],
                             embedding_offsets=embedding_offsets,
                             training=training)  # [R, L, D]
    rows, length = ops.shape(segment_ids)[0], ops.shape(segment_ids)[1]
    slots = ops.arange(1, MAX_SEGMENTS + 1, dtype="int32")  # [S]
    masks = ops.cast(ops.equal(segment_ids[:, None, :], slots[None, :, None]),
                     "int32")  # [R, S, L]
    if self.pooling in ("mean", "cls", "pooler"):  # one batched matmul
      if self.pooling != "mean":  # only each segment's first position
        first = ops.cast(ops.equal(packed["positions"], 0), "int32")  # [R, L]
        masks = masks * first[:, None, :]  # [R, S, L]
      weights = ops.cast(masks, sequence.dtype)  # [R, S, L]
      sums = ops.einsum("rsl,rld->rsd", weights, sequence)  # [R, S, D]
      pooled = sums / ops.maximum(ops.sum(weights, axis=-1, keepdims=True),
                                  1.0)  # [R, S, D]
      return self.pooler(pooled) if self.pooling == "pooler" else pooled
    # One copy of its row per segment, pooled under that segment's mask.
    copies = ops.repeat(sequence, MAX_SEGMENTS, axis=0)  # [R*S, L, D]
    pooled = self._pool(copies, ops.reshape(masks, (-1, length)))  # [R*S, D']
    return ops.reshape(pooled, (rows, MAX_SEGMENTS, -1))  # [R, S, D']

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, pooling=self.pooling,
                  dropout=self.dropout)
    return config


def masked_pooling(sequence, mask, pooling):
  """float[B, T, D], int32[B, T] -> float[B, D] (mean, max) or [B, 2D]
  (mean_max), over the positions where mask is 1. A row with no unpadded
  position pools to zeros."""
  weights = ops.cast(mask, sequence.dtype)[:, :, None]  # [B, T, 1]
  count = ops.sum(weights, axis=1)  # [B, 1]
  mean = ops.sum(sequence * weights, axis=1) / ops.maximum(count, 1.0)  # [B, D]
  if pooling == "mean":
    return mean
  lowest = ops.cast(-1e4, sequence.dtype)  # below any layer-normed value
  masked = ops.where(weights > 0, sequence, lowest)  # [B, T, D]
  maximum = ops.max(masked, axis=1) * ops.cast(count > 0, sequence.dtype)
  if pooling == "max":
    return maximum  # [B, D]
  return ops.concatenate([mean, maximum], axis=-1)  # [B, 2D]


def attention_pooling(sequence, mask, scores):
  """float[B, T, D], int32[B, T], scores float[B, T, 1] -> float[B, D]: the
  mean of the unpadded positions weighted by softmax(scores) over them. A row
  with no unpadded position pools to zeros."""
  weights = ops.cast(mask, sequence.dtype)[:, :, None]  # [B, T, 1]
  scores = ops.cast(scores, "float32")  # the softmax in float32
  scores = ops.where(weights > 0, scores, -1e9)  # padding gets no weight
  scores = scores - ops.max(scores, axis=1, keepdims=True)  # [B, T, 1]
  exp = ops.exp(scores) * ops.cast(weights, "float32")  # [B, T, 1]
  attention = exp / ops.maximum(ops.sum(exp, axis=1, keepdims=True), 1e-9)
  return ops.sum(sequence * ops.cast(attention, sequence.dtype), axis=1)


def build_text_classifier(preset, num_classes):
  """Builds an (unbuilt) classifier from a preset dict (see zoo.presets)."""
  return TextClassifier(build_encoder_backbone(preset), num_classes=num_classes,
                        pooling=preset.get("pooling", "mean"),
                        dropout=preset["dropout"], name="text_classifier")
