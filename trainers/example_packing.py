"""Example packing for classification training (`--pack_examples`).

Short examples padded to a common width waste most of a batch: SST-2 phrases
average about 11 tokens, so bucketed padding leaves about 44% of every step's
matmul work on padding. Packing puts several whole examples into each row of W
tokens (W is half the model's sequence length, or all of it for the few
long examples: row_widths) and says which example each token belongs to:

  token_ids    int32[R, W]  the examples' ids side by side, 0 after the last
  segment_ids  int32[R, W]  1, 2, ... for the 1st, 2nd, ... example; 0 = padding
  positions    int32[R, W]  each token's position inside its own example
  labels       int64[R, S]  the label of segment s + 1; -1 where a row has
                            fewer than S examples

The model keeps attention, the convolution and pooling inside each segment
(zoo.backbones.encoder, zoo.tasks.text_classifier), so each example's logits
are those it would get alone. Rows are filled by best fit (each example goes
to the open row it fills most tightly), in the epoch's shuffled order; the
rows are then shuffled again and cut into batches of a fixed number of rows
per width, chosen so that a batch carries `batch_size` examples on average.
Everything depends only on (seed, epoch), so a resumed run sees the batches
an uninterrupted run would.
"""

import math

import numpy as np
import tensorflow as tf

from zoo.tasks.text_classifier import MAX_SEGMENTS  # examples per row, at most
from zoo.tokenizers.wordpiece import row_lengths


def pack_rows(lengths, capacity, max_segments=MAX_SEGMENTS):
  """Best-fit packing of examples, in the given order, into rows.

  lengths: int[N], every one in 1..capacity. Returns a list of rows, each a
  list of indices into `lengths`, whose lengths sum to at most `capacity`,
  with at most `max_segments` indices; every index appears exactly once.
  """
  lengths = np.asarray(lengths)
  if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
    raise ValueError(f"example lengths must be in 1..{capacity}")
  rows = []
  best_fit(lengths, range(len(lengths)), capacity, rows, open_new=True,
           max_segments=max_segments)
  return rows


def best_fit(lengths, order, capacity, rows, open_new,
             max_segments=MAX_SEGMENTS):
  """Places the examples `order` (indices into lengths), one by one, into
  the row of `rows` (lists of indices, of width `capacity`; extended in
  place) that each fills most tightly. An example that fits no row opens a
  new one if `open_new`, else is returned: the list of those left over."""
  # open_rows[r]: the rows with exactly r free tokens (0 < r < capacity).
  open_rows = [[] for _ in range(capacity)]
  free = [capacity - int(lengths[row].sum()) for row in rows]
  for row, room in enumerate(free):
    if 0 < room < capacity and len(rows[row]) < max_segments:
      open_rows[room].append(row)
  left_over = []
  for index in order:
    length = int(lengths[index])
    # The tightest open row that still holds this example.
    target = next((r for r in range(length, capacity) if open_rows[r]), None)
    if target is not None:
      row = open_rows[target].pop()
    elif open_new:
      rows.append([])
      free.append(capacity)
      row = len(rows) - 1
    else:
      left_over.append(index)
      continue
    rows[row].append(index)
    free[row] -= length
    if free[row] > 0 and len(rows[row]) < max_segments:
      open_rows[free[row]].append(row)
  return left_over


def rows_per_batch(num_examples, num_rows, batch_size, num_replicas):
  """Rows per global batch so that a batch holds about `batch_size` examples;
  a multiple of `num_replicas`, at least one row per replica."""
  rows = math.ceil(batch_size * num_rows / num_examples)
  return max(num_replicas, math.ceil(rows / num_replicas) * num_replicas)


def packed_arrays(ids, labels, rows, capacity, max_segments=MAX_SEGMENTS):
  """The packed tensors (see the module docstring) of `rows` of examples.

  ids: a list of int32 arrays (each example's real tokens); labels: int64[N].
  Returns ({"token_ids", "segment_ids", "positions"}: int32[R, L],
  labels int64[R, S]).
  """
  token_ids = np.zeros([len(rows), capacity], np.int32)
  segment_ids = np.zeros_like(token_ids)
  positions = np.zeros_like(token_ids)
  row_labels = np.full([len(rows), max_segments], -1, np.int64)
  for r, row in enumerate(rows):
    start = 0
    for s, index in enumerate(row):
      example = ids[index]
      end = start + len(example)
      token_ids[r, start:end] = example
      segment_ids[r, start:end] = s + 1
      positions[r, start:end] = np.arange(len(example))
      row_labels[r, s] = labels[index]
      start = end
  features = {"token_ids": token_ids, "segment_ids": segment_ids,
              "positions": positions}
  return features, row_labels


