"""Named per-record preprocessing contracts: what a released model's weights expect of a record
(``data.preprocessing``, applied as records are read; ``lead_kt.predict`` repeats it).

"ecgfounder": ECGFounder's ``dataset.py`` and ``util.filter_bandpass`` (PKUDigitalHealth/
ECGFounder): records at 500 Hz, 10 s (5,000 samples), leads I, II, III, aVR, aVL, aVF, V1-V6 (the
canonical order); per lead a 50 Hz notch (Q = 30), a 4th-order Butterworth band-pass of
0.67-40 Hz, both applied forward and backward (filtfilt), minus a running median over 0.4 s + 1
samples (201) as baseline; then one z-score over the whole record (every lead together, as
``np.mean``/``np.std`` of the [12, T] array, + 1e-8). The z-score is the normalisation: runs with
this contract use ``data.normalization = "none"``.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import signal as scipy_signal

from lead_kt.ecg_io import STANDARD_LEADS

ECGFOUNDER_FS = 500
ECGFOUNDER_SECONDS = 10
NOTCH_HZ, NOTCH_QUALITY = 50.0, 30.0
BANDPASS_ORDER, BANDPASS_HZ = 4, (0.67, 40.0)
BASELINE_SECONDS = 0.4
ZSCORE_EPSILON = 1e-8


def ecgfounder_filter(ecg: np.ndarray, fs: float) -> np.ndarray:
  """float [T, L] -> float64 [T, L]: notch, band-pass (both zero-phase) and baseline removal."""
  x = np.nan_to_num(np.asarray(ecg, np.float64), nan=0.0)
  b, a = scipy_signal.iirnotch(NOTCH_HZ, NOTCH_QUALITY, fs)
  x = scipy_signal.filtfilt(b, a, x, axis=0)
  b, a = scipy_signal.butter(BANDPASS_ORDER, BANDPASS_HZ, btype="bandpass", fs=fs)
  x = scipy_signal.filtfilt(b, a, x, axis=0)
  kernel = int(BASELINE_SECONDS * fs) + 1
  kernel += 1 - kernel % 2  # medfilt needs an odd window
  # medfilt zero-pads the ends, as the reference's per-lead call does.
  return x - scipy_signal.medfilt(x, (kernel, 1))


def zscore_record(ecg: np.ndarray) -> np.ndarray:
  """One mean and standard deviation over every sample of every lead of the record."""
  return (ecg - np.mean(ecg)) / (np.std(ecg) + ZSCORE_EPSILON)


def ecgfounder(ecg: np.ndarray, fs: float) -> np.ndarray:
  """float [T, 12] at ``fs`` Hz (in the canonical lead order) -> float32 [T, 12], as ECGFounder's
  released weights expect (the module docstring)."""
  return zscore_record(ecgfounder_filter(ecg, fs)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Contract:
  """``apply(ecg [T, L], fs) -> [T, L]`` at ``fs`` Hz (the dataset's rate must be ``fs``); leads:
  the order the weights read; record_seconds: the record length they were trained on."""

  apply: Callable[[np.ndarray, float], np.ndarray]
  fs: int
  record_seconds: int
  leads: tuple[str, ...]


CONTRACTS = {
  "ecgfounder": Contract(ecgfounder, ECGFOUNDER_FS, ECGFOUNDER_SECONDS, STANDARD_LEADS),
}


def get(name: str) -> Contract:
  """The contract ``name``; a ValueError lists the known ones."""
  if name not in CONTRACTS:
    raise ValueError(f"unknown data.preprocessing {name!r}; known: '', {', '.join(CONTRACTS)}")
  return CONTRACTS[name]
