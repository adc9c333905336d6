"""Assembling batches: numpy work per whole batch, per-process slices, grain, and global arrays.

A batch is built from record numbers and window starts in one vectorised pass (crop, normalise,
zero the padding, select the student's leads). Every process builds only its slice of each global
batch (`host_slice`); `to_global` joins the slices into jax.Arrays sharded on the batch axis.
"""

import dataclasses
from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np
from absl import flags

from lead_kt.data.normalization import Normalizer
from lead_kt.data.splits import DatasetInfo, SplitData
from lead_kt.ecg_io import STANDARD_LEADS

HostBatch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchMaker:
  """Builds host batches of one split; `student_columns` are the student's lead columns."""

  split: SplitData
  normalizer: Normalizer
  student_columns: tuple[int, ...]
  crop_len: int

  @classmethod
  def create(cls, split: SplitData, normalizer: Normalizer, info: DatasetInfo) -> "BatchMaker":
    columns = tuple(STANDARD_LEADS.index(lead) for lead in info.student_leads)
    return cls(split, normalizer, columns, info.crop_len)

  def __call__(self, records: np.ndarray, starts: np.ndarray, mask: np.ndarray) -> HostBatch:
    """records, starts, mask: [b] -> `teacher` [b, crop, 12], `student` [b, crop, L], `label`
    [b, C], `index` [b] int32, `mask` [b] float32.

    Samples past a record's end (a record shorter than the window) are 0 after normalisation.
    """
    crops, valid = self.split.crops(records, starts, self.crop_len)
    teacher = self.normalizer.apply(crops, in_place=True)
    if not valid.all():
      teacher *= valid[..., None]
    return {
      "teacher": teacher,
      "student": np.take(teacher, self.student_columns, axis=-1),
      "label": self.split.labels[records],
      "index": records.astype(np.int32),
      "mask": mask.astype(np.float32),
    }


def host_slice(global_rows: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This process's contiguous share of a global batch's rows (the batch divides evenly)."""
  size = len(global_rows)
  if size % process_count:
    raise ValueError(f"global batch {size} does not split over {process_count} processes")
  share = size // process_count
  return global_rows[process_index * share : (process_index + 1) * share]


def check_global_batch(global_batch_size: int, process_count: int) -> None:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
      f"global batch size {global_batch_size} must be a positive multiple of the process count "
      f"({process_count})"
    )


def to_global(host_batch: HostBatch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """Joins every process's host batch into global arrays sharded by `sharding` (batch axis)."""
  return {
    key: jax.make_array_from_process_local_data(sharding, value)
    for key, value in host_batch.items()
  }


def run_batches(
  make_batch: Callable[[int], HostBatch], first: int, stop: int, worker_count: int
) -> Iterator[HostBatch]:
  """make_batch(first), make_batch(first + 1), ... up to stop (exclusive).

  worker_count > 0: computed ahead by grain worker processes (spawned; `make_batch` is pickled
  into them). 0: computed on demand in the calling thread; a batch takes about a millisecond, and
  JAX's asynchronous dispatch already overlaps that with the device's work on the previous step
  (a prefetch thread would only contend for the GIL with the training loop).
  Either iterator has `close()`.
  """
  if not worker_count:
    return (make_batch(step) for step in range(first, stop))
  _mark_flags_parsed()
  dataset = grain.MapDataset.range(first, stop).map(make_batch)
  # No reader threads inside a worker: the workers themselves are the parallelism.
  dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return iter(dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count)))


def _mark_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside `app.run` (tests, notebooks) nobody has
  parsed them, so accept the defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
