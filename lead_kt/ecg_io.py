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
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import math
import multiprocessing
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.io
import scipy.signal

STANDARD_LEADS: tuple[str, ...] = (
  "I",
  "II",
  "III",
  "aVR",
  "aVL",
  "aVF",
  "V1",
  "V2",
  "V3",
  "V4",
  "V5",
  "V6",
)
_CANONICAL_BY_KEY = {name.lower(): name for name in STANDARD_LEADS}
# "Lead", "ECG" or "EKG" before a lead's name ("Lead I", "ECG II", "EKG_V1"): the EDF habit.
_LEAD_PREFIX = re.compile(r"((lead|ecg|ekg)[\s_:-]*)*")
# Limb leads numbered after "Lead" ("Lead 1"; a bare "1" or "ECG 1" numbers a channel, not a lead).
_NUMBERED_LIMB_LEADS = {"1": "i", "2": "ii", "3": "iii"}
# Modified limb leads of Holter and monitoring records (MIT-BIH's MLII is the modified lead II).
_MODIFIED_LIMB_LEAD = re.compile(r"ml(?=i{1,3}$)")
# Sampling rate and lead order of the original CPSC2018 challenge files (not stored in the files).
CPSC_MAT_FS = 500.0
# Factor that turns a value in the given physical unit (lower case) into millivolts.
_TO_MILLIVOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
# Bits per sample of the WFDB storage formats whose file size follows from the sample count.
_WFDB_FORMAT_BITS = {
  "8": 8,
  "16": 16,
  "24": 24,
  "32": 32,
  "61": 16,
  "80": 8,
  "160": 16,
  "212": 12,
  "310": 32 / 3,
  "311": 32 / 3,
}
# The value WFDB format 16 stores for a missing sample.
_WFDB_FORMAT_16_MISSING = -32768
_BYTE_ALIGNED_FORMATS = ("8", "16", "24", "32", "61", "80", "160")
_SEX_CODES = {"male": 0, "m": 0, "female": 1, "f": 1}
_EDF_EXTENSIONS = (".edf", ".bdf")
# A lead whose peak-to-peak amplitude is at most this (mV) carries no ECG (see reject_flat_leads).
FLAT_LEAD_MV = 1e-4
# CSV columns that hold time stamps or sample numbers rather than a lead (compared in lower case).
_CSV_TIME_COLUMNS = ("time", "t", "time_s", "time_ms", "timestamp", "seconds", "sample", "index")
_CSV_DELIMITERS = (",", ";", "\t")


class EcgReadError(ValueError):
  """An ECG record that cannot be read or is invalid; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One ECG recording.

  Attributes:
    signal: float32 [T, L], millivolts.
    lead_names: the L canonical lead names, in column order.
    fs: sampling rate in Hz.
    path: the record's file (the `.hea` header of a WFDB record, the `.mat` of a CPSC2018 file).
    meta: `age` (float, NaN if unknown), `sex` (int: 0 male, 1 female, -1 unknown), `comments`
      (tuple of header comment lines), `header_fields` (dict of `Key: value` comments) and
      `ignored_channels` (the labels of the file's channels that were not read as leads).
  """

  signal: np.ndarray
  lead_names: tuple[str, ...]
  fs: float
  path: str
  meta: dict[str, Any]

  @property
  def num_samples(self) -> int:
    return int(self.signal.shape[0])


def normalize_lead_name(name: str) -> str:
  """Maps a lead name to its canonical spelling ("AVR" -> "aVR", "v1" -> "V1", "Lead I" or
  "Lead 1" -> "I", "ECG II" -> "II": the EDF habit, "MLII" -> "II": the modified lead II of Holter
  records)."""
  text = str(name).strip().lower()
  prefix = _LEAD_PREFIX.match(text).group(0)
  key = text[len(prefix) :]
  if "lead" in prefix:
    key = _NUMBERED_LIMB_LEADS.get(key, key)
  key = _MODIFIED_LIMB_LEAD.sub("", key)
  if key not in _CANONICAL_BY_KEY:
    raise EcgReadError(
      f"unknown ECG lead name {name!r}; expected one of {', '.join(STANDARD_LEADS)}"
    )
  return _CANONICAL_BY_KEY[key]


