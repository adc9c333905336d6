"""ECG augmentation and mixing inside the jitted train step, driven by the step's RNG.

Every transform here is a pure function ``(rng, arrays) -> arrays``. ``make(cfg, ...)`` composes
the configured ones into ``views(rng, batch) -> batch``, which the trainer calls once per step
before ``method.loss``: it augments the 12-lead ``teacher`` view and then cuts the ``student``
view out of it, so the student always sees exactly its leads of what the teacher sees (function
matching: Beyer et al., "Knowledge distillation: a good teacher is patient and consistent", CVPR
2022). The one deliberate exception is ``recorded_noise_view="student"``: recorded noise is then
added to the student's view only, after it is cut, as the wearable's noise that the clinical
teacher never sees. Methods never augment.

Per record, one draw serves every lead: the amplitude factor, the noise level, the baseline
wander's sinusoid and the time shift (the noise samples themselves differ per lead and time), and
the recorded noise's recording, start and level (each lead takes one of the recording's two
channels).
Mixing works across the records of a batch: ``mixup`` blends whole crops, ``cutmix`` pastes a
time segment of the partner record; labels are mixed in the same proportion. Inputs are the
normalised crops (about unit scale), so strengths are in those units.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from lead_kt import noise_bank

Batch = dict[str, jax.Array]

# Baseline wander lives below this frequency (respiration and electrode drift).
_WANDER_MIN_HZ = 0.05

# The strengths (0 = that transform off) and the other fields of the ``augment`` config block
# (configs/default.py documents each).
STRENGTHS = ("scale", "noise", "wander", "shift", "mixup", "cutmix", "recorded_noise")
_NUMERIC_FIELDS = (*STRENGTHS, "wander_max_hz", "mix_prob")
FIELDS = (*_NUMERIC_FIELDS, "recorded_noise_view")
# The views that recorded noise can be added to: the student's only, or the 12 leads it is cut from.
RECORDED_NOISE_VIEWS = ("student", "both")


def validate(cfg: ml_collections.ConfigDict) -> None:
  unknown = sorted(set(cfg.keys()) - set(FIELDS))
  if unknown:
    raise ValueError(f"unknown augment option(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
  for field in _NUMERIC_FIELDS:
    if cfg[field] < 0:
      raise ValueError(f"augment.{field} must be >= 0, got {cfg[field]}")
  if cfg.shift >= 1:
    raise ValueError(f"augment.shift is a fraction of the crop, < 1; got {cfg.shift}")
  if cfg.mix_prob > 1:
    raise ValueError(f"augment.mix_prob is a probability, got {cfg.mix_prob}")
  if cfg.wander and cfg.wander_max_hz <= _WANDER_MIN_HZ:
    raise ValueError(f"augment.wander_max_hz must exceed {_WANDER_MIN_HZ} Hz")
  if cfg.recorded_noise_view not in RECORDED_NOISE_VIEWS:
    raise ValueError(
      f"augment.recorded_noise_view is one of {RECORDED_NOISE_VIEWS}, "
      f"got {cfg.recorded_noise_view!r}"
    )


def is_active(cfg: ml_collections.ConfigDict) -> bool:
  return any(cfg[field] > 0 for field in STRENGTHS)


def amplitude_scale(rng: jax.Array, x: jax.Array, log_std: float) -> jax.Array:
  """``x`` [B, T, L] times ``exp(N(0, log_std))``, one factor per record."""
  factor = jnp.exp(log_std * jax.random.normal(rng, (x.shape[0], 1, 1), x.dtype))
  return x * factor


def additive_noise(rng: jax.Array, x: jax.Array, max_std: float) -> jax.Array:
  """White noise whose std, drawn per record uniformly in [0, max_std], is shared by its leads."""
  rng_std, rng_noise = jax.random.split(rng)
  std = max_std * jax.random.uniform(rng_std, (x.shape[0], 1, 1), x.dtype)
  return x + std * jax.random.normal(rng_noise, x.shape, x.dtype)


def baseline_wander(
  rng: jax.Array, x: jax.Array, amplitude: float, max_hz: float, sampling_rate: float
) -> jax.Array:
  """Adds one sinusoid per record to all its leads: amplitude uniform in [0, ``amplitude``],
  frequency uniform in [0.05, ``max_hz``] Hz, random phase."""
  rng_a, rng_f, rng_p = jax.random.split(rng, 3)
  shape = (x.shape[0], 1, 1)
  amp = amplitude * jax.random.uniform(rng_a, shape, x.dtype)
  freq = jax.random.uniform(rng_f, shape, x.dtype, _WANDER_MIN_HZ, max_hz)
  phase = jax.random.uniform(rng_p, shape, x.dtype, 0.0, 2 * jnp.pi)
  t = jnp.arange(x.shape[1], dtype=x.dtype)[None, :, None] / sampling_rate
  return x + amp * jnp.sin(2 * jnp.pi * freq * t + phase)


def time_shift(rng: jax.Array, x: jax.Array, max_fraction: float) -> jax.Array:
  """Shifts each record by an integer in [-m, m] samples (m = ``max_fraction`` of the crop); the
  samples shifted in are 0, the normalised baseline, as the pipeline pads short records."""
  length = x.shape[1]
  most = int(max_fraction * length)
  shift = jax.random.randint(rng, (x.shape[0], 1), -most, most + 1)
  source = jnp.arange(length)[None, :] - shift  # [B, T]
  inside = (source >= 0) & (source < length)
  shifted = jnp.take_along_axis(x, jnp.clip(source, 0, length - 1)[..., None], axis=1)
  return jnp.where(inside[..., None], shifted, 0)


def recorded_noise(rng: jax.Array, x: jax.Array, bank: jax.Array, max_std: float) -> jax.Array:
  """Adds recorded noise to ``x`` [B, T, L]: per record one recording of ``bank``
  [recording, time, channel] (``noise_bank.load``: unit std), drawn uniformly, one start and one
  std uniform in [0, ``max_std``]; each lead takes one of the channels at random, at that start.
  One recording per record, not a mix, keeps each kind of noise as it was recorded."""
  rng_recording, rng_start, rng_channel, rng_std = jax.random.split(rng, 4)
  batch, length, leads = x.shape
  recordings, bank_length, channels = bank.shape
  if length > bank_length:
    raise ValueError(f"crops of {length} samples are longer than the noise ({bank_length})")
  recording = jax.random.randint(rng_recording, (batch,), 0, recordings)
  start = jax.random.randint(rng_start, (batch,), 0, bank_length - length + 1)

  def window(r, s):  # [T, channels]: recording r from sample s
    return jax.lax.dynamic_slice(bank, (r, s, 0), (1, length, channels))[0]

  windows = jax.vmap(window)(recording, start)
  channel = jax.random.randint(rng_channel, (batch, 1, leads), 0, channels)
  noise = jnp.take_along_axis(windows, channel, axis=2)  # [B, T, L]
  std = max_std * jax.random.uniform(rng_std, (batch, 1, 1), x.dtype)
  return x + std * noise.astype(x.dtype)


def mixup(rng: jax.Array, x: jax.Array, labels: jax.Array, alpha: float):
  """Blends each record with a partner of the batch (a random permutation) by one weight
  ``lam ~ Beta(alpha, alpha)`` per batch; labels are blended alike. Returns ``(x, labels)``."""
  rng_lam, rng_perm = jax.random.split(rng)
  lam = jax.random.beta(rng_lam, alpha, alpha).astype(x.dtype)
  partner = jax.random.permutation(rng_perm, x.shape[0])
  mixed_x = lam * x + (1 - lam) * x[partner]
  mixed_labels = lam * labels + (1 - lam) * labels[partner]
  return mixed_x, mixed_labels


def cutmix(rng: jax.Array, x: jax.Array, labels: jax.Array, alpha: float):
  """Replaces one time segment of each record (the same segment in the whole batch, at a random
  start) by the partner's; the segment's share of the crop, ``1 - lam`` with ``lam ~ Beta(alpha,
  alpha)`` rounded to whole samples, is the partner's weight in the labels."""
  rng_lam, rng_start, rng_perm = jax.random.split(rng, 3)
  length = x.shape[1]
  lam = jax.random.beta(rng_lam, alpha, alpha)
  cut = jnp.round((1 - lam) * length).astype(jnp.int32)
  start = jax.random.randint(rng_start, (), 0, length - cut + 1)
  t = jnp.arange(length)
  in_cut = (t >= start) & (t < start + cut)
  partner = jax.random.permutation(rng_perm, x.shape[0])
  mixed_x = jnp.where(in_cut[None, :, None], x[partner], x)
  share = (cut / length).astype(labels.dtype)
  return mixed_x, (1 - share) * labels + share * labels[partner]


