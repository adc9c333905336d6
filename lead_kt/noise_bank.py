"""Recorded ECG noise for ``augment.recorded_noise``: the MIT-BIH Noise Stress Test Database's
baseline wander, muscle artefact and electrode motion recordings (30 minutes, 2 channels each;
lead_kt/assets/README.md gives source and licence), stored at 100 Hz by
tools/make_nstdb_asset.py and resampled here for other rates."""

import functools
import pathlib
from fractions import Fraction

import numpy as np
from scipy import signal

ASSET = pathlib.Path(__file__).parent / "assets" / "nstdb_noise.npz"
# The bank's order along its first axis: baseline wander, muscle artefact, electrode motion.
RECORDINGS = ("bw", "ma", "em")


@functools.lru_cache(maxsize=4)
def load(sampling_rate: float) -> np.ndarray:
  """The recordings as one read-only float32 array [recording, time, channel] at
  ``sampling_rate``, each channel with zero mean and unit std over its 30 minutes."""
  with np.load(ASSET) as stored:
    asset_rate = int(stored["sampling_rate"])
    bank = np.stack([stored[name] * stored[f"{name}_scale"] for name in RECORDINGS])
  if sampling_rate != asset_rate:
    ratio = Fraction(sampling_rate / asset_rate).limit_denominator(1000)
    bank = signal.resample_poly(bank, ratio.numerator, ratio.denominator, axis=1)
  bank = (bank - bank.mean(axis=1, keepdims=True)) / bank.std(axis=1, keepdims=True)
  bank = bank.astype(np.float32)
  bank.setflags(write=False)  # shared by every caller through the cache
  return bank
