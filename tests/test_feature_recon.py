"""Feature reconstruction: shapes, frozen teacher, attention roles, training, ablations."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import build_method

from configs import feature_recon as feature_recon_config
from lead_kt import config_fields, methods
from lead_kt.methods import feature_recon
from lead_kt.models.feature_recon import CrossAttentionFusion

NUM_CLASSES = 3
BATCH = 4
LENGTH = 64


def _config(**overrides):
  c = feature_recon_config.get_config()
  c.data.crop_len = LENGTH
  c.student.kwargs.update(
    branch_features=4, d_model=16, num_layers=1, num_heads=2, mlp_dim=32, dropout=0.0
  )
  c.teacher.backbone = "fcn_wang"
  c.teacher.kwargs.update(filters=(8, 8, 12))  # D_t = 24
  c.recon.update(d_model=16, num_layers=1, num_heads=2, mlp_dim=32, dropout=0.0)
  c.fusion.update(num_heads=2, mlp_dim=32, dropout=0.0)
  config_fields.set_fields(c, overrides.items())
  return c


def _method(**overrides):
  return build_method(_config(**overrides), NUM_CLASSES)


def _batch():
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(BATCH, LENGTH, 12)).astype(np.float32)
  return {
    "teacher": jnp.asarray(teacher),
    "student": jnp.asarray(teacher[..., :1]),
    "label": jnp.asarray(rng.integers(0, 2, (BATCH, NUM_CLASSES)), jnp.float32),
    "index": jnp.arange(BATCH, dtype=jnp.int32),
    "mask": jnp.ones((BATCH,), jnp.float32),
  }


def _tree_keys(tree) -> set[str]:
  return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def initialized():
  """The default method with its variables, initialised once (compiling dominates these tests)."""
  method, batch = _method(), _batch()
  params, state = jax.jit(method.init)(jax.random.key(0), batch)
  return method, batch, params, state


def test_shapes_and_teacher_dim(initialized):
  method, batch, params, state = initialized

  @jax.jit
  def outputs(params, state, batch):
    student = method.student.eval_apply(params, state["student"], batch["student"])
    teacher = method.teacher.frozen_apply(state["teacher"], batch["teacher"])
    return student, teacher.features, method.predict(params, state, batch)

  out, teacher_features, predicted = outputs(params, state, batch)
  assert teacher_features.shape == (BATCH, 24)  # fcn_wang concat-pools its last 12 channels
  assert out.logits.shape == (BATCH, NUM_CLASSES)
  assert out.reconstructed.shape == (BATCH, 24)
  assert out.reconstructed_tokens.shape == (BATCH, LENGTH // 8, 24)
  assert out.features.shape == (BATCH, 16)  # the fused extractor tokens' width
  np.testing.assert_allclose(out.reconstructed, out.reconstructed_tokens.mean(axis=1), rtol=1e-5)
  assert set(predicted) == {"logits", "recon_cosine", "recon_rel_error"}
  np.testing.assert_allclose(predicted["logits"], out.logits, rtol=1e-5)
  assert predicted["recon_cosine"].shape == predicted["recon_rel_error"].shape == (BATCH,)
  expected_rel = np.linalg.norm(out.reconstructed - teacher_features, axis=-1) / np.linalg.norm(
    teacher_features, axis=-1
  )
  np.testing.assert_allclose(predicted["recon_rel_error"], expected_rel, rtol=1e-4)


def test_recon_metrics_and_losses():
  target = jnp.array([[3.0, 4.0], [1.0, 0.0]])
  reconstructed = jnp.array([[6.0, 8.0], [0.0, 2.0]])
  np.testing.assert_allclose(feature_recon.cosine_similarity(reconstructed, target), [1.0, 0.0])
  np.testing.assert_allclose(feature_recon.relative_error(reconstructed, target), [1.0, 5**0.5])
  mse = feature_recon.reconstruction_loss(reconstructed, target, "mse")
  np.testing.assert_allclose(mse, ((9 + 16) / 2 + (1 + 4) / 2) / 2)
  cosine = feature_recon.reconstruction_loss(reconstructed, target, "cosine", jnp.array([1.0, 0]))
  np.testing.assert_allclose(cosine, 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="reconstruction loss"):
    feature_recon.reconstruction_loss(reconstructed, target, "l1")


def test_teacher_is_frozen(initialized):
  _, batch, params, state = initialized
  method = _method(mkd_weight=1.0)
  assert "teacher" not in params and "extractor" in params
  grad_fn = jax.value_and_grad(method.loss, argnums=(0, 1), has_aux=True)
  (_, (new_state, terms)), (grad_params, grad_state) = jax.jit(grad_fn)(
    params, state, batch, jax.random.key(1)
  )
  assert set(terms) == {"bce", "recon", "mkd"}
  for leaf in jax.tree.leaves(grad_state["teacher"]):
    assert not np.any(leaf)
  assert np.abs(grad_params["reconstructor"]["to_teacher"]["kernel"]).sum() > 0
  jax.tree.map(np.testing.assert_array_equal, new_state["teacher"], state["teacher"])


def test_cross_attention_roles():
  fusion = CrossAttentionFusion(num_heads=2, mlp_dim=8, dropout=0.0)
  rng = np.random.default_rng(0)
  queries = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  context = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)
  variables = jax.jit(fusion.init)(jax.random.key(0), queries, context)
  apply = jax.jit(fusion.apply)
  out = apply(variables, queries, context)
  assert out.shape == queries.shape  # tokens and width follow the queries
  assert not np.allclose(apply(variables, queries, context + 1.0), out, atol=1e-3)
  # Queries are positions (permuting them permutes the output); keys/values are an unordered set.
  query_order, context_order = np.array([4, 2, 0, 1, 3]), np.array([2, 0, 1])
  np.testing.assert_allclose(
    apply(variables, queries[:, query_order], context), out[:, query_order], atol=1e-5
  )
  np.testing.assert_allclose(apply(variables, queries, context[:, context_order]), out, atol=1e-5)
  with pytest.raises(ValueError, match="not divisible"):
    jax.eval_shape(CrossAttentionFusion(num_heads=3).init, jax.random.key(0), queries, context)


def test_training_reduces_reconstruction_loss(initialized):
  _, batch, params, state = initialized
  method = _method(recon_weight=10.0)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, state):
    (_, (state, terms)), grads = jax.value_and_grad(method.loss, has_aux=True)(
      params, state, batch, jax.random.key(2)
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, state, terms["recon"]

  opt_state = tx.init(params)
  history = []
  for _ in range(40):
    params, opt_state, state, recon = step(params, opt_state, state)
    history.append(float(recon))
  assert history[-1] < 0.5 * history[0], history


def test_ablation_switches(initialized):
  _, batch, params, state = initialized
  rng = jax.random.key(0)
  assert "fusion" in params
  assert params["classifier"]["kernel"].shape == (16, NUM_CLASSES)  # reads the fused tokens

  no_fusion = _method(**{"fusion.kind": "none"})
  no_fusion_params, _ = jax.eval_shape(no_fusion.init, rng, batch)
  assert "fusion" not in no_fusion_params
  assert _tree_keys(no_fusion_params) < _tree_keys(params)
  # The classifier reads the reconstructed teacher feature (D_t = 24).
  assert no_fusion_params["classifier"]["kernel"].shape == (24, NUM_CLASSES)

  losses = {}
  for weights in ((1.0, 0.0), (0.0, 0.5)):
    method = _method(recon_weight=weights[0], mkd_weight=weights[1])
    losses[weights] = jax.jit(method.loss)(params, state, batch, rng)
  total, (_, terms) = losses[1.0, 0.0]
  assert set(terms) == {"bce", "recon"}
  np.testing.assert_allclose(total, terms["bce"] + terms["recon"], rtol=1e-6)
  total, (_, terms) = losses[0.0, 0.5]
  assert set(terms) == {"bce", "recon", "mkd"} and float(terms["recon"]) > 0
  np.testing.assert_allclose(total, terms["bce"] + 0.5 * terms["mkd"], rtol=1e-6)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"recon.loss": "l1"}, "recon.loss"),
    ({"fusion.kind": "concat"}, "fusion.kind"),
    ({"mkd.variant": "x"}, "mkd.variant"),
    ({"recon_weight": -1.0}, "recon_weight"),
  ],
)
def test_validate_rejects_bad_options(override, message):
  with pytest.raises(ValueError, match=message):
    methods.validate(_config(**override))


@pytest.mark.slow
def test_end_to_end_reports_reconstruction(tmp_path):
  from lead_kt import train

  config = _config()
  config.teacher.kwargs.filters = (16, 16, 16)
  config.update(num_epochs=1, batch_size=32, eval_batch_size=64)
  config.data.crop_len = 250
  results = train.train_and_evaluate(config, str(tmp_path))
  written = json.loads((tmp_path / "results.json").read_text())
  for split in ("validation", "test"):
    assert -1.0 <= written[split]["recon_cosine"] <= 1.0
    assert written[split]["recon_rel_error"] > 0
    assert "macro_auc" in written[split]
  assert written["teacher"]["method"] == "teacher"
  assert {"recon_cosine", "recon_rel_error", "macro_auc"} <= set(results["history"][0])