@dataclasses.dataclass(frozen=True)
class LeadNaming:
  """How a file's channels become leads.

  A channel whose label names a lead (`normalize_lead_name`) is that lead, unless:
    lead_map: channel label (any case) -> lead; names the channels whose label is no lead's name
      (`ECG`, `chan 2`) or the wrong one.
    single_lead: the lead of a record's one channel, whatever its label (a wearable's `ECG` or
      `value` column, a headerless one-column CSV file); a record with more channels is refused.
  Other channels (Resp, SpO2, an accelerometer) are not read: `channels` lists them apart.
  """

  lead_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
  single_lead: str | None = None

  def __post_init__(self):
    # Unknown target leads raise EcgReadError here, before any file is read.
    lead_map = {
      str(label).strip().lower(): normalize_lead_name(lead) for label, lead in self.lead_map.items()
    }
    object.__setattr__(self, "lead_map", lead_map)
    if self.single_lead is not None:
      object.__setattr__(self, "single_lead", normalize_lead_name(self.single_lead))

  def channels(
    self, labels: Sequence[str], path: str
  ) -> tuple[list[int], tuple[str, ...], tuple[str, ...]]:
    """(the positions of `labels` read as leads, their lead names, the labels not read); raises
    EcgReadError naming `path` when no channel is a lead."""
    if self.single_lead is not None:
      if len(labels) != 1:
        raise EcgReadError(
          f"{path}: the lead of a single-channel record was given ({self.single_lead}), but this "
          f"record has {len(labels)} channels ({', '.join(map(repr, labels))}); name them with "
          f"a lead map instead (--lead-map LABEL=LEAD,...)"
        )
      return [0], (self.single_lead,), ()
    positions, leads, ignored = [], [], []
    for position, label in enumerate(labels):
      key = str(label).strip().lower()
      try:
        lead = self.lead_map[key] if key in self.lead_map else normalize_lead_name(label)
      except EcgReadError:
        ignored.append(label)
        continue
      positions.append(position)
      leads.append(lead)
    if not positions:
      remedy = (
        "if it is one lead, say which (--lead I)"
        if len(labels) == 1
        else "name the leads (--lead-map LABEL=LEAD,...)"
      )
      raise EcgReadError(
        f"{path}: no channel is labelled as an ECG lead (labels: {', '.join(map(repr, labels))}); "
        f"{remedy}"
      )
    return positions, tuple(leads), tuple(ignored)


def select_leads(record: Record, names, needed_by: str = "") -> np.ndarray:
  """Returns the columns of `record.signal` for `names` (any spelling): float32 [T, len(names)].
  A record that lacks some raises EcgReadError naming all of them (and what `needed_by`, e.g.
  "the model", reads)."""
  leads = [normalize_lead_name(name) for name in names]
  missing = [lead for lead in leads if lead not in record.lead_names]
  if missing:
    reads = "all 12 leads" if sorted(leads) == sorted(STANDARD_LEADS) else _leads_phrase(leads)
    ignored = record.meta.get("ignored_channels")
    raise EcgReadError(
      f"{record.path}: "
      + (f"{needed_by} reads {reads}; " if needed_by else "")
      + f"the record lacks {_leads_phrase(missing)} (it has {', '.join(record.lead_names)}"
      + (f"; channels not read as ECG leads: {', '.join(ignored)}" if ignored else "")
      + ")"
    )
  return record.signal[:, [record.lead_names.index(lead) for lead in leads]]


