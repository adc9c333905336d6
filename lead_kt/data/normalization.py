"""Standardisation of ECG samples, fitted on the training split only and stored with the run.

"global": one mean and standard deviation over every sample of every lead of every training record
(PTB-XL benchmark practice: a StandardScaler on the flattened signals); "per_lead": one per lead;
"none": the identity, for records that a preprocessing contract already standardised (ECGFounder's
per-record z-score). The same `Normalizer` is applied in training, evaluation and prediction.
"""

import dataclasses
import json
from collections.abc import Iterable

import jax
import numpy as np
from absl import logging
from etils import epath

from lead_kt.data.splits import load_split

KINDS = ("global", "per_lead", "none")


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """x' = (x - mean) / std; mean and std float32 [1] (global) or [12] (per lead)."""

  kind: str
  mean: np.ndarray
  std: np.ndarray

  def apply(self, x: np.ndarray, in_place: bool = False) -> np.ndarray:
    """x float [..., T, 12] (leads last) -> float32, same shape.

    in_place=True overwrites x (a float32 array) instead of allocating a new one.
    """
    out = x if in_place else np.array(x, np.float32)
    out -= self.mean
    out *= 1.0 / self.std
    return out

  def to_dict(self) -> dict:
    return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist()}

  @classmethod
  def from_dict(cls, values: dict) -> "Normalizer":
    if values.get("kind") not in KINDS:
      raise ValueError(f"normalizer kind must be one of {KINDS}, got {values.get('kind')!r}")
    mean, std = (np.asarray(values[k], np.float32).reshape(-1) for k in ("mean", "std"))
    if mean.shape != std.shape or mean.shape not in ((1,), (12,)) or (std <= 0).any():
      raise ValueError(f"normalizer needs mean/std of equal length 1 or 12, std > 0: {values}")
    return cls(values["kind"], mean, std)


def fit_normalizer(chunks: Iterable[np.ndarray], kind: str) -> Normalizer:
  """Mean and population std of all samples in `chunks` (arrays [t, 12]).

  Partial moments are merged in float64 (Chan et al.'s pairwise update), so the result does not
  depend on how the samples are split into chunks. A lead that never varies gets std 1.
  """
  if kind not in KINDS:
    raise ValueError(f"data.normalization must be one of {KINDS}, got {kind!r}")
  if kind == "none":
    return Normalizer(kind, np.zeros(1, np.float32), np.ones(1, np.float32))
  count, mean, m2 = 0, 0.0, 0.0
  for chunk in chunks:
    values = np.asarray(chunk, np.float64)
    values = values.reshape(-1, 1) if kind == "global" else values
    if not len(values):
      continue
    chunk_mean = values.mean(axis=0)
    chunk_m2 = ((values - chunk_mean) ** 2).sum(axis=0)
    total = count + len(values)
    delta = chunk_mean - mean
    mean = mean + delta * len(values) / total
    m2 = m2 + chunk_m2 + delta**2 * count * len(values) / total
    count = total
  if not count:
    raise ValueError("cannot fit a normalizer on no samples")
  std = np.sqrt(m2 / count)
  std = np.where(std > 0, std, 1.0)
  return Normalizer(kind, np.asarray(mean, np.float32).reshape(-1), std.astype(np.float32))


def load_or_fit_normalizer(data_cfg, path: str) -> Normalizer:
  """Loads the normalizer JSON at `path`, or fits one on the train split and writes it there.

  In cross-validation mode the train split is the derived one. Every process fits the same
  statistics; only process 0 writes the file.
  """
  path = epath.Path(path)
  if path.exists():
    normalizer = Normalizer.from_dict(json.loads(path.read_text()))
    if normalizer.kind != data_cfg.normalization:
      raise ValueError(
        f"{path} holds a {normalizer.kind!r} normalizer but data.normalization is "
        f"{data_cfg.normalization!r}"
      )
    return normalizer
  normalizer = fit_normalizer(load_split(data_cfg, "train").chunks(), data_cfg.normalization)
  logging.info(
    "fitted %s normalizer: mean %s std %s", normalizer.kind, normalizer.mean, normalizer.std
  )
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f"{path.name}.tmp"
    partial.write_text(json.dumps(normalizer.to_dict(), indent=2))
    partial.rename(path)
  return normalizer
