"""What every ECG format shares: the Record a reader returns, EcgReadError, the standard leads and
their names (normalize_lead_name, LeadNaming), unit conversion, validation (make_record,
reject_flat_leads), lead selection and resampling."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
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
# Factor that turns a value in the given physical unit (lower case) into millivolts.
_TO_MILLIVOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_SEX_CODES = {"male": 0, "m": 0, "female": 1, "f": 1}
# A lead whose peak-to-peak amplitude is at most this (mV) carries no ECG (see reject_flat_leads).
FLAT_LEAD_MV = 1e-4


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
    ignored = ignored_channels_note(record)
    raise EcgReadError(
      f"{record.path}: "
      + (f"{needed_by} reads {reads}; " if needed_by else "")
      + f"the record lacks {_leads_phrase(missing)} (it has {', '.join(record.lead_names)}"
      + (f"; {ignored}" if ignored else "")
      + ")"
    )
  return record.signal[:, [record.lead_names.index(lead) for lead in leads]]


def ignored_channels_note(record: Record) -> str:
  """ "channels not read as ECG leads: Resp, V7" (record.meta["ignored_channels"]: labels that
  name no lead, see LeadNaming), or "" when there are none: what a message about a record's leads
  adds so that a mislabelled lead is seen."""
  ignored = record.meta.get("ignored_channels")
  return f"channels not read as ECG leads: {', '.join(ignored)}" if ignored else ""


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


def millivolt_factor(unit: str | None, path: str) -> float:
  key = (unit or "mV").strip().lower()
  if key not in _TO_MILLIVOLT:
    raise EcgReadError(f"{path}: unsupported physical unit {unit!r} (expected mV, uV or V)")
  return _TO_MILLIVOLT[key]


def parse_age(text: str) -> float:
  try:
    age = float(text)
  except (TypeError, ValueError):
    return math.nan
  return age if age >= 0 else math.nan


def parse_sex(text: str) -> int:
  return _SEX_CODES.get(str(text).strip().lower(), -1)
