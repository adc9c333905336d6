"""Cutting fixed-length windows out of ECG records, vectorised over a whole batch.

Two stores with the same `crops` method:
- `InMemorySignals`: every record of a split decoded once into one contiguous array (fast; needs RAM
  of the split's size: ~0.85 GB for PTB-XL's train split at 100 Hz).
- `StreamedSignals`: records read (and decoded) from the split readers per batch; what grain worker
  processes use, so a split never has to fit into memory.
"""

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from lead_kt.data.catalog import SplitReader

NUM_LEADS = 12


def gather_crops(
  flat: np.ndarray,
  starts: np.ndarray,
  lengths: np.ndarray,
  rows: np.ndarray,
  offsets: np.ndarray,
  crop_len: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Windows of `crop_len` samples of records stored back to back.

  Args:
    flat: [N, 12] all records concatenated along time.
    starts, lengths: [n] where each record begins in `flat`, and its number of samples.
    rows: [B] the records to cut from; offsets: [B] the first sample of each window.
  Returns:
    crops float32 [B, crop_len, 12] (0 past a record's end) and valid bool [B, crop_len] (False
    there).
  """
  time = offsets[:, None] + np.arange(crop_len)
  valid = time < lengths[rows][:, None]
  positions = np.where(valid, starts[rows][:, None] + time, 0)
  crops = np.take(flat, positions, axis=0)  # several times faster than flat[positions]
  if not valid.all():
    crops *= valid[..., None]
  return crops, valid


@dataclasses.dataclass(frozen=True)
class InMemorySignals:
  """Records 0..n-1 of a split back to back: flat [N, 12], starts/lengths [n]."""

  flat: np.ndarray
  starts: np.ndarray
  lengths: np.ndarray

  @classmethod
  def from_records(cls, signals: Sequence[np.ndarray]) -> "InMemorySignals":
    lengths = np.array([len(s) for s in signals], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(signals) if signals else np.zeros((0, NUM_LEADS), np.float32)
    return cls(np.ascontiguousarray(flat, np.float32), starts, lengths)

  def crops(self, rows, offsets, crop_len):
    """See `gather_crops`."""
    return gather_crops(self.flat, self.starts, self.lengths, rows, offsets, crop_len)

  def chunks(self, rows: np.ndarray) -> Iterator[np.ndarray]:
    """The samples of these records, in pieces of [t, 12]."""
    for row in rows:
      yield self.flat[self.starts[row] : self.starts[row] + self.lengths[row]]


@dataclasses.dataclass(frozen=True)
class StreamedSignals:
  """Records read on demand; record r is position refs[r, 1] of readers[refs[r, 0]]."""

  readers: tuple[SplitReader, ...]
  refs: np.ndarray

  def read(self, rows: np.ndarray) -> list[np.ndarray]:
    """The `ecg` arrays [T, 12] of these records, in the order given."""
    signals: list[np.ndarray | None] = [None] * len(rows)
    reader_ids = self.refs[rows, 0]
    for reader_id in np.unique(reader_ids):
      (slots,) = np.nonzero(reader_ids == reader_id)
      examples = self.readers[reader_id].read(self.refs[rows[slots], 1])
      for slot, example in zip(slots, examples, strict=True):
        signals[slot] = np.asarray(example["ecg"], np.float32)
    return signals

  def crops(self, rows, offsets, crop_len):
    """See `gather_crops`."""
    batch = InMemorySignals.from_records(self.read(np.asarray(rows)))
    return batch.crops(np.arange(len(rows)), offsets, crop_len)

  def chunks(self, rows: np.ndarray, records_per_read: int = 256) -> Iterator[np.ndarray]:
    """The samples of these records, in pieces of [t, 12]."""
    for first in range(0, len(rows), records_per_read):
      yield from self.read(rows[first : first + records_per_read])
