"""Feature reconstruction: targets, normalisation, stages, shapes, frozen teacher, attention roles,
training, ablations, diagnostics."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import build_method

from configs import feature_recon as feature_recon_config
from configs import feature_recon_baseline
from lead_kt import checkpoint, config_fields, input_pipeline, methods, models
from lead_kt.methods import common, feature_recon
from lead_kt.methods.base import RunStart
from lead_kt.models.feature_recon import CrossAttentionFusion

NUM_CLASSES = 3
BATCH = 4
LENGTH = 64
TOKENS = LENGTH // 8  # the tiny extractor's token count
POOLED_TARGET = {"recon.target": "pooled", "recon.target_norm": "none"}


def _config(**overrides):
  c = feature_recon_config.get_config()
  c.data.crop_len = LENGTH
  c.student.kwargs.update(
    branch_features=4, d_model=16, num_layers=1, num_heads=2, mlp_dim=32, dropout=0.0
  )
  c.teacher.backbone = "fcn_wang"
  c.teacher.kwargs.update(filters=(8, 8, 12))  # last map: 12 channels; pooled: D_t = 24
  c.recon.update(d_model=16, num_layers=1, num_heads=2, mlp_dim=32, dropout=0.0)
  c.fusion.update(num_heads=2, mlp_dim=32, dropout=0.0)
  config_fields.set_fields(c, overrides.items())
  return c


def _method(**overrides):
  return build_method(_config(**overrides), NUM_CLASSES)


def _batch(seed: int = 0, scale: float = 1.0, offset: float = 0.0):
  rng = np.random.default_rng(seed)
  teacher = (rng.normal(size=(BATCH, LENGTH, 12)) * scale + offset).astype(np.float32)
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


def test_time_pooling_matrix():
  np.testing.assert_allclose(feature_recon.time_pooling_matrix(4, 4), np.eye(4))
  # An integer ratio is adaptive average pooling.
  np.testing.assert_allclose(
    feature_recon.time_pooling_matrix(8, 2), np.kron(np.eye(2), np.full((1, 4), 0.25))
  )
  # 3 -> 2: the middle step straddles the boundary and is shared by its overlap.
  np.testing.assert_allclose(
    feature_recon.time_pooling_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-6
  )
  # A coarser source is repeated: each target stretch lies in one source step.
  np.testing.assert_allclose(
    feature_recon.time_pooling_matrix(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]]
  )
  for source, target in ((249, 32), (8, 32), (1, 32), (63, 125)):
    np.testing.assert_allclose(
      feature_recon.time_pooling_matrix(source, target).sum(axis=1), 1.0, rtol=1e-6
    )
  feature_map = np.random.default_rng(0).normal(size=(2, 8, 3)).astype(np.float32)
  pooled = feature_recon.pool_to_tokens(jnp.asarray(feature_map), 2)
  np.testing.assert_allclose(pooled, feature_map.reshape(2, 2, 4, 3).mean(axis=2), rtol=1e-5)


def test_normalize_targets():
  x = jnp.asarray(np.random.default_rng(0).normal(3.0, 5.0, size=(4, 6, 10)), jnp.float32)
  layer = feature_recon.normalize_targets(x, "layernorm")
  np.testing.assert_allclose(layer.mean(axis=-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(layer.std(axis=-1), 1.0, rtol=1e-3)
  stats = {"mean": jnp.arange(10.0), "std": jnp.full(10, 2.0)}
  np.testing.assert_allclose(
    feature_recon.normalize_targets(x, "channel", stats), (x - jnp.arange(10.0)) / 2, rtol=1e-5
  )
  np.testing.assert_array_equal(feature_recon.normalize_targets(x, "none"), x)
  with pytest.raises(ValueError, match="target_norm"):
    feature_recon.normalize_targets(x, "batch")


def _moments(tokens: np.ndarray, mask: np.ndarray) -> dict:
  mean = tokens.mean(axis=1)
  return {
    "count": mask * tokens.shape[1],
    "mean": mean,
    "m2": np.square(tokens - mean[:, None]).sum(axis=1),
  }


def test_channel_statistics_merge_batches_exactly_and_skip_padding():
  rng = np.random.default_rng(0)
  # A large offset: a plain sum of squares in float32 would lose the variance.
  batches = [rng.normal(1e3, 0.5, size=(5, 7, 3)) for _ in range(3)]
  masks = [np.ones(5), np.ones(5), np.array([1, 1, 0, 0, 0.0])]
  batches[2][2:] = 1e6  # padding rows must not count
  stats = feature_recon.channel_statistics(
    _moments(b.astype(np.float32), m) for b, m in zip(batches, masks, strict=True)
  )
  real = np.concatenate([batches[0], batches[1], batches[2][:2]]).reshape(-1, 3)
  np.testing.assert_allclose(stats["mean"], real.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats["std"], np.sqrt(real.var(axis=0) + 1e-5), rtol=1e-4)
  with pytest.raises(ValueError, match="no training window"):
    feature_recon.channel_statistics([_moments(batches[0], np.zeros(5))])


def test_prepare_fits_channel_statistics_on_train_only(initialized):
  _, _, params, state = initialized
  method = _method(**{"recon.target_norm": "channel"})
  splits = {"train": [_batch(1), _batch(2)], "test": [_batch(3, scale=10.0, offset=5.0)]}
  asked = []

  def batches(split):
    asked.append(split)
    return iter(splits[split])

  prepared = method.prepare(params, state, RunStart(steps_per_epoch=2, batches=batches))
  assert asked == ["train"]
  teacher = state["teacher"]

  def raw_targets(batch_list):
    # By hand: the teacher's last map pooled onto the student's 8 tokens, every channel's values.
    maps = [method.teacher.frozen_apply(teacher, b["teacher"]).feature_maps[-1] for b in batch_list]
    tokens = [np.asarray(feature_recon.pool_to_tokens(m, TOKENS)) for m in maps]
    return np.concatenate(tokens).reshape(-1, tokens[0].shape[-1])

  train, test = raw_targets(splits["train"]), raw_targets(splits["test"])
  stats = prepared["target_stats"]
  assert stats["mean"].shape == (12,)
  np.testing.assert_allclose(stats["mean"], train.mean(axis=0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["std"], np.sqrt(train.var(axis=0) + 1e-5), rtol=1e-4)
  assert not np.allclose(stats["std"], np.sqrt(test.var(axis=0) + 1e-5), rtol=0.1)
  # The loss and predict standardise with them: the train targets get mean 0 and std 1.
  train_input = jnp.concatenate([b["teacher"] for b in splits["train"]])
  targets, _ = jax.jit(method.targets, static_argnums=2)(prepared, train_input, TOKENS)
  assert targets.shape == (2 * BATCH, TOKENS, 12)
  np.testing.assert_allclose(targets.mean(axis=(0, 1)), 0.0, atol=1e-4)
  np.testing.assert_allclose(targets.std(axis=(0, 1)), 1.0, rtol=1e-2)


def test_stage_switch_gates_the_classifier_gradient(initialized):
  _, batch, params, state = initialized
  method = _method(**{"recon.stage1_epochs": 2, "num_epochs": 3})
  state = method.prepare(params, state, RunStart(steps_per_epoch=5, batches=None))
  assert int(state["schedule"]["stage1_steps"]) == 10
  traces = []

  @jax.jit
  def gradients(params, state):
    traces.append(1)
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    (total, (new_state, terms)), grads = grad_fn(params, state, batch, jax.random.key(1))
    return total, new_state, terms, grads

  def at_step(step):
    schedule = {**state["schedule"], "step": jnp.asarray(step, jnp.int32)}
    return gradients(params, {**state, "schedule": schedule})

  norm = lambda tree: float(optax.tree.norm(tree))
  total, new_state, terms, grads = at_step(9)  # the last step of stage 1
  assert int(new_state["schedule"]["step"]) == 10
  np.testing.assert_allclose(total, method.cfg.recon_weight * terms["recon"], rtol=1e-6)
  assert norm(grads["classifier"]) == 0 and norm(grads["fusion"]) == 0
  assert norm(grads["reconstructor"]) > 0 and norm(grads["extractor"]) > 0
  total, _, terms, grads = at_step(10)  # the first joint step
  np.testing.assert_allclose(total, terms["bce"] + terms["recon"], rtol=1e-6)
  assert norm(grads["classifier"]) > 0 and norm(grads["fusion"]) > 0
  assert len(traces) == 1  # one trace serves both stages


@pytest.mark.parametrize("backbone", models.registry.names())
def test_token_target_shapes_for_every_teacher_backbone(backbone):
  """Shapes only (jax.eval_shape): every registered teacher's deepest map lands on the student's
  32 tokens of a 250-sample crop, in the teacher's channel space."""
  config = _config(**{"teacher.backbone": backbone, "data.crop_len": 250})
  config.teacher.kwargs = type(config.teacher.kwargs)()  # the backbone's own defaults
  method = build_method(config, NUM_CLASSES)
  batch = {
    "teacher": jax.ShapeDtypeStruct((2, 250, 12), jnp.float32),
    "student": jax.ShapeDtypeStruct((2, 250, 1), jnp.float32),
    "label": jax.ShapeDtypeStruct((2, NUM_CLASSES), jnp.float32),
    "index": jax.ShapeDtypeStruct((2,), jnp.int32),
    "mask": jax.ShapeDtypeStruct((2,), jnp.float32),
  }
  params, state = jax.eval_shape(method.init, jax.random.key(0), batch)
  teacher_out = jax.eval_shape(method.teacher.frozen_apply, state["teacher"], batch["teacher"])
  channels = teacher_out.feature_maps[-1].shape[-1]
  targets, _ = jax.eval_shape(lambda s, x: method.targets(s, x, 32), state, batch["teacher"])
  assert targets.shape == (2, 32, channels)
  out = jax.eval_shape(method.student.eval_apply, params, state["student"], batch["student"])
  assert out.reconstructed_tokens.shape == targets.shape
  total, _ = jax.eval_shape(method.loss, params, state, batch, jax.random.key(0))
  assert total.shape == ()


