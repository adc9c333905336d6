"""On-device augmentation: consistent views, reproducible draws, mixed labels, and off means off."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import build_method, tiny_config

from configs import default
from lead_kt import augment, noise_bank, train

STUDENT_COLUMNS = (0, 6)  # I and V1


def _config(**strengths):
  cfg = default.get_config().augment
  for name, value in strengths.items():
    cfg[name] = value
  return cfg


def _batch(batch_size=8, length=100, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  teacher = rng.normal(size=(batch_size, length, 12)).astype(np.float32)
  return {
    "teacher": jnp.asarray(teacher),
    "student": jnp.asarray(teacher[..., STUDENT_COLUMNS]),
    "label": jnp.asarray(rng.integers(0, 2, (batch_size, num_classes)), jnp.float32),
    "index": jnp.arange(batch_size, dtype=jnp.int32),
    "mask": jnp.ones(batch_size, jnp.float32),
  }


EVERYTHING = dict(scale=0.2, noise=0.1, wander=0.3, shift=0.2, mixup=1.0, cutmix=1.0)


def test_student_view_is_its_leads_of_the_augmented_teacher_view():
  views = augment.make(_config(**EVERYTHING), STUDENT_COLUMNS, 100.0)
  batch = _batch()
  out = views(jax.random.key(1), batch)
  assert not np.allclose(out["teacher"], batch["teacher"])
  np.testing.assert_array_equal(out["student"], np.asarray(out["teacher"])[..., STUDENT_COLUMNS])


def test_same_rng_same_output_other_rng_other_output():
  views = jax.jit(augment.make(_config(**EVERYTHING), STUDENT_COLUMNS, 100.0))
  batch = _batch()
  first, again = views(jax.random.key(3), batch), views(jax.random.key(3), batch)
  other = views(jax.random.key(4), batch)
  for key in ("teacher", "student", "label"):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.allclose(first["teacher"], other["teacher"])


@pytest.mark.parametrize("mixer", ["mixup", "cutmix"])
def test_mixed_labels_are_the_mixture_of_the_labels(mixer):
  """Each record is a constant signal equal to its one label: after mixing, a record's mean value
  is its mixture of records, so it must equal its mixed label."""
  values = jnp.linspace(0.0, 1.0, 8)
  batch = _batch()
  batch["teacher"] = jnp.broadcast_to(values[:, None, None], (8, 100, 12))
  batch["label"] = values[:, None]
  for seed in range(5):
    out = augment.make(_config(**{mixer: 0.5}), STUDENT_COLUMNS, 100.0)(jax.random.key(seed), batch)
    np.testing.assert_allclose(out["teacher"].mean(axis=(1, 2)), out["label"][:, 0], atol=1e-6)
    assert not np.allclose(out["label"], batch["label"])  # something was mixed
    assert np.all((out["label"] >= 0) & (out["label"] <= 1))


def test_mix_prob_zero_mixes_nothing():
  batch = _batch()
  out = augment.make(_config(mixup=1.0, mix_prob=0.0), STUDENT_COLUMNS, 100.0)(
    jax.random.key(0), batch
  )
  np.testing.assert_array_equal(out["teacher"], batch["teacher"])
  np.testing.assert_array_equal(out["label"], batch["label"])


def test_one_draw_per_record_serves_every_lead():
  x = _batch()["teacher"] + 5.0  # away from 0, so ratios are defined
  rng = jax.random.key(2)
  ratio = augment.amplitude_scale(rng, x, 0.3) / x
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=1e-5)
  assert np.std(np.asarray(ratio[:, 0, 0])) > 0.01  # records differ
  wander = augment.baseline_wander(rng, x, 1.0, 0.5, 100.0) - x
  np.testing.assert_allclose(wander, np.broadcast_to(wander[..., :1], wander.shape), atol=1e-5)
  shifted = np.asarray(augment.time_shift(rng, x, 0.3))
  for record in range(x.shape[0]):
    # One shift s per record: where the lead's samples moved, all leads moved alike.
    lead0 = [
      s
      for s in range(-30, 31)
      if np.allclose(np.roll(x[record, :, 0], s)[40:60], shifted[record, 40:60, 0])
    ]
    assert len(lead0) == 1
    s = lead0[0]
    np.testing.assert_allclose(np.roll(x[record], s, axis=0)[40:60], shifted[record, 40:60])
    zeros = slice(0, s) if s > 0 else slice(x.shape[1] + s, x.shape[1])
    assert np.all(shifted[record, zeros] == 0)  # shifted-in samples are the normalised baseline


def test_augmentation_off_leaves_the_train_step_unchanged(tmp_path):
  """With every strength 0 nothing is built, so the jitted step is the program of before."""
  assert augment.make(default.get_config().augment, STUDENT_COLUMNS, 100.0) is None
  assert augment.make(_config(mix_prob=0.5, wander_max_hz=2.0), STUDENT_COLUMNS, 100.0) is None
  assert augment.make(_config(recorded_noise_view="both"), STUDENT_COLUMNS, 100.0) is None
  assert augment.is_active(_config(recorded_noise=0.1))
  config = tiny_config("kd", str(tmp_path))
  method = build_method(config, num_classes=3)
  tx = optax.adam(1e-3)
  batch = _batch(num_classes=3)
  batch["student"] = batch["teacher"][..., :1]
  state = jax.eval_shape(lambda: train._init_state(method, tx, batch, jax.random.key(0)))
  schedule = lambda step: 1e-3
  plain = jax.jit(train._make_train_step(method, tx, schedule)).lower(state, batch).as_text()
  views = augment.make(config.augment, (0,), 100.0)
  off = jax.jit(train._make_train_step(method, tx, schedule, views)).lower(state, batch).as_text()
  assert off == plain
  on_views = augment.make(_config(noise=0.1), (0,), 100.0)
  on = jax.jit(train._make_train_step(method, tx, schedule, on_views)).lower(state, batch).as_text()
  assert on != plain


@pytest.mark.parametrize(
  "field, value",
  [
    ("noise", -0.1),
    ("shift", 1.0),
    ("mix_prob", 1.5),
    ("mixupp", 1.0),
    ("recorded_noise", -0.1),
    ("recorded_noise_view", "teacher"),
  ],
)
def test_bad_options_are_refused(field, value):
  cfg = _config()
  with cfg.unlocked():
    cfg[field] = value
  with pytest.raises(ValueError, match=field):
    augment.validate(cfg)


def test_the_noise_bank_is_three_half_hour_recordings_of_two_channels():
  bank = noise_bank.load(100.0)
  assert bank.shape[0] == len(noise_bank.RECORDINGS) == 3 and bank.shape[2] == 2
  assert abs(bank.shape[1] - 180_000) <= 1_800  # 30 minutes at 100 Hz
  assert bank.dtype == np.float32 and not bank.flags.writeable  # the cache shares it
  np.testing.assert_allclose(bank.mean(axis=1), 0, atol=1e-3)
  np.testing.assert_allclose(bank.std(axis=1), 1, rtol=1e-3)
  assert noise_bank.load(500.0).shape == (3, 5 * bank.shape[1], 2)


def test_recorded_noise_is_one_scaled_window_per_record():
  """Against a small random bank: each record's added noise is ``std`` times one window of one
  recording (the same start for all leads, each lead one channel), with ``std`` in [0, 0.5]."""
  recordings, bank_length, length, max_std = 3, 40, 10, 0.5
  bank = np.random.default_rng(0).normal(size=(recordings, bank_length, 2)).astype(np.float32)
  x = _batch(batch_size=32, length=length)["teacher"]
  add = jax.jit(lambda rng, x: augment.recorded_noise(rng, x, jnp.asarray(bank), max_std))
  noise = np.asarray(add(jax.random.key(5), x) - x)
  starts = range(bank_length - length + 1)
  windows = np.stack([[bank[r, s : s + length] for s in starts] for r in range(recordings)])
  # Per candidate (recording, start), lead and channel: the least-squares std and its residual.
  stds = (
    np.einsum("btl,rstc->brslc", noise, windows)
    / np.einsum("rstc,rstc->rsc", windows, windows)[None, :, :, None]
  )
  residuals = noise[:, None, None, :, :, None] - stds[:, :, :, None] * windows[None, :, :, :, None]
  fits = np.abs(residuals).max(axis=3) < 1e-5  # [B, recording, start, lead, channel]
  drawn_stds, drawn_recordings, channels_used = [], set(), set()
  for record in range(x.shape[0]):
    matches = np.argwhere(fits[record].any(axis=-1).all(axis=-1))
    assert len(matches) == 1  # exactly one window explains every lead
    r, s = matches[0]
    channel = fits[record, r, s].argmax(axis=-1)
    record_stds = stds[record, r, s, np.arange(x.shape[2]), channel]
    np.testing.assert_allclose(record_stds, record_stds[0], rtol=1e-4)  # shared by the leads
    drawn_stds.append(record_stds[0])
    drawn_recordings.add(r)
    channels_used.add(tuple(channel))
  assert 0 <= min(drawn_stds) < 0.25 * max_std and 0.75 * max_std < max(drawn_stds) <= max_std
  assert drawn_recordings == {0, 1, 2}
  assert len(channels_used) > 1 and any(len(set(c)) == 2 for c in channels_used)


@pytest.mark.parametrize("view", ["student", "both"])
def test_recorded_noise_goes_to_the_configured_view(view):
  views = jax.jit(
    augment.make(_config(recorded_noise=0.5, recorded_noise_view=view), STUDENT_COLUMNS, 100.0)
  )
  batch = _batch()
  out, again = views(jax.random.key(7), batch), views(jax.random.key(7), batch)
  for key in ("teacher", "student"):
    np.testing.assert_array_equal(out[key], again[key])
  assert not np.allclose(views(jax.random.key(8), batch)["student"], out["student"])
  teachers_leads = np.asarray(out["teacher"])[..., STUDENT_COLUMNS]
  if view == "student":  # the wearable's noise, which the teacher never sees
    np.testing.assert_array_equal(out["teacher"], batch["teacher"])
    assert not np.allclose(out["student"], teachers_leads)
  else:
    assert not np.allclose(out["teacher"], batch["teacher"])
    np.testing.assert_array_equal(out["student"], teachers_leads)
