"""The original CPSC2018 challenge files: a `.mat` file holding a MATLAB struct `ECG` with `sex`,
`age` and `data` [12, N] in mV at 500 Hz, in the standard lead order (the files store neither)."""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from lead_kt.ecg_io.core import (
  STANDARD_LEADS,
  EcgReadError,
  LeadNaming,
  Record,
  make_record,
  parse_age,
  parse_sex,
)

# Sampling rate and lead order of the original CPSC2018 challenge files (not stored in the files).
CPSC_MAT_FS = 500.0


def read_cpsc_mat(mat_path: str, naming: LeadNaming) -> Record:
  try:
    contents = scipy.io.loadmat(mat_path)
  except Exception as error:
    raise EcgReadError(f"{mat_path}: cannot read the MATLAB file ({error})") from error
  if "ECG" not in contents:
    keys = sorted(key for key in contents if not key.startswith("__"))
    raise EcgReadError(
      f"{mat_path}: not a CPSC2018 file (no struct 'ECG'; variables: {keys}) and no WFDB header "
      f"{os.path.splitext(mat_path)[0]}.hea beside it"
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
    "age": parse_age(age),
    "sex": parse_sex(sex),
    "comments": (),
    "header_fields": {"Age": age, "Sex": sex},
    "ignored_channels": ignored,
  }
  return make_record(data.T[:, columns].astype(np.float32), leads, CPSC_MAT_FS, mat_path, meta)


def _field_text(value) -> str:
  """The text of a scalar MATLAB struct field (char array, cell or number)."""
  flat = np.asarray(value).ravel()
  return "" if flat.size == 0 else str(flat[0]).strip()
