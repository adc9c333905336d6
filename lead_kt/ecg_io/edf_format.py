"""EDF, EDF+ and BDF files (pyedflib): the channels that are ECG leads, at one sampling rate."""

from __future__ import annotations

import math
import os

import numpy as np

from lead_kt.ecg_io.core import (
  EcgReadError,
  LeadNaming,
  Record,
  make_record,
  millivolt_factor,
  parse_sex,
)

EDF_EXTENSIONS = (".edf", ".bdf")


def read_edf(path: str, naming: LeadNaming) -> Record:
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
  scale = np.array([millivolt_factor(unit, path) for unit in units])
  signal = (np.stack(columns, axis=1) * scale).astype(np.float32)
  sex = str(header.get("sex") or header.get("gender") or "")
  meta = {
    "age": math.nan,
    "sex": parse_sex(sex),
    "comments": (),
    "header_fields": {key: str(value) for key, value in header.items()},
    "ignored_channels": ignored,
  }
  return make_record(signal, lead_names, next(iter(rates.values())), path, meta)
