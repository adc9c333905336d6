"""Reading single ECG records from disk into one in-memory form.

`read_record` accepts WFDB records (`.hea` + signal files, including the PhysioNet/CinC Challenge
2020/2021 `.hea` + `.mat` form), the original CPSC2018 `.mat` files (a MATLAB struct `ECG` with
`sex`, `age` and `data` [12, N] in mV at 500 Hz), CSV files (a header row of lead names, one column
per lead, optionally with a unit as in `V1 (uV)`; the sampling rate is passed in) and EDF/EDF+/BDF
files (pyedflib). In every format the channels whose label names an ECG lead are read (any spelling,
see `normalize_lead_name`; a `LeadNaming` names the others: a wearable's single `ECG` channel, a
headerless one-column CSV file) and the other channels (Resp, SpO2, ...) are listed in
`meta["ignored_channels"]`. Every record comes back as a `Record` whose signal is float32 [T, L] in
millivolts with canonical lead names. Invalid input raises `EcgReadError`, whose message names the
file and what is wrong (for CSV files, the row and column).

One module per format reads it (`wfdb_format`, `cpsc_mat`, `csv_format`, `edf_format`); what they
share (Record, EcgReadError, lead names, units, validation, resampling) is in `core`. Every public
name is importable from `lead_kt.ecg_io` itself.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
from collections.abc import Iterator, Sequence

from lead_kt.ecg_io.core import (
  FLAT_LEAD_MV,
  STANDARD_LEADS,
  EcgReadError,
  LeadNaming,
  Record,
  ignored_channels_note,
  make_record,
  normalize_lead_name,
  reject_flat_leads,
  resample,
  select_leads,
)
from lead_kt.ecg_io.cpsc_mat import CPSC_MAT_FS, read_cpsc_mat
from lead_kt.ecg_io.csv_format import read_csv
from lead_kt.ecg_io.edf_format import EDF_EXTENSIONS, read_edf
from lead_kt.ecg_io.wfdb_format import read_wfdb

__all__ = [
  "CPSC_MAT_FS",
  "FLAT_LEAD_MV",
  "STANDARD_LEADS",
  "EcgReadError",
  "LeadNaming",
  "Record",
  "available_cpus",
  "find_records",
  "ignored_channels_note",
  "make_record",
  "normalize_lead_name",
  "read_record",
  "read_records",
  "reject_flat_leads",
  "resample",
  "select_leads",
]


def read_record(
  path: str | os.PathLike, *, csv_fs: float | None = None, naming: LeadNaming | None = None
) -> Record:
  """Reads one ECG record, given with or without its extension (`.hea`, `.dat`, `.mat`).

  `.csv` files are read as CSV (`csv_fs`, the sampling rate in Hz, is required for them), `.edf` and
  `.bdf` files as EDF/EDF+/BDF. Otherwise a `.hea` header next to the path means WFDB (any signal
  format `wfdb` reads), and a `.mat` file without one is read as an original CPSC2018 file.
  `naming` says which channels are which leads (default: their labels; see LeadNaming).
  """
  path = os.fspath(path)
  naming = naming or LeadNaming()
  extension = os.path.splitext(path)[1].lower()
  if extension == ".csv":
    return read_csv(path, csv_fs, naming)
  if extension in EDF_EXTENSIONS:
    return read_edf(path, naming)
  base = _strip_extension(path)
  if os.path.isfile(base + ".hea"):
    return read_wfdb(base, naming)
  if os.path.isfile(base + ".mat"):
    return read_cpsc_mat(base + ".mat", naming)
  if os.path.isfile(path):
    raise EcgReadError(
      f"{path}: unsupported file type {extension or '(no extension)'!r}; supported: WFDB "
      f"(.hea + signal file), Challenge .hea + .mat, CPSC2018 .mat, .csv, .edf/.bdf"
    )
  raise EcgReadError(f"{path}: no ECG record found (looked for {base}.hea and {base}.mat)")


def find_records(directory: str | os.PathLike) -> list[str]:
  """Every record below `directory`, sorted: WFDB headers (`.hea`), `.mat` files without a header
  beside them (CPSC2018), `.csv`, `.edf` and `.bdf` files. Signal files of WFDB records are not
  listed on their own."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    names = set(files)
    for name in sorted(files):
      stem, extension = os.path.splitext(name)
      extension = extension.lower()
      is_cpsc_mat = extension == ".mat" and stem + ".hea" not in names
      if extension in (".hea", ".csv", *EDF_EXTENSIONS) or is_cpsc_mat:
        found.append(os.path.join(root, name))
  return found


def read_records(
  paths: Sequence[str | os.PathLike], num_workers: int | None = None, batch_size: int = 32
) -> Iterator[Record]:
  """Reads records in the order of `paths`, in `num_workers` worker processes.

  `num_workers=None` uses one process per available CPU for 256 records or more and reads fewer in
  this process (starting workers costs a second or more). Workers are spawned, not forked, so this
  is safe in a process that already runs JAX threads. At most a few batches per worker are held in
  memory. The first invalid record raises its EcgReadError here. Worth it for slow formats (CPSC
  `.mat`, resampling callers); format-16 WFDB records read in well under a millisecond anyway.
  """
  if num_workers is None:
    num_workers = available_cpus() if len(paths) >= 256 else 1
  batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
  if num_workers <= 1:
    for batch in batches:
      yield from _read_batch(batch)
    return
  context = multiprocessing.get_context("spawn")
  pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context)
  try:
    pending = collections.deque()
    for batch in batches:
      pending.append(pool.submit(_read_batch, batch))
      if len(pending) > 4 * num_workers:
        yield from pending.popleft().result()
    while pending:
      yield from pending.popleft().result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def available_cpus() -> int:
  """The number of CPUs this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _read_batch(paths) -> list[Record]:
  return [read_record(path) for path in paths]


def _strip_extension(path: str) -> str:
  root, extension = os.path.splitext(path)
  return root if extension.lower() in (".hea", ".dat", ".mat") else path
