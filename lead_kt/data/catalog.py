"""Where records come from: prepared TFDS datasets (array_record files) or datasets held in memory.

Either kind is a `Source`: metadata plus, per split, a random-access reader that returns records in
the stored format (a dict with `ecg` float32 [T, 12], `label` float32 [C], `index`, `length`,
`strat_fold`, ...; see the builders in `data_builders`). Datasets registered with
`register_memory_dataset` take precedence over TFDS names; tests and quick experiments use them.
With `data.preprocessing` set, every split reader applies that named contract
(`lead_kt.data.preprocessing`) to each record's `ecg` as it reads it.
"""

import dataclasses
import functools
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

from lead_kt.data import preprocessing
from lead_kt.ecg_io import STANDARD_LEADS

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """What a dataset stores.

  record_length is the number of samples of every record when all have the same length (PTB-XL),
  None when lengths vary (ICBEB2018).
  """

  name: str
  class_names: tuple[str, ...]
  lead_names: tuple[str, ...]
  sampling_rate: int
  record_length: int | None


class SplitReader(Protocol):
  """Random access to the records of one split, by storage position."""

  def __len__(self) -> int: ...

  def read(self, positions: Sequence[int]) -> list[Example]: ...


@dataclasses.dataclass(frozen=True)
class MemorySplit:
  """A split held as a list of record dicts."""

  records: Sequence[Example]

  def __len__(self) -> int:
    return len(self.records)

  def read(self, positions: Sequence[int]) -> list[Example]:
    return [self.records[p] for p in positions]


class TfdsSplit:
  """One split of a prepared TFDS dataset, read with `builder.as_data_source` (no TensorFlow).

  The array_record files are opened lazily, and only the dataset's coordinates are pickled, so the
  reader moves cheaply into grain worker processes (each opens its own files).
  """

  def __init__(self, name: str, data_dir: str, split: str):
    self.name, self.data_dir, self.split = name, data_dir, split
    self._data_source = None

  def __getstate__(self) -> dict[str, Any]:
    return {"name": self.name, "data_dir": self.data_dir, "split": self.split}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(**state)

  def _opened(self):
    if self._data_source is None:
      self._data_source = _tfds_builder(self.name, self.data_dir).as_data_source(self.split)
    return self._data_source

  def __len__(self) -> int:
    return len(self._opened())

  def read(self, positions: Sequence[int]) -> list[Example]:
    return list(self._opened().__getitems__([int(p) for p in positions]))


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches are keyed by it
class Source:
  info: SourceInfo
  splits: Mapping[str, SplitReader]

  def split(self, name: str) -> SplitReader:
    if name not in self.splits:
      raise ValueError(
        f"dataset {self.info.name!r} has no split {name!r}; it has {', '.join(self.splits)}"
      )
    return self.splits[name]


_MEMORY_SOURCES: dict[str, Source] = {}


def register_memory_dataset(
  name: str,
  splits: Mapping[str, Sequence[Example]],
  class_names: Sequence[str],
  sampling_rate: int,
  lead_names: Sequence[str] = STANDARD_LEADS,
) -> None:
  """Makes `data.name = name` read these record dicts (stored format) instead of a TFDS dataset.

  Registering a name again replaces the earlier dataset.
  """
  lengths = {int(np.shape(r["ecg"])[0]) for records in splits.values() for r in records}
  info = SourceInfo(
    name=name,
    class_names=tuple(class_names),
    lead_names=tuple(lead_names),
    sampling_rate=int(sampling_rate),
    record_length=lengths.pop() if len(lengths) == 1 else None,
  )
  _MEMORY_SOURCES[name] = Source(info, {k: MemorySplit(list(v)) for k, v in splits.items()})


def open_source(data_cfg) -> Source:
  """The dataset `data_cfg.name` names: a registered in-memory one, else TFDS (built if needed);
  its records preprocessed by the contract `data_cfg.preprocessing` names, if any."""
  if data_cfg.name in _MEMORY_SOURCES:
    source = _MEMORY_SOURCES[data_cfg.name]
  else:
    ensure_built(data_cfg)
    source = _tfds_source(data_cfg.name, _local_path(data_cfg.data_dir))
  contract = data_cfg.get("preprocessing", "")
  return _preprocessed(source, contract) if contract else source


