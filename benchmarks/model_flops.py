"""Model FLOPs of one training step, counted from the batch that step saw.

Model FLOPs utilisation (MFU) compares these with the machine's measured
matmul peak. Conventions (those of the PaLM paper's MFU):
- Only matmuls count (2 FLOPs per multiply-add); layer norms, softmax,
  GELU and the optimizer update are overhead, not model FLOPs.
- Only real tokens count: padding that a batch computes anyway is waste,
  and MFU should show it.
- Attention counts the full t x t score matrix (4 * d * t^2 per layer and
  sequence, for scores and the weighted sum), causal or not.
- A training step is 3x the forward pass (backward is twice forward).
- An embedding lookup is free; a tied output projection is a d x V matmul.
"""

import numpy as np


def _lengths(ids):
  """Real (non-zero) tokens per row of an int array [B, T]."""
  return (np.asarray(ids) != 0).sum(axis=-1).astype(np.float64)


def _segment_lengths(segment_ids):
  """Tokens per example of packed rows: segment_ids int[R, L] (1, 2, ... per
  example, 0 = padding) -> float[N], one length per example."""
  counts = [np.bincount(row)[1:] for row in np.asarray(segment_ids)]
  return np.concatenate(counts).astype(np.float64)


def _block_flops(tokens, d, ff):
  """Forward matmul FLOPs of one self-attention block's projections (Q, K,
  V, output) and its feed-forward layer, over `tokens` tokens."""
  return tokens * (2 * 4 * d * d + 2 * 2 * d * ff)


def encoder_step_flops(arch, ids):
  """Classifier training step on token ids [B, T] (0 = padding), or on
  packed rows ({"segment_ids": [R, L], ...}: attention counts each example's
  own t x t scores, not the row's). A convolution block of kernel k is a
  k*d x d matmul per token."""
  d, ff, layers = arch["hidden_dim"], arch["intermediate_dim"], arch["num_layers"]
  if isinstance(ids, dict):
    lengths = _segment_lengths(ids["segment_ids"])
  else:
    lengths = _lengths(ids)
  forward = layers * (_block_flops(lengths.sum(), d, ff) +
                      4 * d * (lengths ** 2).sum())
  forward += lengths.sum() * 2 * arch.get("conv_kernel_size", 0) * d * d
  return 3 * forward


def decoder_step_flops(arch, ids, vocabulary_size):
  """Language-model training step on windows [B, T] (every token real)."""
  d, ff, layers = arch["hidden_dim"], arch["intermediate_dim"], arch["num_layers"]
  batch, length = np.asarray(ids).shape
  tokens = float(batch * length)
  forward = (layers * (_block_flops(tokens, d, ff) + 4 * d * batch * length ** 2)
             + tokens * 2 * d * vocabulary_size)
  return 3 * forward


def seq2seq_step_flops(arch, source_ids, target_ids, vocabulary_size):
  """Translator training step on source [B, S] and decoder inputs [B, T]."""
  d, ff = arch["hidden_dim"], arch["intermediate_dim"]
  source, target = _lengths(source_ids), _lengths(target_ids)
  encoder = arch["num_encoder_layers"] * (
      _block_flops(source.sum(), d, ff) + 4 * d * (source ** 2).sum())
  cross = (target.sum() * 2 * 2 * d * d     # query and output projections
           + source.sum() * 2 * 2 * d * d   # key and value projections
           + 4 * d * (source * target).sum())  # scores and weighted sum
  decoder = arch["num_decoder_layers"] * (
      _block_flops(target.sum(), d, ff) + 4 * d * (target ** 2).sum() + cross)
  output = target.sum() * 2 * d * vocabulary_size
  return 3 * (encoder + decoder + output)


# family -> FLOPs of a training step on that family's host-side features
STEP_FLOPS = {
    "encoder": encoder_step_flops,
    "decoder": lambda arch, ids: decoder_step_flops(
        arch, ids, arch["vocabulary_size"]),
    "seq2seq": lambda arch, features: seq2seq_step_flops(
        arch, features["source_ids"], features["target_ids"],
        arch["vocabulary_size"]),
}


def step_flops(family, arch, features):
  """FLOPs of a training step of `family` on host-side `features`."""
  if family not in STEP_FLOPS:
    raise ValueError(f"unknown family {family!r}; known: {sorted(STEP_FLOPS)}")
  return STEP_FLOPS[family](arch, features)