def _leads_phrase(leads: Sequence[str]) -> str:
  """ "lead I" or "leads I, II"."""
  return f"lead{'s' if len(leads) > 1 else ''} {', '.join(leads)}"


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
  """Resamples `signal` [T, ...] along axis 0 from `fs_in` to `fs_out` Hz (polyphase filter).

  Returns float32 [round(T * fs_out / fs_in), ...].
  """
  if fs_in <= 0 or fs_out <= 0:
    raise ValueError(f"sampling rates must be positive, got fs_in={fs_in}, fs_out={fs_out}")
  ratio = Fraction(fs_out).limit_denominator(10_000) / Fraction(fs_in).limit_denominator(10_000)
  if ratio == 1:
    return np.asarray(signal, dtype=np.float32).copy()
  resampled = scipy.signal.resample_poly(
    np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator, axis=0
  )
  return resampled.astype(np.float32)


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
    return _read_csv(path, csv_fs, naming)
  if extension in _EDF_EXTENSIONS:
    return _read_edf(path, naming)
  base = _strip_extension(path)
  if os.path.isfile(base + ".hea"):
    return _read_wfdb(base, naming)
  if os.path.isfile(base + ".mat"):
    return _read_cpsc_mat(base + ".mat", naming)
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
      if extension in (".hea", ".csv", *_EDF_EXTENSIONS) or is_cpsc_mat:
        found.append(os.path.join(root, name))
  return found


def reject_flat_leads(signal: np.ndarray, lead_names, path: str) -> None:
  """Raises EcgReadError when a column of `signal` [T, L] is flat: its peak-to-peak amplitude is at
  most FLAT_LEAD_MV (a disconnected electrode or a zero-filled lead; no ECG is that still)."""
  peak_to_peak = np.ptp(signal, axis=0) if len(signal) else np.zeros(signal.shape[1])
  flat = [name for name, span in zip(lead_names, peak_to_peak, strict=True) if span <= FLAT_LEAD_MV]
  if flat:
    raise EcgReadError(
      f"{path}: lead {', '.join(flat)} is flat (peak-to-peak at most {FLAT_LEAD_MV} mV over "
      f"{len(signal)} samples): no ECG signal"
    )


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


def _read_wfdb(base: str, naming: LeadNaming) -> Record:
  header_path = base + ".hea"
  header = _parse_simple_header(header_path)
  if header is not None:
    return _read_simple_wfdb(base, header, naming)
  import wfdb  # Imported here: it pulls in pandas and matplotlib, which most callers never need.

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # wfdb's pandas calls warn under pandas 3.
      wfdb_record = wfdb.rdrecord(base)
  except Exception as error:
    # Say precisely what is wrong where that can be found out; otherwise pass on wfdb's reason.
    _check_wfdb_files(base, _read_wfdb_header(base))
    raise EcgReadError(f"{header_path}: cannot read the WFDB record ({error})") from error
  _check_wfdb_files(base, wfdb_record)
  if wfdb_record.p_signal is None or wfdb_record.sig_len == 0:
    raise EcgReadError(f"{header_path}: the record has no samples")
  return _wfdb_leads(
    wfdb_record.p_signal,
    wfdb_record.sig_name or [],
    wfdb_record.units,
    float(wfdb_record.fs),
    header_path,
    tuple(wfdb_record.comments or ()),
    naming,
  )


def _wfdb_leads(physical, names, units, fs, header_path, comments, naming: LeadNaming) -> Record:
  """The Record of a WFDB record's physical signal [T, n_sig]: its channels that are leads, in
  millivolts (the others are listed as ignored; their units and samples are not checked)."""
  columns, leads, ignored = naming.channels(names, header_path)
  scale = np.array([_millivolt_factor(units[column], header_path) for column in columns])
  signal = (physical[:, columns] * scale).astype(np.float32)
  meta = {**_meta_from(comments), "ignored_channels": ignored}
  return make_record(signal, leads, fs, header_path, meta)


@dataclasses.dataclass(frozen=True)
class _SimpleHeader:
  """A WFDB header of the common form (one format-16 signal file, one sample per frame).

  Attribute names follow `wfdb.Record`, so `_check_wfdb_files` takes either.
  """

  n_sig: int
  fs: float
  sig_len: int
  file_name: list[str]
  fmt: list[str]
  byte_offset: list[int]
  samps_per_frame: list[int]
  gain: np.ndarray  # float64 [n_sig], adu per physical unit
  baseline: np.ndarray  # float64 [n_sig], adu
  units: list[str]
  sig_name: list[str]
  comments: tuple[str, ...]


