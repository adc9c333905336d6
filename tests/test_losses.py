"""Losses against the MVKT reference vectors and small cases computed by hand in numpy."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lead_kt import losses
from lead_kt.models.heads import EmbedHead, HintRegressor

MKD_CASE = json.loads((Path(__file__).parent / "fixtures/reference/mkd_case.json").read_text())
STUDENT = jnp.array(MKD_CASE["inputs"]["student_logits"], jnp.float32)
TEACHER = jnp.array(MKD_CASE["inputs"]["teacher_logits"], jnp.float32)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_masked_mean_weights_and_all_zero_mask():
  values = jnp.array([1.0, 3.0, 100.0])
  assert float(losses.masked_mean(values)) == pytest.approx(104.0 / 3)
  assert float(losses.masked_mean(values, jnp.array([1.0, 1.0, 0.0]))) == pytest.approx(2.0)
  assert float(losses.masked_mean(values, jnp.zeros(3))) == 0.0


def test_bce_with_logits_matches_numpy_and_ignores_padding():
  logits = np.array([[0.5, -2.0, 3.0], [1.0, 0.0, -1.0], [9.0, 9.0, 9.0]], np.float32)
  labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], np.float32)
  p = _sigmoid(logits[:2])
  expected = -np.mean(labels[:2] * np.log(p) + (1 - labels[:2]) * np.log(1 - p))
  got = losses.bce_with_logits(jnp.array(logits), jnp.array(labels), jnp.array([1.0, 1.0, 0.0]))
  assert float(got) == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match="shapes differ"):
    losses.bce_with_logits(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_mkd_paper_reproduces_reference():
  expected = MKD_CASE["paper_formula_T1.5"]["float64"]
  assert float(losses.mkd(STUDENT, TEACHER)) == pytest.approx(expected, rel=1e-5)
  assert float(losses.mkd(STUDENT, TEACHER, temperature=1.5)) == pytest.approx(expected, rel=1e-5)


def test_mkd_paper_per_example_terms_follow_mask():
  per_class = np.array(MKD_CASE["paper_formula_T1.5"]["per_sample_per_class_KL_before_T2"])
  mask = jnp.array([0.0, 1.0, 0.0, 1.0])
  expected = 1.5**2 * per_class.sum(axis=1)[[1, 3]].mean()
  assert float(losses.mkd(STUDENT, TEACHER, mask=mask)) == pytest.approx(expected, rel=1e-5)


def test_mkd_reference_code_reproduces_reference():
  at_one = MKD_CASE["repo_multi_label_KL_loss_T1.0"]["float32"]
  at_one_and_a_half = MKD_CASE["repo_multi_label_KL_loss_T1.5"]["float32"]
  assert float(losses.mkd(STUDENT, TEACHER, "reference_code")) == pytest.approx(at_one, rel=1e-5)
  got = losses.mkd(STUDENT, TEACHER, "reference_code", temperature=1.5)
  assert float(got) == pytest.approx(at_one_and_a_half, rel=1e-5)


def test_mkd_rejects_unknown_variant_and_stops_teacher_gradient():
  with pytest.raises(ValueError, match="paper, reference_code"):
    losses.mkd(STUDENT, TEACHER, variant="hinton")
  for variant in losses.MKD_VARIANTS:
    grad_student, grad_teacher = jax.grad(
      lambda s, t, v=variant: losses.mkd(s, t, v), argnums=(0, 1)
    )(STUDENT, TEACHER)
    assert float(jnp.abs(grad_student).sum()) > 0
    assert float(jnp.abs(grad_teacher).sum()) == 0


def test_kd_kl_is_bernoulli_kl_with_temperature_scaling():
  expected_at_one = MKD_CASE["bernoulli_KL_sum_classes_batchmean_T1"]
  assert float(losses.kd_kl(STUDENT, TEACHER, 1.0)) == pytest.approx(expected_at_one, rel=1e-5)
  s, t = np.asarray(STUDENT, np.float64) / 3.0, np.asarray(TEACHER, np.float64) / 3.0
  ps, pt = _sigmoid(s), _sigmoid(t)
  kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
  expected = 9.0 * kl.sum(axis=1).mean()
  assert float(losses.kd_kl(STUDENT, TEACHER, 3.0)) == pytest.approx(expected, rel=1e-5)
  assert float(losses.kd_kl(TEACHER, TEACHER)) == pytest.approx(0.0, abs=1e-6)
  assert float(jnp.abs(jax.grad(losses.kd_kl, argnums=1)(STUDENT, TEACHER)).sum()) == 0


def test_fitnet_is_mse_and_checks_shapes():
  student = jnp.arange(24, dtype=jnp.float32).reshape(2, 4, 3)
  teacher = jnp.ones((2, 4, 3))
  expected = np.mean((np.arange(24).reshape(2, 4, 3)[0] - 1.0) ** 2)
  assert float(losses.fitnet(student, teacher, jnp.array([1.0, 0.0]))) == pytest.approx(expected)
  with pytest.raises(ValueError, match="fitnet"):
    losses.fitnet(student, teacher[:, :3])


def test_resize_time_is_linear_interpolation_with_half_pixel_centres():
  x = jnp.array([[0.0, 1.0, 4.0, 9.0, 16.0]])
  length = 8
  centres = (np.arange(length) + 0.5) * 5 / length - 0.5
  expected = np.interp(centres, np.arange(5), np.asarray(x[0]))
  np.testing.assert_allclose(losses.resize_time(x, length)[0], expected, rtol=1e-6)


def test_attention_transfer_matches_numpy_and_is_scale_free():
  rng = np.random.default_rng(0)
  student_maps = [rng.standard_normal((2, 8, 3)), rng.standard_normal((2, 4, 5))]
  teacher_maps = [rng.standard_normal((2, 8, 6)), rng.standard_normal((2, 2, 7))]

  def attention(feature_map, length):
    energy = (feature_map**2).mean(axis=-1)
    if energy.shape[1] != length:  # integer downsampling by 2 = mean of neighbour pairs
      energy = energy.reshape(energy.shape[0], length, -1).mean(axis=-1)
    return energy / np.linalg.norm(energy, axis=-1, keepdims=True)

  expected = sum(
    ((attention(s, min(s.shape[1], t.shape[1])) - attention(t, min(s.shape[1], t.shape[1]))) ** 2)
    .sum(axis=-1)
    .mean()
    for s, t in zip(student_maps, teacher_maps, strict=True)
  )
  as_jax = lambda maps: [jnp.array(m, jnp.float32) for m in maps]
  got = losses.attention_transfer(as_jax(student_maps), as_jax(teacher_maps))
  assert float(got) == pytest.approx(expected, rel=1e-5)
  scaled = [3.0 * m for m in as_jax(student_maps)]
  assert float(losses.attention_transfer(scaled, as_jax(student_maps))) == pytest.approx(
    0.0, abs=1e-6
  )
  with pytest.raises(ValueError, match="same non-zero number"):
    losses.attention_transfer(as_jax(student_maps), as_jax(teacher_maps)[:1])


def test_info_nce_matches_numpy():
  rng = np.random.default_rng(1)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  query, key, queue = (unit(rng.standard_normal(shape)) for shape in [(3, 4), (3, 4), (5, 4)])
  logits = np.concatenate([(query * key).sum(-1, keepdims=True), query @ queue.T], axis=1) / 0.2
  per_example = np.log(np.exp(logits).sum(axis=1)) - logits[:, 0]
  got = losses.info_nce(*(jnp.array(a, jnp.float32) for a in (query, key, queue)), 0.2)
  assert float(got) == pytest.approx(per_example.mean(), rel=1e-5)
  masked = losses.info_nce(
    *(jnp.array(a, jnp.float32) for a in (query, key, queue)), 0.2, mask=jnp.array([0, 1, 1])
  )
  assert float(masked) == pytest.approx(per_example[1:].mean(), rel=1e-5)
  with pytest.raises(ValueError, match="queue"):
    losses.info_nce(jnp.array(query), jnp.array(key), jnp.zeros((5, 3)), 0.2)


@pytest.mark.parametrize(
  "hidden, layers", [(0, {"output": (24, 16)}), (32, {"hidden": (24, 32), "output": (32, 16)})]
)
def test_embed_head_is_the_codes_linear_or_the_papers_mlp(hidden, layers):
  head = EmbedHead(dim=16, hidden=hidden)
  features = jax.random.normal(jax.random.key(0), (4, 24))
  params = head.init(jax.random.key(1), features)
  shapes = {name: layer["kernel"].shape for name, layer in params["params"].items()}
  assert shapes == layers
  embeddings = head.apply(params, features)
  assert embeddings.shape == (4, 16)
  np.testing.assert_allclose(jnp.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-5)


def test_hint_regressor_maps_to_teacher_channels_and_length():
  regressor = HintRegressor(channels=12)
  student_map = jax.random.normal(jax.random.key(0), (2, 50, 8))
  params = regressor.init(jax.random.key(1), student_map, 125)
  hinted = regressor.apply(params, student_map, 125)
  assert hinted.shape == (2, 125, 12)
  assert float(losses.fitnet(hinted, jnp.zeros_like(hinted))) > 0
