"""Signal reconstruction: VAE shapes, KL, kept-lead pass-through, training, fidelity, a full run."""

import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import build_method

from configs import signal_recon as signal_recon_config
from lead_kt import config_fields, fidelity, methods
from lead_kt.methods import signal_recon
from lead_kt.models.vae import SignalVAE, kl_divergence

NUM_CLASSES = 3
BATCH = 4
KEPT = (1, 6, 10)  # II, V1, V5


def _config(**overrides):
  c = signal_recon_config.get_config()
  c.vae.update(channels=(8, 16, 16), num_res_blocks=1, latent_channels=4, num_groups=4)
  c.teacher.backbone = "fcn_wang"
  c.teacher.kwargs.filters = (8, 16, 8)
  config_fields.set_fields(c, overrides.items())
  return c


def _method(**overrides):
  return build_method(_config(**overrides), NUM_CLASSES)


def _signals(length: int, seed: int = 0) -> np.ndarray:
  """[BATCH, length, 12]: each lead a mixture of three shared sinusoids (so leads predict leads)."""
  rng = np.random.default_rng(seed)
  time_axis = np.arange(length) / 25.0
  phases = rng.uniform(0, 2 * np.pi, (BATCH, 1, 3))
  sources = np.sin(2 * np.pi * np.array([1.0, 2.0, 3.5]) * time_axis[None, :, None] + phases)
  mixing = rng.normal(size=(3, 12))
  return (sources @ mixing).astype(np.float32)


def _batch(length: int = 64, seed: int = 0):
  teacher = _signals(length, seed)
  rng = np.random.default_rng(seed)
  return {
    "teacher": jnp.asarray(teacher),
    "student": jnp.asarray(teacher[..., KEPT]),
    "label": jnp.asarray(rng.integers(0, 2, (BATCH, NUM_CLASSES)), jnp.float32),
    "index": jnp.arange(BATCH, dtype=jnp.int32),
    "mask": jnp.ones((BATCH,), jnp.float32),
  }


@pytest.fixture(scope="module")
def initialized():
  """``(batch, params, state)`` of the default test method, initialised once (compiling is slow)."""
  batch = _batch()
  params, state = jax.jit(_method().init)(jax.random.key(0), batch)
  return batch, params, state


def test_vae_shapes_and_length_check(initialized):
  _, params, _ = initialized
  vae = SignalVAE(channels=(8, 16, 16), num_res_blocks=1, latent_channels=4, num_groups=4)
  x = jnp.ones((2, 64, 12))
  apply = jax.jit(vae.apply, static_argnames="train")
  out = apply({"params": params}, x)
  assert out.reconstruction.shape == (2, 64, 12)
  assert out.mean.shape == out.log_var.shape == (2, 8, 4)
  sampled = apply({"params": params}, x, train=True, rngs={"sample": jax.random.key(1)})
  assert not np.allclose(sampled.reconstruction, out.reconstruction)
  with pytest.raises(ValueError, match="divisible by 8"):
    jax.eval_shape(vae.apply, {"params": params}, jnp.ones((2, 60, 12)))
  # The method pads such crops and cuts the output back to their length.
  method = _method()
  batch = _batch(length=50)
  output, raw = jax.jit(method.reconstruct)(params, batch["teacher"])
  assert output.shape == (BATCH, 50, 12)
  assert raw.reconstruction.shape == (BATCH, 56, 12) and raw.mean.shape == (BATCH, 7, 4)


def test_kl_closed_form_and_loss_terms(initialized):
  mean = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])  # [1, 2, 2]
  log_var = jnp.array([[[0.0, math.log(2.0)], [0.0, 0.0]]])
  # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2): 0.5 for (1, 0), 0.5 * (1 - log 2) for (0, log 2).
  np.testing.assert_allclose(kl_divergence(mean, log_var), [0.5 + 0.5 * (1 - math.log(2))], 1e-6)
  method = _method(kl_weight=0.5)
  batch, params, state = initialized
  total, (new_state, terms) = method.loss(params, state, batch, jax.random.key(1))
  assert set(terms) == {"mse", "kl"} and float(terms["kl"]) > 0
  np.testing.assert_allclose(total, terms["mse"] + 0.5 * terms["kl"], rtol=1e-6)
  assert new_state is state  # the teacher stays as it is


