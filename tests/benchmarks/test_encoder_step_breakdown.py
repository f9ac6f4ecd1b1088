"""The matmul-only ceiling runs exactly the model FLOPs that MFU counts."""

import numpy as np

from benchmarks.encoder_step_breakdown import shapes_flops, step_matmul_shapes
from benchmarks.model_flops import encoder_step_flops

ARCH = dict(hidden_dim=128, intermediate_dim=256, num_heads=4, num_layers=2)


def test_unpadded_batch_runs_the_counted_flops():
  ids = np.ones([64, 16], np.int32)  # every token real
  assert shapes_flops(step_matmul_shapes(ARCH, 64, 16)) == encoder_step_flops(
      ARCH, ids)


def test_padding_is_computed_but_not_counted():
  ids = np.ones([8, 32], np.int32)
  ids[:, 20:] = 0
  padded = shapes_flops(step_matmul_shapes(ARCH, 8, 32))
  assert padded > encoder_step_flops(ARCH, ids)
  assert padded == encoder_step_flops(ARCH, np.ones([8, 32], np.int32))


def test_every_projection_has_forward_and_two_gradient_products():
  shapes = step_matmul_shapes(ARCH, 2, 4)
  projections = [s for s in shapes if s[1] == ()]
  # 6 weight matrices per layer x 3 products, counted over both layers.
  assert sum(count for count, *_ in projections) == 6 * 3 * 2
  assert {(m, k, n) for _, _, m, k, n in projections} >= {
      (8, 128, 128), (8, 128, 256), (8, 256, 128), (128, 8, 256)}