_RECORD_LINE = re.compile(r"^[^\s/]+\s+(?P<n_sig>\d+)\s+(?P<fs>[0-9.]+)\s+(?P<sig_len>\d+)(\s|$)")
_FORMAT_16 = re.compile(r"^16(\+(?P<offset>\d+))?$")
_GAIN = re.compile(r"^(?P<gain>[0-9.eE+-]+)(\((?P<baseline>-?\d+)\))?(/(?P<units>\S+))?$")


def _parse_simple_header(header_path: str) -> _SimpleHeader | None:
  """Parses the common header form in microseconds; None for anything else (wfdb reads those).

  wfdb's own header parser costs about 4 ms a record (pandas), which dominates dataset builds.
  """
  try:
    with open(header_path, encoding="ascii") as header_file:
      lines = header_file.read().splitlines()
  except (OSError, UnicodeDecodeError):
    return None  # wfdb gives the error.
  comments = tuple(line[1:].strip() for line in lines if line.startswith("#"))
  fields = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
  record = _RECORD_LINE.match(fields[0]) if fields else None
  if record is None or len(fields) != 1 + int(record["n_sig"]) or int(record["n_sig"]) == 0:
    return None
  columns = {name: [] for name in ("file", "offset", "gain", "baseline", "units", "name")}
  for line in fields[1:]:
    tokens = line.split(maxsplit=8)
    if len(tokens) != 9:
      return None
    file_name, fmt, gain_spec, _, adc_zero, _, _, _, name = tokens
    fmt_match, gain_match = _FORMAT_16.match(fmt), _GAIN.match(gain_spec)
    if fmt_match is None or gain_match is None or not _is_int(adc_zero):
      return None
    try:
      gain = float(gain_match["gain"])
    except ValueError:
      return None
    if gain <= 0:
      return None  # Uncalibrated: wfdb applies the WFDB default gain.
    columns["file"].append(file_name)
    columns["offset"].append(int(fmt_match["offset"] or 0))
    columns["gain"].append(gain)
    columns["baseline"].append(float(gain_match["baseline"] or adc_zero))
    columns["units"].append(gain_match["units"] or "mV")
    columns["name"].append(name.strip())
  if len(set(columns["file"])) != 1 or len(set(columns["offset"])) != 1:
    return None
  n_sig = int(record["n_sig"])
  return _SimpleHeader(
    n_sig=n_sig,
    fs=float(record["fs"]),
    sig_len=int(record["sig_len"]),
    file_name=columns["file"],
    fmt=["16"] * n_sig,
    byte_offset=columns["offset"],
    samps_per_frame=[1] * n_sig,
    gain=np.array(columns["gain"]),
    baseline=np.array(columns["baseline"]),
    units=columns["units"],
    sig_name=columns["name"],
    comments=comments,
  )


def _read_simple_wfdb(base: str, header: _SimpleHeader, naming: LeadNaming) -> Record:
  """Reads a format-16 record as wfdb does: (digital - baseline) / gain, -32768 -> NaN."""
  header_path = base + ".hea"
  _check_wfdb_files(base, header)
  signal_path = os.path.join(os.path.dirname(base), header.file_name[0])
  digital = np.fromfile(signal_path, dtype="<i2", offset=header.byte_offset[0])
  digital = digital[: header.sig_len * header.n_sig].reshape(header.sig_len, header.n_sig)
  physical = (digital - header.baseline) / header.gain
  physical[digital == _WFDB_FORMAT_16_MISSING] = np.nan
  return _wfdb_leads(
    physical, header.sig_name, header.units, header.fs, header_path, header.comments, naming
  )


def _is_int(text: str) -> bool:
  return re.fullmatch(r"-?\d+", text) is not None


def _read_wfdb_header(base: str):
  import wfdb

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return wfdb.rdheader(base)
  except Exception as error:
    raise EcgReadError(f"{base}.hea: cannot parse the WFDB header ({error})") from error