def test_shapes_and_teacher_dim(initialized):
  method, batch, params, state = initialized

  @jax.jit
  def outputs(params, state, batch):
    student = method.student.eval_apply(params, state["student"], batch["student"])
    teacher = method.teacher.frozen_apply(state["teacher"], batch["teacher"])
    targets, _ = method.targets(state, batch["teacher"], TOKENS)
    return student, teacher, targets, method.predict(params, state, batch)

  out, teacher, targets, predicted = outputs(params, state, batch)
  assert teacher.feature_maps[-1].shape == (BATCH, LENGTH - 1, 12)
  assert targets.shape == (BATCH, TOKENS, 12)  # the teacher's channels on the student's tokens
  assert out.logits.shape == (BATCH, NUM_CLASSES)
  assert out.reconstructed_tokens.shape == (BATCH, TOKENS, 12)
  assert out.reconstructed.shape == (BATCH, 12)
  assert out.features.shape == out.own_features.shape == (BATCH, 16)
  np.testing.assert_allclose(out.reconstructed, out.reconstructed_tokens.mean(axis=1), rtol=1e-5)
  assert set(predicted) == {
    "logits",
    "recon_cosine",
    "recon_rel_error",
    "recon_token_cosine",
    "recon_token_rel_error",
  }
  np.testing.assert_allclose(predicted["logits"], out.logits, rtol=1e-5)
  pooled = targets.mean(axis=1)
  expected_rel = np.linalg.norm(out.reconstructed - pooled, axis=-1) / np.linalg.norm(
    pooled, axis=-1
  )
  np.testing.assert_allclose(predicted["recon_rel_error"], expected_rel, rtol=1e-4)
  token_error = out.reconstructed_tokens - targets
  expected_token_rel = np.sqrt((token_error**2).sum(axis=(1, 2)) / (targets**2).sum(axis=(1, 2)))
  np.testing.assert_allclose(predicted["recon_token_rel_error"], expected_token_rel, rtol=1e-4)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  expected_cos = (unit(out.reconstructed_tokens) * unit(targets)).sum(-1).mean(-1)
  np.testing.assert_allclose(predicted["recon_token_cosine"], expected_cos, rtol=1e-4, atol=1e-6)