def row_widths(capacity):
  """Row widths a packed batch may have: half the capacity and the capacity.

  Most examples are short, and a row's attention costs width^2 (scores
  between packed neighbours are computed, then masked), so half-width rows
  carry most of the data at half the attention cost; the few long examples
  get full rows, whose leftover room short examples fill.
  """
  return tuple(sorted({max(1, capacity // 2), capacity}))


class PackedEpochs:
  """The packed training batches of every epoch, from (seed, epoch) alone.

  Every batch has one row width (see row_widths): the rows of each width
  are cut into batches of that width's rows_per_batch (so a batch of any
  width holds about batch_size examples), and the epoch's batches of all
  widths are shuffled together.
  """

  def __init__(self, ids, labels, capacity, batch_size, num_replicas, seed):
    self.ids = ids  # list of int32 arrays, the examples' real tokens
    self.labels = np.asarray(labels, np.int64)
    self.lengths = np.asarray([len(x) for x in ids])
    self.widths = row_widths(capacity)
    self.seed = seed
    # width -> the examples (indices) too long for any narrower row
    self.pools = {}
    low = 0
    for width in self.widths:
      self.pools[width] = np.flatnonzero((self.lengths > low) &
                                         (self.lengths <= width))
      low = width
    self._cached_rows = None  # (epoch, its rows): packing is not free
    first = self.epoch_rows(0)
    self.rows_per_batch = {
        width: rows_per_batch(max(sum(len(row) for row in rows), 1),
                              max(len(rows), 1), batch_size, num_replicas)
        for width, rows in first.items()}

  def epoch_rows(self, epoch):
    """width -> this epoch's rows of that width (lists of example indices),
    in training order.

    Wider rows are packed first, with the examples that need them; the
    narrower examples then fill the room those rows have left before they
    open rows of their own width.
    """
    if self._cached_rows is not None and self._cached_rows[0] == epoch:
      return self._cached_rows[1]
    rng = np.random.default_rng([self.seed, epoch])
    orders = {width: rng.permutation(self.pools[width])
              for width in self.widths}
    rows = {width: [] for width in self.widths}
    for width in sorted(self.widths, reverse=True):
      waiting = list(orders[width])
      for wider in sorted((w for w in self.widths if w > width), reverse=True):
        waiting = best_fit(self.lengths, waiting, wider, rows[wider],
                           open_new=False)
      best_fit(self.lengths, waiting, width, rows[width], open_new=True)
    rows = {width: [width_rows[i] for i in rng.permutation(len(width_rows))]
            for width, width_rows in rows.items()}
    self._cached_rows = (epoch, rows)
    return rows

  def epoch_batches(self, epoch):
    """This epoch's batches in training order: (width, rows) pairs."""
    rows = self.epoch_rows(epoch)
    batches = []
    for width in self.widths:
      size = self.rows_per_batch[width]
      batches += [(width, rows[width][b * size:(b + 1) * size])
                  for b in range(len(rows[width]) // size)]
    rng = np.random.default_rng([self.seed, epoch, 1])
    return [batches[i] for i in rng.permutation(len(batches))]

  def batches_in_epoch(self, epoch):
    return len(self.epoch_batches(epoch))

  def batches(self, skip_batches=0):
    """Yields (features, labels) numpy batches forever, from batch
    `skip_batches` of the whole run (each width's partial last batch of an
    epoch is dropped)."""
    epoch = 0
    while True:
      batches = self.epoch_batches(epoch)
      for width, rows in batches[skip_batches:]:
        yield packed_arrays(self.ids, self.labels, rows, width)
      skip_batches = max(0, skip_batches - len(batches))
      epoch += 1


def token_lists(sentences, tokenizer, chunk=4096):
  """Each sentence's real token ids ([CLS] first, truncated like the model
  input), as a list of int32 arrays."""
  out = []
  for start in range(0, len(sentences), chunk):
    ids = tokenizer(tf.constant(sentences[start:start + chunk]))  # [b, L]
    lengths = row_lengths(ids).numpy()
    out.extend(row[:n] for row, n in zip(ids.numpy().astype(np.int32),
                                         lengths))
  return out


def packed_train_dataset(sentences, labels, tokenizer, global_batch_size,
                         num_replicas, seed, skip_batches=0):
  """Infinite packed batches ({token_ids, segment_ids, positions} int32[R, W],
  labels int64[R, S]) of the training examples; see PackedEpochs."""
  epochs = PackedEpochs(token_lists(sentences, tokenizer), labels,
                        tokenizer.sequence_length, global_batch_size,
                        num_replicas, seed)
  spec = tf.TensorSpec([None, None], tf.int32)  # one shape per row width
  signature = ({"token_ids": spec, "segment_ids": spec, "positions": spec},
               tf.TensorSpec([None, MAX_SEGMENTS], tf.int64))
  ds = tf.data.Dataset.from_generator(lambda: epochs.batches(skip_batches),
                                      output_signature=signature)
  return ds.prefetch(tf.data.AUTOTUNE)