def test_kept_leads_are_passed_through(initialized):
  assert signal_recon.kept_lead_indices(("ii", "v1", "V5")) == KEPT
  assert signal_recon.kept_lead_indices("avr") == (3,)
  with pytest.raises(ValueError, match="kept_leads.*V7"):
    signal_recon.kept_lead_indices(("II", "V7"))
  with pytest.raises(ValueError, match="twice"):
    signal_recon.kept_lead_indices(("II", "ii"))
  batch, params, _ = initialized
  real = batch["teacher"]
  passed = _method()
  reconstruct = jax.jit(passed.reconstruct)
  output, raw = reconstruct(params, real)
  np.testing.assert_array_equal(output[..., KEPT], real[..., KEPT])
  missing = [i for i in range(12) if i not in KEPT]
  np.testing.assert_array_equal(output[..., missing], raw.reconstruction[..., missing])
  # The VAE sees only the kept leads: changing the others changes nothing but the target.
  changed = real.at[..., missing].add(5.0)
  np.testing.assert_allclose(reconstruct(params, changed)[0][..., missing], output[..., missing])
  # Without pass-through every lead is the decoder's.
  decoded = _method(pass_through_kept=False)
  output, raw = jax.jit(decoded.reconstruct)(params, real)
  np.testing.assert_array_equal(output, raw.reconstruction)
  assert not np.allclose(output[..., KEPT], real[..., KEPT])


def test_training_reduces_reconstruction_error(initialized):
  method = _method(kl_weight=1e-4)
  batch, params, state = initialized
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, rng):
    (_, (_, terms)), grads = jax.value_and_grad(method.loss, has_aux=True)(
      params, state, batch, rng
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, terms["mse"]

  opt_state = tx.init(params)
  history = []
  for rng in jax.random.split(jax.random.key(1), 40):
    params, opt_state, mse = step(params, opt_state, rng)
    history.append(float(mse))
  assert history[-1] < 0.5 * history[0], history


def test_predict_and_summarize(initialized):
  method = _method()
  batch, params, state = initialized
  outputs = {k: np.asarray(v) for k, v in jax.jit(method.predict)(params, state, batch).items()}
  assert outputs["logits"].shape == outputs["logits_zeroed"].shape == (BATCH, NUM_CLASSES)
  assert outputs["sum_sq_err"].shape == (BATCH, 12) and outputs["features_real"].shape == (
    BATCH,
    16,
  )
  del outputs["logits"]
  records = np.array([0, 0, 1, 1])
  labels = np.array([[1, 0, 1], [0, 1, 0]])
  summary = method.summarize(outputs, records, labels)
  assert all(isinstance(v, float) for v in summary.values())
  assert summary["mse_II"] == summary["mae_V5"] == 0.0 and summary["pearson_V1"] == 1.0
  assert summary["mse_missing"] == pytest.approx(summary["mse"] * 12 / 9)
  assert summary["neg_mse"] == -summary["mse"] and summary["mse_I"] > 0
  assert summary["frechet_distance"] > 0
  assert 0 <= summary["teacher_macro_auc_zeroed"] <= 1
  assert (
    summary["teacher_macro_auc_real_ci95_lower"] <= summary["teacher_macro_auc_real_ci95_upper"]
  )


def test_fidelity_hand_cases():
  x = np.linspace(-1.0, 2.0, 20)
  real = np.stack([x, x, x, np.ones_like(x)], axis=-1)[None]  # [1, 20, 4]
  recon = np.stack([x, 2 * x + 3, -x, np.ones_like(x)], axis=-1)[None]
  result = fidelity.signal_fidelity(real, recon)
  np.testing.assert_allclose(result["pearson"][:3], [1.0, 1.0, -1.0], atol=1e-12)
  assert np.isnan(result["pearson"][3])  # a flat lead has no correlation
  np.testing.assert_allclose(result["mse"], [0, np.mean((x + 3) ** 2), np.mean(4 * x**2), 0])
  np.testing.assert_allclose(result["mae"], [0, np.mean(np.abs(x + 3)), np.mean(2 * np.abs(x)), 0])
  # Windows of one record pool into its Pearson.
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 30, 3)), rng.normal(size=(2, 30, 3))
  whole = fidelity.signal_fidelity(a, b)
  windows = fidelity.signal_sums(a.reshape(4, 15, 3), b.reshape(4, 15, 3))
  pooled = fidelity.lead_fidelity(windows, np.full(4, 15), np.array([7, 7, 9, 9]))
  for key in ("mse", "mae", "pearson"):
    np.testing.assert_allclose(pooled[key], whole[key], rtol=1e-10)