def test_pooled_target_is_the_first_implementation(initialized):
  _, batch, _, _ = initialized
  variant = feature_recon_config.get_config("pooled")
  assert (variant.recon.target, variant.recon.target_norm, variant.recon_weight) == (
    "pooled",
    "none",
    0.05,
  )
  with pytest.raises(ValueError, match="variant"):
    feature_recon_config.get_config("tokens")
  method = _method(**POOLED_TARGET)
  params, state = jax.jit(method.init)(jax.random.key(0), batch)
  assert params["reconstructor"]["to_teacher"]["kernel"].shape[-1] == 24  # fcn_wang's pooled width

  @jax.jit
  def check(params, state):
    out = method.student.eval_apply(params, state["student"], batch["student"])
    teacher = method.teacher.frozen_apply(state["teacher"], batch["teacher"])
    return out, teacher.features, method.predict(params, state, batch)

  out, teacher_features, predicted = check(params, state)
  assert set(predicted) == {"logits", "recon_cosine", "recon_rel_error"}
  expected_rel = np.linalg.norm(out.reconstructed - teacher_features, axis=-1) / np.linalg.norm(
    teacher_features, axis=-1
  )
  np.testing.assert_allclose(predicted["recon_rel_error"], expected_rel, rtol=1e-4)
  # The config of a run written before the options existed (as lead_kt.predict reads it back)
  # rebuilds that first version, with the same variables.
  old_run = _config()
  for field in ("target", "target_norm", "stage1_epochs", "linear_probe", "probe_inverse_l2"):
    del old_run.recon[field]
  rebuilt = methods.create(old_run, NUM_CLASSES, 32, None)
  assert (rebuilt.cfg.recon.target, rebuilt.cfg.recon.target_norm) == ("pooled", "none")
  old_params, old_state = jax.eval_shape(rebuilt.init, jax.random.key(0), batch)
  assert jax.tree.map(lambda a: a.shape, (old_params, old_state)) == jax.tree.map(
    lambda a: a.shape, (params, state)
  )


