"""Where windows start: random training crops, sliding evaluation windows, and their aggregation."""

import numpy as np

# Independent random streams under one seed.
_ORDER_STREAM, _CROP_STREAM = 0, 1


def epoch_order(seed: int, epoch: int, records: np.ndarray) -> np.ndarray:
  """The records in this epoch's shuffled order (a new permutation per epoch)."""
  return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(records)


def epoch_offsets(seed: int, epoch: int, lengths: np.ndarray, crop_len: int) -> np.ndarray:
  """First sample of each record's training window in this epoch: int64 [n].

  Uniform over the starts that keep the window inside the record (0 for a record not longer than
  the window); a function of (seed, epoch, record index) only, independent of the order of reads.
  """
  uniform = np.random.default_rng([seed, epoch, _CROP_STREAM]).random(len(lengths))
  spans = np.maximum(lengths - crop_len, 0) + 1
  return (uniform * spans).astype(np.int64)


def sliding_windows(
  lengths: np.ndarray, crop_len: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
  """Evaluation windows covering every record: (record int64 [N], start int64 [N]).

  Starts 0, stride, 2 * stride, ... and a last window aligned to the record's end; a record not
  longer than the window gets one window at 0 (padded at the end).
  """
  last_start = np.maximum(np.asarray(lengths, np.int64) - crop_len, 0)
  counts = -(-last_start // stride) + 1
  records = np.repeat(np.arange(len(last_start)), counts)
  first_window = np.concatenate([[0], np.cumsum(counts)[:-1]])
  step = np.arange(len(records)) - first_window[records]
  return records, np.minimum(step * stride, last_start[records])


def aggregate_windows(
  outputs: np.ndarray, record: np.ndarray, mask: np.ndarray, num_records: int, how: str = "max"
) -> np.ndarray:
  """Per-record outputs from per-window ones, ignoring padding.

  Args:
    outputs: [N, C] per window; record: [N] the window's record (0..num_records-1); mask: [N], 0 for
      padding entries.
    how: "max" or "mean" over each record's windows.
  Returns:
    [num_records, C] float32. Raises ValueError if a record has no window.
  """
  keep = np.asarray(mask) > 0
  outputs = np.asarray(outputs, np.float32)[keep]
  record = np.asarray(record)[keep].astype(np.int64)
  if len(record) and (record.min() < 0 or record.max() >= num_records):
    raise ValueError(f"window record ids must lie in 0..{num_records - 1}")
  counts = np.bincount(record, minlength=num_records)
  if (counts == 0).any():
    missing = np.nonzero(counts == 0)[0]
    raise ValueError(f"{len(missing)} records have no window, e.g. records {missing[:5].tolist()}")
  if how == "max":
    result = np.full((num_records, outputs.shape[1]), -np.inf, np.float32)
    np.maximum.at(result, record, outputs)
    return result
  if how == "mean":
    sums = np.zeros((num_records, outputs.shape[1]), np.float64)
    np.add.at(sums, record, outputs)
    return (sums / counts[:, None]).astype(np.float32)
  raise ValueError(f"window aggregation must be 'max' or 'mean', got {how!r}")
