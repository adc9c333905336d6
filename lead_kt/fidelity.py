"""Fidelity of reconstructed ECG signals (numpy): per-lead errors, Pearson, Fréchet distance, plots.

Signals are ``[..., T, L]`` (time, then leads). Per-window statistics are kept as sums
(``signal_sums``) so that evaluation can compute them batch by batch inside ``jax.jit`` and combine
them afterwards; ``lead_fidelity`` turns the sums into per-lead MSE, MAE and Pearson correlation.
Pearson is computed per record and lead (the windows of one record pooled), then averaged over the
records where both signals vary (a flat lead has no correlation).
"""

from collections.abc import Sequence

import numpy as np

SUM_KEYS = ("sq_err", "abs_err", "real", "recon", "real_sq", "recon_sq", "cross")


def signal_sums(real, recon) -> dict:
  """Per-lead sums over time of ``real`` and ``recon`` ``[..., T, L]``: each ``[..., L]``.

  Keys ``SUM_KEYS``: squared and absolute error, the two signals, their squares, their product.
  Uses only array methods, so it works on numpy and JAX arrays alike.
  """
  if real.shape != recon.shape:
    raise ValueError(f"real {real.shape} and reconstructed {recon.shape} signals differ in shape")
  error = recon - real
  terms = (error * error, abs(error), real, recon, real * real, recon * recon, real * recon)
  return {key: term.sum(axis=-2) for key, term in zip(SUM_KEYS, terms, strict=True)}


def pearson_from_sums(sums: dict, count) -> np.ndarray:
  """Pearson correlation from ``signal_sums`` over ``count`` samples; NaN where a signal is flat."""
  count = np.asarray(count, np.float64)
  s = {
    k: np.asarray(sums[k], np.float64) for k in ("real", "recon", "real_sq", "recon_sq", "cross")
  }
  covariance = s["cross"] - s["real"] * s["recon"] / count
  var_real = s["real_sq"] - s["real"] ** 2 / count
  var_recon = s["recon_sq"] - s["recon"] ** 2 / count
  # Relative tolerance: a constant signal leaves only rounding error in its variance.
  tiny = 1e-10 * np.maximum(s["real_sq"], s["recon_sq"]) + 1e-30
  flat = (var_real <= tiny) | (var_recon <= tiny)
  with np.errstate(invalid="ignore", divide="ignore"):
    r = covariance / np.sqrt(var_real * var_recon)
  return np.where(flat, np.nan, np.clip(r, -1.0, 1.0))


def lead_fidelity(sums: dict, count: np.ndarray, records: np.ndarray) -> dict[str, np.ndarray]:
  """Per-lead ``mse``, ``mae``, ``pearson`` (each float [L]) from per-window sums.

  Args:
    sums: ``signal_sums`` of N windows, each [N, L].
    count: [N] samples per window.
    records: [N] the record of each window; Pearson pools a record's windows.
  """
  count = np.asarray(count, np.float64)
  total = count.sum()
  if total <= 0:
    raise ValueError("fidelity: no samples to evaluate")
  mse = np.asarray(sums["sq_err"], np.float64).sum(axis=0) / total
  mae = np.asarray(sums["abs_err"], np.float64).sum(axis=0) / total
  _, record_of_window = np.unique(np.asarray(records), return_inverse=True)
  num_records = record_of_window.max() + 1
  per_record = {}
  for key in ("real", "recon", "real_sq", "recon_sq", "cross"):
    values = np.asarray(sums[key], np.float64)
    per_record[key] = np.zeros((num_records, values.shape[-1]))
    np.add.at(per_record[key], record_of_window, values)
  record_count = np.bincount(record_of_window, weights=count)[:, None]
  r = pearson_from_sums(per_record, record_count)
  defined = ~np.isnan(r)
  pearson = np.where(
    defined.any(axis=0), np.nansum(r, axis=0) / np.maximum(defined.sum(0), 1), np.nan
  )
  return {"mse": mse, "mae": mae, "pearson": pearson}


def signal_fidelity(real: np.ndarray, recon: np.ndarray) -> dict[str, np.ndarray]:
  """``lead_fidelity`` of whole signals ``real``, ``recon`` [N, T, L] (one window per record)."""
  real, recon = np.asarray(real, np.float64), np.asarray(recon, np.float64)
  if real.ndim != 3:
    raise ValueError(f"signals must be [records, time, leads], got shape {real.shape}")
  sums = signal_sums(real, recon)
  return lead_fidelity(sums, np.full(len(real), real.shape[1]), np.arange(len(real)))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a positive semi-definite matrix (negative rounding clipped)."""
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Fréchet distance of Gaussians fitted to two feature sets [N, D] and [M, D] (N, M >= 2).

  ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), where tr((S_a S_b)^(1/2)) is computed as
  the sum of square roots of the eigenvalues of the symmetric S_a^(1/2) S_b S_a^(1/2), which stays
  real for rank-deficient covariances (fewer samples than features).
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"Fréchet distance needs [N, D] and [M, D] features, got {a.shape}, {b.shape}")
  if min(len(a), len(b)) < 2:
    raise ValueError(f"Fréchet distance needs >= 2 samples per set, got {len(a)} and {len(b)}")
  cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
  cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
  root_a = _sqrt_psd(cov_a)
  cross_eigenvalues = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  trace_cross = np.sqrt(np.clip(cross_eigenvalues, 0.0, None)).sum()
  shift = a.mean(axis=0) - b.mean(axis=0)
  distance = shift @ shift + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_cross
  return float(max(distance, 0.0))


def plot_reconstructions(
  real: np.ndarray,
  recon: np.ndarray,
  out_png: str,
  lead_names: Sequence[str],
  kept_leads: Sequence[str] = (),
  fs: float | None = None,
) -> str:
  """Real (black) vs reconstructed (red) leads of K records, one column per record; returns path.

  real, recon: [K, T, L]; ``lead_names`` names the L leads, those in ``kept_leads`` are marked as
  the model's inputs. The time axis is in seconds when ``fs`` is given, else in samples.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  real, recon = np.asarray(real), np.asarray(recon)
  if real.shape != recon.shape or real.ndim != 3 or real.shape[-1] != len(lead_names):
    raise ValueError(
      f"plot_reconstructions needs real and recon [K, T, {len(lead_names)}], got "
      f"{real.shape} and {recon.shape}"
    )
  num_records, length, num_leads = real.shape
  time = np.arange(length) / fs if fs else np.arange(length)
  fig, axes = plt.subplots(
    num_leads, num_records, figsize=(4 * num_records, 1.2 * num_leads), sharex=True, squeeze=False
  )
  for k in range(num_records):
    for lead, name in enumerate(lead_names):
      ax = axes[lead, k]
      ax.plot(time, real[k, :, lead], color="black", linewidth=0.7, label="real")
      ax.plot(time, recon[k, :, lead], color="tab:red", linewidth=0.7, label="reconstructed")
      ax.set_ylabel(f"{name} (kept)" if name in kept_leads else name, fontsize=7)
      ax.tick_params(labelsize=6)
  axes[0, 0].legend(fontsize=6, loc="upper right")
  for k in range(num_records):
    axes[-1, k].set_xlabel("time (s)" if fs else "sample", fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return str(out_png)