def test_recon_metrics_and_losses():
  target = jnp.array([[3.0, 4.0], [1.0, 0.0]])
  reconstructed = jnp.array([[6.0, 8.0], [0.0, 2.0]])
  np.testing.assert_allclose(feature_recon.cosine_similarity(reconstructed, target), [1.0, 0.0])
  np.testing.assert_allclose(feature_recon.relative_error(reconstructed, target), [1.0, 5**0.5])
  mse = feature_recon.reconstruction_loss(reconstructed, target, "mse")
  np.testing.assert_allclose(mse, ((9 + 16) / 2 + (1 + 4) / 2) / 2)
  cosine = feature_recon.reconstruction_loss(reconstructed, target, "cosine", jnp.array([1.0, 0]))
  np.testing.assert_allclose(cosine, 0.0, atol=1e-6)
  # Token maps [B, N, D]: the cosine loss averages each token's cosine.
  tokens = jnp.stack([reconstructed, reconstructed])  # example 0: tokens (6, 8) and (0, 2)
  token_target = jnp.stack([target, target])
  np.testing.assert_allclose(
    feature_recon.reconstruction_loss(tokens, token_target, "cosine"), 0.5, atol=1e-6
  )
  np.testing.assert_allclose(feature_recon.reconstruction_loss(tokens, token_target, "mse"), mse)
  with pytest.raises(ValueError, match="reconstruction loss"):
    feature_recon.reconstruction_loss(reconstructed, target, "l1")


def test_linear_probe_separates_informative_from_noise_features():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(200, 2)).astype(np.float32)
  labels[:, 1] = 0  # a class without positives in train is scored as a constant
  informative = labels[:, :1] * 2.0 + rng.normal(size=(200, 3))
  noise = rng.normal(size=(200, 3))
  test_labels = labels[100:].copy()
  test_labels[0, 1] = 1  # both labels in test: class 1 is averaged in, at AUC 0.5
  probe = lambda x: feature_recon.linear_probe_auc(x[:100], labels[:100], x[100:], test_labels)
  assert probe(informative) > 0.7  # (class 0 ~ 0.9 + class 1 at 0.5) / 2
  assert abs(probe(noise) - 0.5) < 0.1


def test_per_record_aggregates():
  batches = [
    {
      "record": jnp.array([0, 0, 1, 0]),
      "mask": jnp.array([1.0, 1.0, 1.0, 0.0]),
      "label": jnp.array([[1.0], [1.0], [0.0], [1.0]]),
      "x": jnp.array([[1.0], [3.0], [5.0], [100.0]]),
    },
    {
      "record": jnp.array([2, 1]),
      "mask": jnp.ones(2),
      "label": jnp.array([[1.0], [0.0]]),
      "x": jnp.array([[7.0], [9.0]]),
    },
  ]
  means, labels = common.per_record_aggregates(lambda b: {"x": b["x"]}, iter(batches))
  np.testing.assert_allclose(means["x"], [[2.0], [7.0], [7.0]])
  np.testing.assert_array_equal(labels, [[1.0], [0.0], [1.0]])


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
  method, batch, params, state = initialized
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
  # The classifier reads the reconstructed teacher feature (the last map's 12 channels).
  assert no_fusion_params["classifier"]["kernel"].shape == (12, NUM_CLASSES)

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