def _check_wfdb_files(base: str, header) -> None:
  """Checks that every signal file exists and its size matches the header's sample count."""
  directory = os.path.dirname(base)
  samples_per_frame = header.samps_per_frame or [1] * header.n_sig
  files: dict[str, dict[str, Any]] = {}
  for i, file_name in enumerate(header.file_name or []):
    entry = files.setdefault(file_name, {"fmt": header.fmt[i], "offset": 0, "samples": 0})
    entry["samples"] += samples_per_frame[i] or 1
    entry["offset"] = (header.byte_offset or [None] * header.n_sig)[i] or 0
  for file_name, entry in files.items():
    signal_path = os.path.join(directory, file_name)
    if not os.path.isfile(signal_path):
      raise EcgReadError(f"{signal_path}: signal file named in {base}.hea is missing")
    bits = _WFDB_FORMAT_BITS.get(entry["fmt"])
    if bits is None or header.sig_len is None:
      continue  # Compressed formats: the size says nothing about the sample count.
    expected = entry["offset"] + math.ceil(header.sig_len * entry["samples"] * bits / 8)
    actual = os.path.getsize(signal_path)
    tolerance = 0 if entry["fmt"] in _BYTE_ALIGNED_FORMATS else 4  # Packed formats pad the end.
    if abs(actual - expected) > tolerance:
      state = "truncated" if actual < expected else "longer than the header says"
      raise EcgReadError(
        f"{signal_path}: signal file is {state}: {actual} bytes, but the header {base}.hea "
        f"declares {header.sig_len} samples x {entry['samples']} signals in format "
        f"{entry['fmt']} ({expected} bytes)"
      )


def _read_cpsc_mat(mat_path: str, naming: LeadNaming) -> Record:
  try:
    contents = scipy.io.loadmat(mat_path)
  except Exception as error:
    raise EcgReadError(f"{mat_path}: cannot read the MATLAB file ({error})") from error
  if "ECG" not in contents:
    keys = sorted(key for key in contents if not key.startswith("__"))
    raise EcgReadError(
      f"{mat_path}: not a CPSC2018 file (no struct 'ECG'; variables: {keys}) and no WFDB header "
      f"{_strip_extension(mat_path)}.hea beside it"
    )
  ecg = contents["ECG"]
  try:
    data = np.asarray(ecg["data"][0, 0], dtype=np.float64)
    sex = _field_text(ecg["sex"][0, 0])
    age = _field_text(ecg["age"][0, 0])
  except (ValueError, IndexError, TypeError) as error:
    raise EcgReadError(f"{mat_path}: struct 'ECG' lacks sex/age/data ({error})") from error
  if data.ndim != 2 or data.shape[0] != len(STANDARD_LEADS):
    raise EcgReadError(f"{mat_path}: ECG.data has shape {data.shape}, expected [12, N]")
  columns, leads, ignored = naming.channels(STANDARD_LEADS, mat_path)
  meta = {
    "age": _parse_age(age),
    "sex": _parse_sex(sex),
    "comments": (),
    "header_fields": {"Age": age, "Sex": sex},
    "ignored_channels": ignored,
  }
  return make_record(data.T[:, columns].astype(np.float32), leads, CPSC_MAT_FS, mat_path, meta)


def _field_text(value) -> str:
  """The text of a scalar MATLAB struct field (char array, cell or number)."""
  flat = np.asarray(value).ravel()
  return "" if flat.size == 0 else str(flat[0]).strip()


def make_record(signal, lead_names, fs, path, meta) -> Record:
  """A validated Record: float32 signal [T, L] (T > 0) matching L distinct canonical lead names,
  finite samples and fs > 0; EcgReadError naming `path` otherwise."""
  if len(set(lead_names)) != len(lead_names):
    raise EcgReadError(f"{path}: duplicate lead names {lead_names}")
  if signal.ndim != 2 or signal.shape[1] != len(lead_names):
    raise EcgReadError(f"{path}: signal shape {signal.shape} does not match leads {lead_names}")
  if signal.shape[0] == 0:
    raise EcgReadError(f"{path}: the record has no samples")
  bad = ~np.isfinite(signal)
  if bad.any():
    sample, column = np.argwhere(bad)[0]
    raise EcgReadError(
      f"{path}: {int(bad.sum())} NaN/Inf samples (first at sample {sample}, lead "
      f"{lead_names[column]})"
    )
  if not fs > 0:
    raise EcgReadError(f"{path}: invalid sampling rate {fs}")
  return Record(signal=signal, lead_names=tuple(lead_names), fs=fs, path=path, meta=meta)