def test_frechet_distance_hand_cases():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(200, 5))
  assert fidelity.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
  shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
  assert fidelity.frechet_distance(features, features + shift) == pytest.approx(shift @ shift)
  # Rank-deficient covariances (fewer samples than features) stay finite and real.
  assert fidelity.frechet_distance(features[:4], features[4:8]) > 0
  with pytest.raises(ValueError, match=">= 2 samples"):
    fidelity.frechet_distance(features[:1], features)


def test_plot_reconstructions(tmp_path):
  real = _signals(64)[:2]
  path = fidelity.plot_reconstructions(
    real, real * 0.9, tmp_path / "recon.png", signal_recon.LEADS, ("II",), fs=100
  )
  assert (tmp_path / "recon.png").stat().st_size > 10_000 and path.endswith("recon.png")
  with pytest.raises(ValueError, match="plot_reconstructions"):
    fidelity.plot_reconstructions(real, real[:1], tmp_path / "x.png", signal_recon.LEADS)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"kept_leads": ("II", "X1")}, "kept_leads"),
    ({"kept_leads": ()}, "kept_leads is empty"),
    ({"kl_weight": -1.0}, "kl_weight"),
    ({"vae.num_groups": 3}, "num_groups"),
    ({"vae.latent_channels": 0}, "latent_channels"),
  ],
)
def test_validate_rejects_bad_options(override, message):
  with pytest.raises(ValueError, match=message):
    methods.validate(_config(**override))


@pytest.mark.slow
def test_end_to_end_writes_fidelity_metrics(tmp_path):
  from lead_kt import train

  config = _config(**{"vae.num_res_blocks": 0})  # compiling the VAE's init and step dominates
  config.teacher.kwargs.filters = (16, 16, 16)
  config.update(num_epochs=1, batch_size=32, eval_batch_size=64)
  start = time.time()
  train.train_and_evaluate(config, str(tmp_path))
  print(f"signal_recon end-to-end: {time.time() - start:.1f} s")
  written = json.loads((tmp_path / "results.json").read_text())
  assert written["student_leads"] == ["II", "V1", "V5"]
  for split in ("validation", "test"):
    section = written[split]
    for key in ("mse", "mae", "pearson", "mse_missing", "pearson_V6", "frechet_distance"):
      assert np.isfinite(section[key]), (split, key)
    assert section["mse_II"] == 0.0 and section["mse_V6"] > 0
    for source in ("real", "zeroed"):
      auc = section[f"teacher_macro_auc_{source}"]
      low, high = (section[f"teacher_macro_auc_{source}_ci95_{e}"] for e in ("lower", "upper"))
      assert 0 <= low <= auc <= high <= 1
    assert 0 <= section["macro_auc"] <= 1  # the teacher on the reconstructions
  assert "ci95" in written["test"]
  assert written["teacher"]["method"] == "teacher"
  assert "neg_mse" in written["history"][0]
  # The trainer draws real vs reconstructed test records next to the VAE run's results.
  assert (tmp_path / "student" / "reconstructions.png").stat().st_size > 10_000
