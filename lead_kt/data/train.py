"""The endless, exactly resumable stream of training batches.

Global step k of epoch e = k // steps_per_epoch covers positions [s * B, (s + 1) * B) of epoch e's
shuffled order (s = k % steps_per_epoch, B the global batch; the remainder is dropped), every
record cropped at `epoch_offsets(seed, e)`. Each process builds its contiguous 1/process_count of
those rows. A batch is therefore a pure function of (config, seed, k): the state is just k.
"""

import sys
import weakref

import jax
import numpy as np
from absl import logging

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
from lead_kt.data.windows import epoch_offsets, epoch_order

# Seed of the fixed permutation that cuts a train split into holdout parts.
_HOLDOUT_SEED = 20221


def holdout_parts(num_records: int, parts: int) -> np.ndarray:
  """The part (0..parts-1) of each of a train split's ``num_records`` records: a fixed
  permutation taken modulo ``parts``, so every run of a fold (the teachers that leave a part out,
  the student choosing each record's teacher) cuts the split alike, whatever its seed."""
  return np.random.default_rng(_HOLDOUT_SEED).permutation(num_records) % parts


class TrainStep:
  """step -> this process's host batch of that global step (picklable for grain workers)."""

  def __init__(
    self,
    maker: BatchMaker,
    records: np.ndarray,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
  ):
    self.maker, self.records, self.seed = maker, records, seed
    self.global_batch_size = global_batch_size
    self.process_index, self.process_count = process_index, process_count
    self.steps_per_epoch = len(records) // global_batch_size
    self._plan = (None, None, None)  # (epoch, order, offsets) of the latest epoch used

  def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    if self._plan[0] != epoch:
      lengths = self.maker.split.lengths
      self._plan = (
        epoch,
        epoch_order(self.seed, epoch, self.records),
        epoch_offsets(self.seed, epoch, lengths, self.maker.crop_len),
      )
    return self._plan[1], self._plan[2]

  def __call__(self, step: int) -> HostBatch:
    epoch, position = divmod(step, self.steps_per_epoch)
    order, offsets = self._epoch_plan(epoch)
    batch_rows = order[position * self.global_batch_size : (position + 1) * self.global_batch_size]
    records = host_slice(batch_rows, self.process_index, self.process_count)
    return self.maker(records, offsets[records], np.ones(len(records), np.float32))


class TrainIterator:
  """Infinite iterator of training batches: dicts of global jax.Arrays sharded by `sharding` (numpy
  host batches if sharding is None). See `train_iterator`.

  process_index/process_count default to JAX's; tests pass them to simulate several hosts.
  Raises ValueError at construction for a bad config, batch size, or too small a train split.
  """

  def __init__(
    self,
    data_cfg,
    normalizer: Normalizer,
    global_batch_size: int,
    sharding,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
  ):
    info = dataset_info(data_cfg)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    check_global_batch(global_batch_size, process_count)
    split = load_split(data_cfg, "train")
    records = np.arange(len(split))
    if data_cfg.get("holdout_part", 0):
      # Teachers leaving one part out (data.holdout_part, 1-based) for out-of-fold targets.
      kept = holdout_parts(len(split), data_cfg.holdout_parts) != data_cfg.holdout_part - 1
      records = records[kept]
    if not data_cfg.pad_short:
      records = records[split.lengths >= info.crop_len]
      if len(records) < len(split):
        logging.info(
          "training skips %d records shorter than %d samples (pad_short=False)",
          len(split) - len(records),
          info.crop_len,
        )
    if len(records) < global_batch_size:
      raise ValueError(
        f"the train split of {data_cfg.name!r} has {len(records)} usable records, fewer than one "
        f"global batch ({global_batch_size}); training drops incomplete batches"
      )
    maker = BatchMaker.create(split, normalizer, info)
    self._make_step = TrainStep(
      maker, records, global_batch_size, seed, process_index, process_count
    )
    self._identity = {
      "seed": int(seed),
      "global_batch_size": int(global_batch_size),
      "num_records": len(records),
    }
    self._sharding = sharding
    self._worker_count = data_cfg.worker_count
    self._step = 0
    # The iterator producing batches, if started; closed at the latest at interpreter exit,
    # while grain's modules still exist.
    self._running = []
    weakref.finalize(self, _close_all, self._running)

  @property
  def steps_per_epoch(self) -> int:
    return self._make_step.steps_per_epoch

  @property
  def epoch(self) -> int:
    """The epoch of the next batch."""
    return self._step // self.steps_per_epoch

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict:
    if not self._running:
      self._running.append(
        run_batches(self._make_step, self._step, sys.maxsize, self._worker_count)
      )
    host_batch = next(self._running[0])
    self._step += 1
    return host_batch if self._sharding is None else to_global(host_batch, self._sharding)

  def get_state(self) -> dict:
    """JSON-able position: the next batch is global step `step`."""
    return {"step": self._step, **self._identity}

  def set_state(self, state: dict) -> None:
    """Continues from a `get_state` result; checks that it was taken with the same data/seed."""
    for key, value in self._identity.items():
      if state.get(key) != value:
        raise ValueError(f"iterator state has {key}={state.get(key)!r}, this iterator {value!r}")
    self._step = int(state["step"])
    self.close()

  def close(self) -> None:
    """Stops the worker processes, if any (the next `next` starts again where it was)."""
    _close_all(self._running)


def _close_all(running: list) -> None:
  while running:
    running.pop().close()


def train_iterator(
  data_cfg, normalizer: Normalizer, global_batch_size: int, sharding, seed: int
) -> TrainIterator:
  """Training batches (see the module docstring and `lead_kt.methods.base` for their content)."""
  return TrainIterator(data_cfg, normalizer, global_batch_size, sharding, seed)