def test_same_extractor_baseline_builds_the_students_extractor():
  baseline = feature_recon_baseline.get_config()
  recon = feature_recon_config.get_config()
  assert baseline.method == "baseline"
  assert baseline.student == recon.student and baseline.optimizer == recon.optimizer
  method = build_method(recon, NUM_CLASSES)
  baseline_net = build_method(baseline, NUM_CLASSES).net.module
  extractor = method.student.module.extractor
  assert type(baseline_net) is type(extractor) and baseline_net == extractor
  x = jnp.zeros((1, 250, 1))
  shapes = lambda module: jax.tree.map(
    lambda a: a.shape, jax.eval_shape(module.init, jax.random.key(0), x)
  )
  assert shapes(baseline_net) == shapes(extractor)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"recon.loss": "l1"}, "recon.loss"),
    ({"recon.target": "maps"}, "recon.target"),
    ({"recon.target_norm": "batch"}, "recon.target_norm"),
    ({"recon.stage1_epochs": 30}, "stage1_epochs"),
    ({"recon.stage1_epochs": -1}, "stage1_epochs"),
    ({"recon.stage1_epochs": 2, "recon_weight": 0.0}, "stage1_epochs"),
    ({"recon.probe_inverse_l2": 0.0}, "probe_inverse_l2"),
    ({"fusion.kind": "concat"}, "fusion.kind"),
    ({"mkd.variant": "x"}, "mkd.variant"),
    ({"recon_weight": -1.0}, "recon_weight"),
  ],
)
def test_validate_rejects_bad_options(override, message):
  with pytest.raises(ValueError, match=message):
    methods.validate(_config(**override))


@pytest.mark.slow
def test_end_to_end_channel_targets_stages_and_diagnostics(tmp_path):
  """Teacher, then 2 student epochs (1 of reconstruction alone) with train-fitted channel
  statistics, on the bundled sample: diagnostics in results.json, statistics from train only."""
  from lead_kt import train

  config = _config(
    **{"recon.target_norm": "channel", "recon.stage1_epochs": 1, "teacher.num_epochs": 1}
  )
  config.teacher.kwargs.filters = (16, 16, 16)
  config.data.data_dir = str(tmp_path / "tfds")
  config.update(num_epochs=2, batch_size=32, eval_batch_size=64)
  config.data.crop_len = 250
  config.checkpoint.async_save = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  written = json.loads((tmp_path / "run" / "results.json").read_text())
  for split in ("validation", "test"):
    for key in ("recon_cosine", "recon_token_cosine"):
      assert -1.0 <= written[split][key] <= 1.0
    for key in ("recon_rel_error", "recon_token_rel_error"):
      assert written[split][key] > 0
    assert "macro_auc" in written[split]
  probe = written["diagnostics"]["linear_probe"]
  assert (probe["fit_split"], probe["score_split"]) == ("train", "test")
  for name in ("reconstructed", "student", "teacher"):
    assert 0.0 <= probe["macro_auc"][name] <= 1.0
  assert written["teacher"]["method"] == "teacher"
  assert len(results["history"]) == 2

  # The stored statistics are those of the teacher's targets on the train split, not test's.
  student_dir = tmp_path / "run" / "student"
  num_classes = len(written["class_names"])
  method = build_method(config, num_classes)
  info = input_pipeline.dataset_info(config.data)
  example = {
    "teacher": jnp.zeros((1, 250, 12)),
    "student": jnp.zeros((1, 250, 1)),
    "label": jnp.zeros((1, num_classes)),
    "index": jnp.zeros((1,), jnp.int32),
    "mask": jnp.ones((1,)),
  }
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
    dict(
      zip(
        ("params", "method_state"),
        jax.eval_shape(method.init, jax.random.key(0), example),
        strict=True,
      )
    ),
  )
  best = checkpoint.load_best_model(str(student_dir), abstract)["method_state"]
  assert int(best["schedule"]["stage1_steps"]) == info.split_sizes["train"] // 32
  normalizer = input_pipeline.load_or_fit_normalizer(
    config.data, str(student_dir / "normalization.json")
  )
  fitted = {
    split: method.target_statistics(
      best["teacher"], input_pipeline.eval_batches(config.data, split, normalizer, 64, None)
    )
    for split in ("train", "test")
  }
  for key in ("mean", "std"):
    np.testing.assert_allclose(best["target_stats"][key], fitted["train"][key], rtol=1e-5)
  assert not np.allclose(best["target_stats"]["mean"], fitted["test"]["mean"], rtol=1e-2)
