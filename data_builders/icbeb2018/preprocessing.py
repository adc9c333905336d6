"""The MVKT authors' optional ICBEB2018 preprocessing, applied at build time (no TFDS).

Their code (QINYZz/MVKT-ECG, `utils/imagepreprocess_FA_exp3.py`) denoised every 500 Hz record with a
db6 wavelet and then centre-cropped it, or tiled it when shorter, to 10,000 samples (20 s).
"""

import warnings

import numpy as np
import pywt

WAVELET = "db6"
# As in the authors' code. Deeper than pywt.dwt_max_level for records under 5,632 samples (11.3 s),
# for which pywt warns of boundary effects; kept, since it sets the band removed as baseline wander.
WAVELET_LEVEL = 9
# The authors' record length: 10,000 samples at 500 Hz.
MVKT_RECORD_SECONDS = 20


def wavelet_denoise(signal: np.ndarray) -> np.ndarray:
  """float32 [T, L] at 500 Hz -> float32 [T, L] without baseline wander and high-frequency noise.

  Per lead, the level-9 db6 decomposition is rebuilt with its approximation (below about 0.5 Hz
  at 500 Hz) and its two finest detail levels (above about 62.5 Hz) set to zero.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Level value of .* is too high")
    coefficients = pywt.wavedec(signal, WAVELET, level=WAVELET_LEVEL, axis=0)
  for removed in (0, -2, -1):
    coefficients[removed] = np.zeros_like(coefficients[removed])
  restored = pywt.waverec(coefficients, WAVELET, axis=0)
  return restored[: len(signal)].astype(np.float32)  # waverec adds a sample to odd lengths.


def centre_crop_or_tile(signal: np.ndarray, length: int) -> np.ndarray:
  """[T, L] -> [length, L]: the middle `length` samples (from (T - length) // 2), or, for a
  shorter record, the record repeated end to end and cut at `length`."""
  if len(signal) >= length:
    start = (len(signal) - length) // 2
    return signal[start : start + length]
  repeats = -(-length // len(signal))
  return np.tile(signal, (repeats, 1))[:length]