@dataclasses.dataclass(frozen=True)
class PreprocessedSplit:
  """A split whose records' `ecg` pass through a named contract as they are read (picklable, so
  grain workers preprocess their own reads)."""

  reader: SplitReader
  contract: str
  sampling_rate: int

  def __len__(self) -> int:
    return len(self.reader)

  def read(self, positions: Sequence[int]) -> list[Example]:
    apply = preprocessing.get(self.contract).apply
    return [
      {**example, "ecg": apply(example["ecg"], self.sampling_rate)}
      for example in self.reader.read(positions)
    ]


# One preprocessed view per (source, contract), so that what is loaded from it is cached once.
_PREPROCESSED: weakref.WeakKeyDictionary[Source, dict[str, Source]] = weakref.WeakKeyDictionary()


def _preprocessed(source: Source, contract: str) -> Source:
  expected_fs = preprocessing.get(contract).fs
  if source.info.sampling_rate != expected_fs:
    raise ValueError(
      f"data.preprocessing={contract!r} needs records at {expected_fs} Hz, but "
      f"{source.info.name!r} stores {source.info.sampling_rate} Hz"
    )
  views = _PREPROCESSED.setdefault(source, {})
  if contract not in views:
    splits = {
      name: PreprocessedSplit(reader, contract, source.info.sampling_rate)
      for name, reader in source.splits.items()
    }
    views[contract] = Source(source.info, splits)
  return views[contract]


@functools.lru_cache(maxsize=16)
def _tfds_source(name: str, data_dir: str) -> Source:
  """One `Source` per prepared dataset, so that what is loaded from it is cached once."""
  info = _tfds_builder(name, data_dir).info
  metadata = info.metadata or {}
  missing = [k for k in ("class_names", "lead_names", "sampling_rate") if k not in metadata]
  if missing:
    raise ValueError(f"dataset {name!r} in {data_dir} has no {', '.join(missing)} in its metadata")
  return Source(
    info=SourceInfo(
      name=name,
      class_names=tuple(metadata["class_names"]),
      lead_names=tuple(metadata["lead_names"]),
      sampling_rate=int(metadata["sampling_rate"]),
      record_length=info.features["ecg"].shape[0],
    ),
    splits={split: TfdsSplit(name, data_dir, split) for split in info.splits},
  )


def ensure_built(data_cfg):
  """Returns the TFDS builder of `data_cfg.name`, preparing the dataset first if needed.

  Only process 0 prepares it (into the shared `data_dir`); the other processes wait for it at a
  barrier, so a multi-host job needs a `data_dir` every host can read (e.g. gs://).
  `data_cfg.manual_dir` ("" = the builder's default) is passed as the download manual_dir.
  """
  import tensorflow_datasets as tfds

  data_dir = _local_path(data_cfg.data_dir)
  builder = _tfds_builder(data_cfg.name, data_dir)
  if not builder.is_prepared():
    if jax.process_index() == 0:
      logging.info("preparing %s in %s", data_cfg.name, data_dir)
      manual_dir = _local_path(data_cfg.manual_dir) if data_cfg.manual_dir else None
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
      )
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"lead_kt prepared {data_cfg.name}")
    _tfds_builder.cache_clear()
    builder = _tfds_builder(data_cfg.name, data_dir)
  return builder


@functools.lru_cache(maxsize=16)
def _tfds_builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds

  import data_builders  # noqa: F401  (registers ptbxl, icbeb2018 and physionet2021)

  try:
    return tfds.builder(name, data_dir=data_dir)
  except (tfds.core.DatasetNotFoundError, ValueError) as error:
    raise ValueError(f"unknown dataset {name!r} (data.name): {error}") from None


def _local_path(path: str) -> str:
  return path if "://" in path else os.path.expanduser(path)
