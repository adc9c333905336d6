"""Signal reconstruction (WearECG-style): a VAE reconstructs all 12 leads from a few kept leads.

The trained network is ``lead_kt.models.vae.SignalVAE``; its input is ``batch["teacher"]`` (all 12
leads) with the leads not in ``config.kept_leads`` zeroed, its target all 12 leads.

loss = MSE(output, 12 leads) + kl_weight * KL, where MSE is the mean over time and leads and KL the
per-example sum over latent positions and channels, both averaged over the real examples. The latent
is sampled in training and is its mean in evaluation.

Kept leads are passed through (``config.pass_through_kept``, default True): the output's kept leads
are the real input leads, in training and in evaluation, so only the missing leads are learnt and
scored (the kept leads add zero error and no gradient). With ``pass_through_kept=False`` the output
is the decoder's for all 12 leads.

Crops whose length is not a multiple of 8 (the VAE's three stride-2 downsamplings) are zero-padded
at the end for the VAE; the padded samples are cut from its output before loss and metrics.

params: the VAE. state: the frozen 12-lead teacher only (GroupNorm keeps no batch statistics).
``predict`` gives ``logits``: the teacher on the reconstructed signal (so the trainer's macro-AUC is
the downstream AUC on reconstructions), ``logits_real`` / ``logits_zeroed`` (the teacher on the real
12 leads / on the kept leads with the others zeroed), per-lead sums for MSE, MAE and Pearson
(``lead_kt.fidelity.signal_sums``), the teacher's features of the real and the reconstructed signal
and the KL. ``summarize`` turns them into flat scalars (see its docstring); the checkpoint is chosen
on ``neg_mse`` (validation reconstruction MSE, negated).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from lead_kt import ecg_io, fidelity, losses, metrics
from lead_kt.data.windows import aggregate_windows
from lead_kt.methods.common import DTYPES, Network, build_backbone
from lead_kt.models.vae import SignalVAE, kl_divergence

LEADS = ecg_io.STANDARD_LEADS
# The bootstrap of lead_kt.metrics.summarize (its defaults): the intervals below use the same
# resamples as the trainer's interval of the reconstructed macro-AUC.
N_BOOT = 1000
BOOT_SEED = 0
_SUM_PREFIX = "sum_"


def kept_lead_indices(names) -> tuple[int, ...]:
  """Sorted indices into ``LEADS`` of lead names in any spelling; ValueError for unknown, repeated
  or no names. A single string is one lead name."""
  if isinstance(names, str):
    names = (names,)
  if not names:
    raise ValueError("signal_recon: kept_leads is empty; keep at least one lead")
  indices = []
  for name in names:
    try:
      indices.append(LEADS.index(ecg_io.normalize_lead_name(name)))
    except ecg_io.EcgReadError as error:
      raise ValueError(f"signal_recon: kept_leads: {error}") from None
  if len(set(indices)) != len(indices):
    raise ValueError(f"signal_recon: kept_leads names a lead twice: {tuple(names)}")
  return tuple(sorted(indices))


def pad_time(x: jax.Array, multiple: int) -> jax.Array:
  """Zero-pads ``[B, T, L]`` at the end of time to the next multiple of ``multiple``."""
  extra = -x.shape[1] % multiple
  return jnp.pad(x, ((0, 0), (0, extra), (0, 0))) if extra else x


@dataclasses.dataclass(frozen=True)
class SignalRecon:
  vae: SignalVAE
  teacher: Network
  kept: tuple[int, ...]  # indices of the kept leads in LEADS
  kl_weight: float = 1e-4
  pass_through: bool = True
  eval_aggregate: str = "max"  # how summarize combines windows of a record (as the trainer)
  name: str = "signal_recon"
  selection_metric: str = "neg_mse"

  @property
  def keep_mask(self) -> jax.Array:
    """float [12]: 1 for kept leads."""
    return jnp.zeros(len(LEADS), jnp.float32).at[jnp.array(self.kept)].set(1.0)

  def masked_input(self, signals: jax.Array) -> jax.Array:
    """The kept leads of ``[B, T, 12]`` in their places, the others zeroed."""
    return signals * self.keep_mask

  def write_figures(self, config, run_dir) -> None:
    """Called by the trainer after the test predictions, before results.json: real vs
    reconstructed test records."""
    plot_run_reconstructions(config, str(run_dir), str(epath.Path(run_dir) / "reconstructions.png"))

  def reconstruct(self, params, signals: jax.Array, rng: jax.Array | None = None):
    """``(output [B, T, 12], VAEOutput)`` for real 12-lead ``signals``; samples when ``rng``."""
    length = signals.shape[1]
    x = pad_time(self.masked_input(signals), self.vae.length_multiple)
    train = rng is not None
    out = self.vae.apply(
      {"params": params}, x, train=train, rngs={"sample": rng} if train else None
    )
    output = out.reconstruction[:, :length]
    if self.pass_through:
      output = jnp.where(self.keep_mask > 0, signals.astype(output.dtype), output)
    return output, out

  def init(self, rng, batch):
    rng_v, rng_t = jax.random.split(rng)
    x = pad_time(self.masked_input(batch["teacher"]), self.vae.length_multiple)
    params = self.vae.init({"params": rng_v}, x, train=False)["params"]
    teacher_params, teacher_stats = self.teacher.init(rng_t, batch["teacher"])
    # The trainer replaces this placeholder with the trained teacher's variables.
    return params, {"teacher": {"params": teacher_params, "stats": teacher_stats}}

  def loss(self, params, state, batch, rng):
    target = batch["teacher"].astype(jnp.float32)
    output, out = self.reconstruct(params, target, rng)
    mse = losses.masked_mean(jnp.mean(jnp.square(output - target), axis=(1, 2)), batch["mask"])
    kl = losses.masked_mean(kl_divergence(out.mean, out.log_var), batch["mask"])
    return mse + self.kl_weight * kl, (state, {"mse": mse, "kl": kl})

  def predict(self, params, state, batch):
    real = batch["teacher"].astype(jnp.float32)
    output, out = self.reconstruct(params, real)
    on_recon = self.teacher.frozen_apply(state["teacher"], output)
    on_real = self.teacher.frozen_apply(state["teacher"], real)
    on_zeroed = self.teacher.frozen_apply(state["teacher"], self.masked_input(real))
    sums = fidelity.signal_sums(real, output)
    return {
      "logits": on_recon.logits,
      "logits_real": on_real.logits,
      "logits_zeroed": on_zeroed.logits,
      **{_SUM_PREFIX + k: v for k, v in sums.items()},
      "count": jnp.full(real.shape[:1], real.shape[1], jnp.float32),
      "kl": kl_divergence(out.mean, out.log_var),
      "features_real": on_real.features.astype(jnp.float32),
      "features_recon": on_recon.features.astype(jnp.float32),
    }

  def summarize(self, outputs: dict, records: np.ndarray, labels: np.ndarray) -> dict:
    """Flat JSON scalars of one split from ``predict``'s outputs over its N windows.

    mse, mae, pearson: over all 12 leads (Pearson: mean of the per-lead values); *_missing: over the
    leads not kept; mse_<lead>, mae_<lead>, pearson_<lead> per lead; neg_mse (selection); kl;
    frechet_distance: between real and reconstructed windows in the teacher's feature space;
    teacher_macro_auc_real / _zeroed with _ci95_lower / _ci95_upper: the teacher on the real 12
    leads / on the kept leads alone, per record (windows aggregated as the trainer does). The
    teacher's AUC on the reconstructions is the split's ``macro_auc`` (and ``ci95`` on test).
    """
    sums = {k[len(_SUM_PREFIX) :]: v for k, v in outputs.items() if k.startswith(_SUM_PREFIX)}
    per_lead = fidelity.lead_fidelity(sums, outputs["count"], records)
    missing = np.array([i not in self.kept for i in range(len(LEADS))])
    summary = {}
    for stat, values in per_lead.items():
      summary[stat] = float(values.mean() if stat != "pearson" else np.nanmean(values))
      if missing.any():
        chosen = values[missing]
        summary[f"{stat}_missing"] = float(
          chosen.mean() if stat != "pearson" else np.nanmean(chosen)
        )
      summary.update({f"{stat}_{lead}": float(v) for lead, v in zip(LEADS, values, strict=True)})
    summary["neg_mse"] = -summary["mse"]
    summary["kl"] = float(np.mean(outputs["kl"]))
    summary["frechet_distance"] = fidelity.frechet_distance(
      outputs["features_real"], outputs["features_recon"]
    )
    for source in ("real", "zeroed"):
      summary.update(self._teacher_auc(outputs[f"logits_{source}"], records, labels, source))
    return summary

  def _teacher_auc(self, logits, records, labels, source: str) -> dict:
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    scores = aggregate_windows(
      probs, records, np.ones(len(records)), len(labels), self.eval_aggregate
    )
    key = f"teacher_macro_auc_{source}"
    auc = metrics.per_class_auc(scores, labels)
    thresholds = np.full(labels.shape[1], 0.5)  # unused: only the AUC interval is read
    names = [str(c) for c in range(labels.shape[1])]
    lower, upper = metrics.bootstrap_ci(scores, labels, thresholds, names, N_BOOT, BOOT_SEED)[
      "macro_auc"
    ]
    return {key: float(np.nanmean(auc)), f"{key}_ci95_lower": lower, f"{key}_ci95_upper": upper}

  def export_network(self, params, state) -> dict:
    """The VAE (no batch statistics)."""
    del state
    return {"params": params, "stats": {}}


def plot_run_reconstructions(config, run_dir: str, out_png: str, num_records: int = 3) -> str:
  """Plots real vs reconstructed test records of a finished run's best VAE; returns the PNG path.

  ``run_dir`` is the VAE's run (WORKDIR/student when the teacher was trained in the same run); the
  signals are normalised as in training. The first windows of the first ``num_records`` test
  records are shown.
  """
  from lead_kt import checkpoint, input_pipeline

  info = input_pipeline.dataset_info(config.data)
  method = create(config, info.num_classes, info.split_sizes["train"], None)
  normalizer = input_pipeline.load_or_fit_normalizer(
    config.data, str(epath.Path(run_dir) / "normalization.json")
  )
  batches = input_pipeline.eval_batches(
    config.data, "test", normalizer, config.eval_batch_size, sharding=None
  )
  batch = next(iter(batches))
  _, first_windows = np.unique(batch["record"][batch["mask"] > 0], return_index=True)
  real = jnp.asarray(batch["teacher"][first_windows[:num_records]])
  example = {"teacher": real}
  params, state = jax.eval_shape(method.init, jax.random.key(0), example)
  best = checkpoint.load_best_model(str(run_dir), {"params": params, "method_state": state})
  output, _ = jax.jit(method.reconstruct)(best["params"], real)
  kept = [LEADS[i] for i in method.kept]
  return fidelity.plot_reconstructions(real, output, out_png, LEADS, kept, info.sampling_rate)


def build_vae(config) -> SignalVAE:
  vae = config.vae
  return SignalVAE(
    channels=tuple(vae.channels),
    num_res_blocks=vae.num_res_blocks,
    latent_channels=vae.latent_channels,
    num_groups=vae.num_groups,
    dtype=DTYPES[config.student.dtype],
  )


def validate(config) -> None:
  kept_lead_indices(config.kept_leads)
  vae = config.vae
  if config.kl_weight < 0:
    raise ValueError(f"signal_recon: kl_weight must be >= 0, got {config.kl_weight}")
  if not vae.channels or min(vae.channels) < 1:
    raise ValueError(f"signal_recon: vae.channels must be positive widths, got {vae.channels}")
  bad = [c for c in vae.channels if c % vae.num_groups]
  if vae.num_groups < 1 or bad:
    raise ValueError(f"signal_recon: vae.num_groups={vae.num_groups} must divide widths {bad}")
  if vae.num_res_blocks < 0 or vae.latent_channels < 1:
    raise ValueError(
      f"signal_recon: need vae.num_res_blocks >= 0 and vae.latent_channels >= 1, got "
      f"{vae.num_res_blocks} and {vae.latent_channels}"
    )
  if config.student.dtype not in DTYPES:
    raise ValueError(f"signal_recon: unknown student.dtype {config.student.dtype!r}")


def create(config, num_classes, num_train, train_first_labels):
  del num_train, train_first_labels
  return SignalRecon(
    vae=build_vae(config),
    teacher=Network(build_backbone(config.teacher, num_classes)),
    kept=kept_lead_indices(config.kept_leads),
    kl_weight=config.kl_weight,
    pass_through=config.pass_through_kept,
    eval_aggregate=config.data.eval_aggregate,
  )