def _millivolt_factor(unit: str | None, path: str) -> float:
  key = (unit or "mV").strip().lower()
  if key not in _TO_MILLIVOLT:
    raise EcgReadError(f"{path}: unsupported physical unit {unit!r} (expected mV, uV or V)")
  return _TO_MILLIVOLT[key]


def _meta_from(comments: tuple[str, ...]) -> dict[str, Any]:
  fields = {}
  for line in comments:
    key, separator, value = line.partition(":")
    if separator:
      fields[key.strip()] = value.strip()
  lower = {key.lower(): value for key, value in fields.items()}
  return {
    "age": _parse_age(lower.get("age", "")),
    "sex": _parse_sex(lower.get("sex", "")),
    "comments": comments,
    "header_fields": fields,
  }


def _parse_age(text: str) -> float:
  try:
    age = float(text)
  except (TypeError, ValueError):
    return math.nan
  return age if age >= 0 else math.nan


def _parse_sex(text: str) -> int:
  return _SEX_CODES.get(str(text).strip().lower(), -1)


_CSV_UNIT = re.compile(r"^(?P<name>.*?)\s*[\[(](?P<unit>[^\])]*)[\])]$")


def _read_csv(path: str, fs: float | None, naming: LeadNaming) -> Record:
  """A CSV file: a header row of channel labels (units optional: `I (uV)`, `V1 [mV]`; default mV),
  then one row per sample; `,`, `;` or tab separated. Time or sample-number columns are skipped.
  A file of one column needs no header when its lead is named (naming.single_lead). Every row
  must have the header's number of fields, and every cell read must hold a finite number."""
  if fs is None:
    raise EcgReadError(f"{path}: a CSV file has no sampling rate; pass it (csv_fs / --csv-fs)")
  if not os.path.isfile(path):
    raise EcgReadError(f"{path}: no such file")
  try:
    with open(path, encoding="utf-8-sig") as csv_file:
      header_line = csv_file.readline().strip()
  except (OSError, UnicodeDecodeError) as error:
    raise EcgReadError(f"{path}: cannot read the CSV file ({error})") from error
  delimiter = max(_CSV_DELIMITERS, key=header_line.count)
  delimiter = delimiter if delimiter in header_line else ","
  fields = [f.strip().strip("'") for f in next(csv.reader([header_line], delimiter=delimiter))]
  headerless = not header_line or all(_is_number(field) for field in fields)
  if headerless and not (naming.single_lead and len(fields) == 1):
    raise EcgReadError(
      f"{path}: the CSV file has no header row of lead names (first line: {header_line[:60]!r}); "
      f"its first row must name each column's lead, e.g. I,II,V1 (a file of one column may "
      f"instead be given its lead: --lead I)"
    )
  if headerless:
    columns, labels, units = [0], ["1"], [None]
  else:
    columns, labels, units = [], [], []
    for column, field in enumerate(fields):
      match = _CSV_UNIT.match(field)
      name, unit = (match["name"], match["unit"]) if match else (field, None)
      if name.strip().lower() not in _CSV_TIME_COLUMNS:
        columns.append(column)
        labels.append(name)
        units.append(unit)
    if not columns:
      raise EcgReadError(f"{path}: the CSV header names no ECG lead ({header_line[:60]!r})")
  positions, lead_names, ignored = naming.channels(labels, path)
  columns = [columns[position] for position in positions]
  scales = [_millivolt_factor(units[position], path) for position in positions]
  first_row = 1 if headerless else 2  # Rows are numbered as the file's lines.
  _check_csv_row_lengths(path, delimiter, len(fields), first_row)
  import pandas as pd  # Imported here: most callers never read CSV.

  try:
    # Every cell as text ("NA" and "" too), so that each bad one is named below.
    table = pd.read_csv(
      path,
      sep=delimiter,
      header=None,
      skiprows=first_row - 1,
      usecols=columns,
      dtype=str,
      encoding="utf-8-sig",
      skip_blank_lines=False,
      na_filter=False,
    )
  except pd.errors.EmptyDataError:
    raise EcgReadError(f"{path}: the record has no samples (a header row only)") from None
  except Exception as error:
    raise EcgReadError(f"{path}: cannot parse the CSV rows ({error})") from error
  filled = np.flatnonzero((table != "").any(axis=1).to_numpy())
  table = table.iloc[: filled[-1] + 1 if len(filled) else 0]  # Blank lines at the end are no rows.
  values = np.empty((len(table), len(columns)), np.float64)
  for position, column in enumerate(columns):
    text = table[column].str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
      cell = text.iloc[bad[0]]
      name = column + 1 if headerless else repr(fields[column])
      raise EcgReadError(
        f"{path}: row {bad[0] + first_row}, column {name}: "
        + (f"{cell!r} is not a finite number" if cell else "empty cell (a missing sample)")
      )
    values[:, position] = numbers
  signal = (values * np.array(scales)).astype(np.float32)
  meta = {
    "age": math.nan,
    "sex": -1,
    "comments": (),
    "header_fields": {},
    "ignored_channels": ignored,
  }
  return make_record(signal, lead_names, float(fs), path, meta)


