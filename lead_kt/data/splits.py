"""The dataset's description (`DatasetInfo`), config checks, and splits loaded in index order.

A split's records are numbered 0..n-1 in record order (the stored `index` for the official splits;
in cross-validation mode, record-id order within each derived split), and that number is the
`index` every batch carries. Loading a split decodes each record once (`_scan`, cached per process)
to learn its label, length and fold; with `keep_signals` the samples stay in memory too.
"""

import dataclasses
import weakref
from collections.abc import Sequence

import numpy as np

from lead_kt.data.catalog import Source, open_source
from lead_kt.data.signals import InMemorySignals, StreamedSignals
from lead_kt.ecg_io import STANDARD_LEADS, EcgReadError, normalize_lead_name

SPLITS = ("train", "validation", "test")
NUM_FOLDS = 10
_RECORDS_PER_READ = 256


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about the configured dataset.

  crop_len is the window length in samples (data.crop_len, or the record length for 0), and
  eval_stride the step between evaluation windows (data.eval_stride, or crop_len // 2 for 0).
  """

  name: str
  class_names: tuple[str, ...]
  num_classes: int
  sampling_rate: int
  student_leads: tuple[str, ...]
  teacher_leads: tuple[str, ...]
  split_sizes: dict[str, int]
  crop_len: int
  eval_stride: int


@dataclasses.dataclass(frozen=True)
class SplitData:
  """One split in index order: record r is row rows[r] of `signals`.

  labels float32 [n, C], lengths int64 [n] (samples per record), first_labels int32 [n] (see
  `_first_label`).
  """

  name: str
  labels: np.ndarray
  lengths: np.ndarray
  first_labels: np.ndarray
  rows: np.ndarray
  signals: InMemorySignals | StreamedSignals

  def __len__(self) -> int:
    return len(self.rows)

  def crops(self, records: np.ndarray, offsets: np.ndarray, crop_len: int):
    """Raw windows of these records (see `signals.gather_crops`)."""
    return self.signals.crops(self.rows[records], offsets, crop_len)

  def chunks(self):
    """All samples of the split, as arrays [t, 12]."""
    return self.signals.chunks(self.rows)


def dataset_info(data_cfg) -> DatasetInfo:
  """Checks the config against the dataset (preparing it if needed) and describes it.

  Raises ValueError for an unknown dataset, a missing or empty split, a lead the dataset lacks, a
  crop longer than every record without padding, or a config value out of range.
  """
  _check_options(data_cfg)
  source = open_source(data_cfg)
  for lead in STANDARD_LEADS:
    if lead not in source.info.lead_names:
      raise ValueError(f"dataset {data_cfg.name!r} lacks lead {lead}, which the teacher needs")
  if data_cfg.cv_test_fold:
    split_sizes = {split: len(load_split(data_cfg, split)) for split in SPLITS}
  else:
    split_sizes = {split: len(source.split(split)) for split in SPLITS}
  for split, size in split_sizes.items():
    if size == 0:
      raise ValueError(f"split {split!r} of dataset {data_cfg.name!r} is empty")
  crop_len = resolve_crop_len(data_cfg, source)
  if data_cfg.eval_stride > crop_len:
    raise ValueError(
      f"data.eval_stride={data_cfg.eval_stride} exceeds the window ({crop_len} samples): "
      "evaluation windows would leave gaps"
    )
  return DatasetInfo(
    name=data_cfg.name,
    class_names=source.info.class_names,
    num_classes=len(source.info.class_names),
    sampling_rate=source.info.sampling_rate,
    student_leads=resolve_leads(data_cfg.student_leads, source.info.lead_names, data_cfg.name),
    teacher_leads=STANDARD_LEADS,
    split_sizes=split_sizes,
    crop_len=crop_len,
    eval_stride=data_cfg.eval_stride or max(crop_len // 2, 1),
  )


def resolve_leads(names: str | Sequence[str], available: Sequence[str], dataset: str):
  """Canonical names of the requested leads, in the order requested (any capitalisation)."""
  names = (names,) if isinstance(names, str) else tuple(names)
  if not names:
    raise ValueError("data.student_leads is empty")
  leads = []
  for name in names:
    try:
      lead = normalize_lead_name(name)
    except EcgReadError:
      lead = None
    if lead not in available:
      raise ValueError(
        f"data.student_leads: dataset {dataset!r} has no lead {name!r}; "
        f"available leads: {', '.join(available)}"
      )
    leads.append(lead)
  if len(set(leads)) != len(leads):
    raise ValueError(f"data.student_leads names a lead twice: {names}")
  return tuple(leads)


def resolve_crop_len(data_cfg, source: Source) -> int:
  """The training/evaluation window length in samples (see `DatasetInfo`)."""
  fixed_length = source.info.record_length
  if data_cfg.crop_len == 0:
    if fixed_length:
      return fixed_length
    if not data_cfg.pad_short:
      raise ValueError(
        f"data.crop_len=0 (whole records) needs records of one length, but those of "
        f"{data_cfg.name!r} vary; set data.crop_len or data.pad_short=True"
      )
    return int(load_split(data_cfg, "train").lengths.max())
  if not data_cfg.pad_short:
    longest = fixed_length or int(load_split(data_cfg, "train").lengths.max())
    if data_cfg.crop_len > longest:
      raise ValueError(
        f"data.crop_len={data_cfg.crop_len} is longer than every record of {data_cfg.name!r} "
        f"(longest: {longest} samples) and data.pad_short is False"
      )
  return data_cfg.crop_len


def load_split(data_cfg, split: str) -> SplitData:
  """The records of `split` ("train", "validation", "test") in index order.

  In cross-validation mode (data.cv_test_fold = k) the three stored splits are pooled: test is
  strat_fold k, validation fold k % 10 + 1, train the other eight.
  With data.worker_count = 0 the samples are kept in memory; otherwise they are read per batch.
  """
  source = open_source(data_cfg)
  keep_signals = data_cfg.worker_count == 0
  if not data_cfg.cv_test_fold:
    scan = _scan(source, (split,), keep_signals)
    order = np.argsort(scan.stored_index, kind="stable")
    if not np.array_equal(scan.stored_index[order], np.arange(len(order))):
      raise ValueError(f"split {split!r} of {data_cfg.name!r}: stored `index` is not 0..n-1")
    return scan.select(split, order)
  if split not in SPLITS:
    raise ValueError(f"no split {split!r} in cross-validation mode; there are {', '.join(SPLITS)}")
  scan = _scan(source, SPLITS, keep_signals)
  test_fold = data_cfg.cv_test_fold
  validation_fold = test_fold % NUM_FOLDS + 1
  in_split = {
    "test": scan.folds == test_fold,
    "validation": scan.folds == validation_fold,
    "train": (scan.folds != test_fold) & (scan.folds != validation_fold),
  }[split]
  (members,) = np.nonzero(in_split)
  return scan.select(split, members[np.argsort(scan.record_order[members], kind="stable")])


@dataclasses.dataclass(frozen=True)
class _Scan:
  """Per-record facts of one or more stored splits, in storage order (split after split)."""

  labels: np.ndarray
  lengths: np.ndarray
  first_labels: np.ndarray
  folds: np.ndarray
  stored_index: np.ndarray
  record_order: np.ndarray  # rank of each record in record-id order across all scanned splits
  signals: InMemorySignals | StreamedSignals

  def select(self, split: str, rows: np.ndarray) -> SplitData:
    return SplitData(
      split, self.labels[rows], self.lengths[rows], self.first_labels[rows], rows, self.signals
    )


# Loaded facts per source; an entry goes when its source does (e.g. a re-registered dataset).
_SCANS: weakref.WeakKeyDictionary[Source, dict[tuple, _Scan]] = weakref.WeakKeyDictionary()


def _scan(source: Source, splits: tuple[str, ...], keep_signals: bool) -> _Scan:
  scans = _SCANS.setdefault(source, {})
  if (splits, keep_signals) not in scans:
    scans[splits, keep_signals] = _read_facts(source, splits, keep_signals)
  return scans[splits, keep_signals]


def _read_facts(source: Source, splits: tuple[str, ...], keep_signals: bool) -> _Scan:
  readers = tuple(source.split(split) for split in splits)
  examples_facts, signals, refs = [], [], []
  for reader_id, reader in enumerate(readers):
    for first in range(0, len(reader), _RECORDS_PER_READ):
      positions = range(first, min(first + _RECORDS_PER_READ, len(reader)))
      for position, example in zip(positions, reader.read(positions), strict=True):
        ecg = np.asarray(example["ecg"], np.float32)
        if ecg.ndim != 2 or ecg.shape[1] != len(STANDARD_LEADS):
          raise ValueError(f"{source.info.name} {splits[reader_id]}[{position}]: ecg {ecg.shape}")
        examples_facts.append(_facts(example, reader_id, len(ecg)))
        refs.append((reader_id, position))
        if keep_signals:
          signals.append(ecg)
  num_classes = len(source.info.class_names)
  labels = np.array([f["label"] for f in examples_facts], np.float32).reshape(-1, num_classes)
  store = (
    InMemorySignals.from_records(signals)
    if keep_signals
    else StreamedSignals(readers, np.array(refs, np.int64).reshape(-1, 2))
  )
  return _Scan(
    labels=labels,
    lengths=np.array([f["length"] for f in examples_facts], np.int64),
    first_labels=np.array([f["first_label"] for f in examples_facts], np.int32),
    folds=np.array([f["strat_fold"] for f in examples_facts], np.int64),
    stored_index=np.array([f["index"] for f in examples_facts], np.int64),
    record_order=_record_order(examples_facts),
    signals=store,
  )


def _facts(example, reader_id: int, length: int) -> dict:
  record_id = example.get("ecg_id", example.get("record_id"))
  if isinstance(record_id, bytes):
    record_id = record_id.decode()
  label = np.asarray(example["label"], np.float32)
  return {
    "label": label,
    "first_label": _first_label(example, label),
    "length": length,
    "strat_fold": int(example["strat_fold"]),
    "index": int(example["index"]),
    "record_id": record_id,
    "fallback_id": (reader_id, int(example["index"])),
  }


def _first_label(example, label: np.ndarray) -> int:
  """The stored `first_label` (ICBEB2018: REFERENCE.csv's First_label); for datasets without one
  (PTB-XL) the lowest positive class, -1 if there is none."""
  if "first_label" in example:
    return int(example["first_label"])
  return int(label.argmax()) if label.any() else -1


def _record_order(examples_facts: list[dict]) -> np.ndarray:
  """Ranks by record id (ecg_id or record_id); by (stored split, index) where a record has none."""
  use_ids = all(f["record_id"] is not None for f in examples_facts)
  keys = [f["record_id"] if use_ids else f["fallback_id"] for f in examples_facts]
  order = sorted(range(len(keys)), key=keys.__getitem__)
  ranks = np.empty(len(keys), np.int64)
  ranks[order] = np.arange(len(keys))
  return ranks


def _check_options(data_cfg) -> None:
  checks = {
    "data.crop_len must be >= 0": data_cfg.crop_len >= 0,
    "data.eval_stride must be >= 0": data_cfg.eval_stride >= 0,
    "data.worker_count must be >= 0": data_cfg.worker_count >= 0,
    "data.normalization must be 'global', 'per_lead' or 'none'": data_cfg.normalization
    in ("global", "per_lead", "none"),
    # The contracts standardise each record themselves; a second normalisation would change
    # what the released weights see.
    "data.preprocessing standardises each record: set data.normalization='none'": not (
      data_cfg.get("preprocessing", "") and data_cfg.normalization != "none"
    ),
    "data.eval_aggregate must be 'max' or 'mean'": data_cfg.eval_aggregate in ("max", "mean"),
    "data.cv_test_fold must be 0 (official splits) or 1..10": 0 <= data_cfg.cv_test_fold <= 10,
  }
  for message, ok in checks.items():
    if not ok:
      raise ValueError(f"{message} (data.name={data_cfg.name!r})")
