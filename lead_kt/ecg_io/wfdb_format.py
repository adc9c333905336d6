"""WFDB records: a `.hea` header and its signal files, the PhysioNet/CinC Challenge 2020/2021
`.hea` + `.mat` form included.

Headers of the common form (format-16 signals in one file, one sample per frame) are parsed and read
here in well under a millisecond; wfdb reads every other form.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from lead_kt.ecg_io.core import (
  EcgReadError,
  LeadNaming,
  Record,
  make_record,
  millivolt_factor,
  parse_age,
  parse_sex,
)

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


def read_wfdb(base: str, naming: LeadNaming) -> Record:
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
  scale = np.array([millivolt_factor(units[column], header_path) for column in columns])
  signal = (physical[:, columns] * scale).astype(np.float32)
  meta = {**_meta_from(comments), "ignored_channels": ignored}
  return make_record(signal, leads, fs, header_path, meta)


def _meta_from(comments: tuple[str, ...]) -> dict[str, Any]:
  fields = {}
  for line in comments:
    key, separator, value = line.partition(":")
    if separator:
      fields[key.strip()] = value.strip()
  lower = {key.lower(): value for key, value in fields.items()}
  return {
    "age": parse_age(lower.get("age", "")),
    "sex": parse_sex(lower.get("sex", "")),
    "comments": comments,
    "header_fields": fields,
  }


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
# Format 16 with one sample per frame, at a byte offset or not: `16`, `16+24`, `16x1+24`.
_FORMAT_16 = re.compile(r"^16(x1)?(\+(?P<offset>\d+))?$")
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
