"""benchmarks/model_flops.py against FLOPs counted matmul by matmul."""

import numpy as np
import pytest

from benchmarks.model_flops import step_flops


def matmul(m, k, n):
  return 2 * m * k * n


def block(tokens, d, ff):
  """Q, K, V, output projections and the two feed-forward matmuls."""
  return 4 * matmul(tokens, d, d) + matmul(tokens, d, ff) + matmul(tokens, ff, d)


def attention(queries, keys, d):
  """Scores (q x k over d) and the weighted sum of values, all heads."""
  return matmul(queries, d, keys) + matmul(queries, keys, d)


ARCH = dict(hidden_dim=8, intermediate_dim=16, num_layers=2,
            num_encoder_layers=2, num_decoder_layers=3, vocabulary_size=11)


def test_encoder_counts_real_tokens_only():
  ids = np.array([[5, 6, 7, 0], [5, 0, 0, 0]])  # lengths 3 and 1
  forward = 2 * (block(3, 8, 16) + attention(3, 3, 8)
                 + block(1, 8, 16) + attention(1, 1, 8))
  assert step_flops("encoder", ARCH, ids) == 3 * forward
  # Padding is free: more zeros change nothing.
  assert step_flops("encoder", ARCH, np.pad(ids, [(0, 0), (0, 5)])) == (
      3 * forward)


def test_packed_rows_count_each_example_alone_and_the_conv_block():
  ids = np.array([[5, 6, 7, 0], [5, 0, 0, 0]])  # lengths 3 and 1
  packed = {"token_ids": np.array([[5, 6, 7, 5, 0]]),
            "segment_ids": np.array([[1, 1, 1, 2, 0]]),
            "positions": np.array([[0, 1, 2, 0, 0]])}
  assert step_flops("encoder", ARCH, packed) == step_flops("encoder", ARCH,
                                                           ids)
  conv = dict(ARCH, conv_kernel_size=3)
  assert step_flops("encoder", conv, ids) == step_flops(
      "encoder", ARCH, ids) + 3 * matmul(4, 3 * 8, 8)


def test_decoder_adds_the_tied_output_projection():
  ids = np.ones([2, 5], np.int32)
  per_row = 2 * (block(5, 8, 16) + attention(5, 5, 8)) + matmul(5, 8, 11)
  assert step_flops("decoder", ARCH, ids) == 3 * 2 * per_row


def test_seq2seq_counts_encoder_decoder_and_cross_attention():
  source = np.array([[4, 5, 6, 0], [4, 5, 0, 0]])  # lengths 3, 2
  target = np.array([[2, 7, 0], [2, 7, 8]])  # lengths 2, 3
  forward = 0
  for s, t in ((3, 2), (2, 3)):
    forward += 2 * (block(s, 8, 16) + attention(s, s, 8))  # encoder
    cross = (2 * matmul(t, 8, 8) + 2 * matmul(s, 8, 8)  # q, o | k, v
             + attention(t, s, 8))
    forward += 3 * (block(t, 8, 16) + attention(t, t, 8) + cross)
    forward += matmul(t, 8, 11)  # output projection
  assert step_flops("seq2seq", ARCH, {"source_ids": source,
                                      "target_ids": target}) == 3 * forward


def test_unknown_family_is_an_error():
  with pytest.raises(ValueError, match="unknown family"):
    step_flops("rnn", ARCH, np.ones([1, 1]))
