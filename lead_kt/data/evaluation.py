"""Evaluation batches: every window of every record of a split exactly once, on any process count.

The split's sliding windows (`windows.sliding_windows`) are laid out in record order and cut into
global batches of B; the last one is filled up with copies of window 0 whose `mask` is 0. Process p
builds rows [p * B / P, (p + 1) * B / P) of each global batch, so all processes run the same
number of batches.
"""

from collections.abc import Iterator

import jax
import numpy as np

from lead_kt.data.batching import (
  BatchMaker,
  HostBatch,
  check_global_batch,
  host_slice,
  run_batches,
  to_global,
)
from lead_kt.data.normalization import Normalizer
from lead_kt.data.splits import dataset_info, load_split
from lead_kt.data.windows import sliding_windows


class EvalStep:
  """batch number -> this process's host batch (picklable for grain workers)."""

  def __init__(
    self,
    maker: BatchMaker,
    records: np.ndarray,
    starts: np.ndarray,
    global_batch_size: int,
    process_index: int,
    process_count: int,
  ):
    self.maker, self.records, self.starts = maker, records, starts
    self.global_batch_size = global_batch_size
    self.process_index, self.process_count = process_index, process_count
    self.num_batches = -(-len(records) // global_batch_size)

  def __call__(self, number: int) -> HostBatch:
    first = number * self.global_batch_size
    rows = host_slice(
      np.arange(first, first + self.global_batch_size), self.process_index, self.process_count
    )
    real = rows < len(self.records)
    windows = np.where(real, rows, 0)
    records = self.records[windows]
    batch = self.maker(records, self.starts[windows], real)
    batch["record"] = records.astype(np.int32)
    return batch


def eval_batches(
  data_cfg,
  split: str,
  normalizer: Normalizer,
  global_batch_size: int,
  sharding,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict]:
  """The windows of `split` as batches: `teacher`, `student`, `label`, `index`, `mask` as in
  training plus `record` int32 [B] (= `index`, the record's position in the split).

  Global jax.Arrays sharded by `sharding`, or numpy host batches when sharding is None.
  process_index/process_count default to JAX's (tests pass them to simulate several hosts).
  Raises ValueError at the call (not at the first batch) for a bad split or batch size.
  """
  step = _eval_step(data_cfg, split, normalizer, global_batch_size, process_index, process_count)
  return _batches(step, data_cfg.worker_count, sharding)


def _eval_step(data_cfg, split, normalizer, global_batch_size, process_index, process_count):
  info = dataset_info(data_cfg)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  check_global_batch(global_batch_size, process_count)
  data = load_split(data_cfg, split)
  if not len(data):
    raise ValueError(f"split {split!r} of {data_cfg.name!r} is empty")
  records, starts = sliding_windows(data.lengths, info.crop_len, info.eval_stride)
  maker = BatchMaker.create(data, normalizer, info)
  return EvalStep(maker, records, starts, global_batch_size, process_index, process_count)


def _batches(step: EvalStep, worker_count: int, sharding) -> Iterator[dict]:
  host_batches = run_batches(step, 0, step.num_batches, worker_count)
  try:
    for host_batch in host_batches:
      yield host_batch if sharding is None else to_global(host_batch, sharding)
  finally:
    host_batches.close()


def split_labels(data_cfg, split: str) -> np.ndarray:
  """Multi-hot labels float32 [n, C] of the split's records, in index order."""
  return load_split(data_cfg, split).labels


def split_first_labels(data_cfg, split: str) -> np.ndarray:
  """int32 [n]: each record's first label, in index order: the stored `first_label` where the
  dataset has one (ICBEB2018: REFERENCE.csv's First_label), else the lowest positive class (-1 for
  a record without one)."""
  return load_split(data_cfg, split).first_labels