def _check_csv_row_lengths(path: str, delimiter: str, num_fields: int, first_row: int) -> None:
  """Refuses the first row (from line `first_row`) whose number of fields is not `num_fields`:
  a decimal comma (`0,123`) in a comma-separated file splits a cell in two and shifts the row's
  later cells into the wrong leads. Blank lines are left to the cell checks."""
  separator = delimiter.encode()
  with open(path, "rb") as csv_file:
    for row, line in enumerate(csv_file, start=1):
      if row < first_row or not line.strip():
        continue
      # Quoted cells may hold the delimiter: only those lines need a real CSV parser.
      count = (
        len(next(csv.reader([line.decode("utf-8", "replace")], delimiter=delimiter)))
        if b'"' in line
        else line.count(separator) + 1
      )
      if count != num_fields:
        hint = " (a decimal comma?)" if delimiter == "," and count > num_fields else ""
        raise EcgReadError(
          f"{path}: row {row} has {count} field{'s' if count != 1 else ''}{hint}, but the "
          + ("first row" if first_row == 1 else "header")
          + f" has {num_fields}"
        )


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _read_edf(path: str, naming: LeadNaming) -> Record:
  """An EDF/EDF+/BDF file: the channels that are ECG leads ("I", "ECG II", "Lead V1", ...; see
  LeadNaming), which must share one sampling rate; other channels are listed in
  meta["ignored_channels"]."""
  if not os.path.isfile(path):
    raise EcgReadError(f"{path}: no such file")
  import pyedflib  # Imported here: most callers never read EDF.

  try:
    with pyedflib.EdfReader(path) as edf:
      labels = [label.strip() for label in edf.getSignalLabels()]
      channels, lead_names, ignored = naming.channels(labels, path)
      leads = dict(zip(channels, lead_names, strict=True))
      rates = {channel: float(edf.getSampleFrequency(channel)) for channel in leads}
      if len(set(rates.values())) > 1:
        described = ", ".join(f"{labels[c]} {rate:g} Hz" for c, rate in rates.items())
        raise EcgReadError(
          f"{path}: the ECG channels have different sampling rates ({described}); resample them "
          f"to one rate first"
        )
      units = [edf.getPhysicalDimension(channel) for channel in leads]
      columns = [edf.readSignal(channel) for channel in leads]
      header = edf.getHeader()
  except EcgReadError:
    raise
  except Exception as error:
    raise EcgReadError(f"{path}: cannot read the EDF file ({error})") from error
  if len({len(column) for column in columns}) > 1:
    raise EcgReadError(f"{path}: the ECG channels have different numbers of samples")
  scale = np.array([_millivolt_factor(unit, path) for unit in units])
  signal = (np.stack(columns, axis=1) * scale).astype(np.float32)
  sex = str(header.get("sex") or header.get("gender") or "")
  meta = {
    "age": math.nan,
    "sex": _parse_sex(sex),
    "comments": (),
    "header_fields": {key: str(value) for key, value in header.items()},
    "ignored_channels": ignored,
  }
  return make_record(signal, lead_names, next(iter(rates.values())), path, meta)