def make(
  cfg: ml_collections.ConfigDict, student_columns: Sequence[int], sampling_rate: float
) -> Callable[[jax.Array, Batch], Batch] | None:
  """The configured augmentation as ``views(rng, batch) -> batch``; None when all is off, so a run
  without augmentation runs exactly the program it ran before."""
  validate(cfg)
  if not is_active(cfg):
    return None
  columns = jnp.asarray(student_columns, jnp.int32)
  per_record = []
  if cfg.scale:
    per_record.append(lambda r, x: amplitude_scale(r, x, cfg.scale))
  if cfg.noise:
    per_record.append(lambda r, x: additive_noise(r, x, cfg.noise))
  if cfg.wander:
    per_record.append(
      lambda r, x: baseline_wander(r, x, cfg.wander, cfg.wander_max_hz, sampling_rate)
    )
  if cfg.shift:
    per_record.append(lambda r, x: time_shift(r, x, cfg.shift))
  mixers = []
  if cfg.mixup:
    mixers.append(lambda r, x, y: mixup(r, x, y, cfg.mixup))
  if cfg.cutmix:
    mixers.append(lambda r, x, y: cutmix(r, x, y, cfg.cutmix))
  bank = noise_bank.load(sampling_rate) if cfg.recorded_noise else None

  def views(rng: jax.Array, batch: Batch) -> Batch:
    if bank is not None:  # split off only then: without recorded noise the draws stay as before
      rng, rng_recorded = jax.random.split(rng)
    rngs = jax.random.split(rng, len(per_record) + 3)
    x, labels = batch["teacher"], batch["label"].astype(batch["teacher"].dtype)
    for transform, r in zip(per_record, rngs, strict=False):
      x = transform(r, x)
    if mixers:
      rng_apply, rng_pick, rng_mix = rngs[-3:]
      branches = [lambda xy, f=f: f(rng_mix, *xy) for f in mixers]
      pick = jax.random.randint(rng_pick, (), 0, len(branches))
      mixed = jax.lax.switch(pick, branches, (x, labels))
      apply = jax.random.uniform(rng_apply) < cfg.mix_prob
      x, labels = jax.tree.map(lambda m, o: jnp.where(apply, m, o), mixed, (x, labels))
    # Added after mixing in either view: one noise per input, as the wearable records it.
    if bank is not None and cfg.recorded_noise_view == "both":
      x = recorded_noise(rng_recorded, x, bank, cfg.recorded_noise)
    student = jnp.take(x, columns, axis=-1)
    if bank is not None and cfg.recorded_noise_view == "student":
      student = recorded_noise(rng_recorded, student, bank, cfg.recorded_noise)
    # Padding rows (mask 0) stay whatever they became: every loss ignores them.
    return {**batch, "teacher": x, "student": student, "label": labels}

  return views
