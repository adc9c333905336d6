"""Feature reconstruction (Qi et al., Sensors 2026, 26(10):2955): a single-lead student reconstructs
a frozen 12-lead teacher's features and fuses them with its own.

loss = BCE + recon_weight * reconstruction (+ mkd_weight * MKD on the teacher's logits). The network
is ``lead_kt.models.feature_recon.FeatureReconStudent``; its extractor is ``config.student``'s
backbone, the teacher any registered backbone (``teacher.backbone``: trained first, or the finished
run ``teacher.checkpoint``).

Targets (``recon.target``):
  tokens  the teacher's deepest feature map ``[B, T_t, C_t]`` (the last of its ``feature_maps``,
          before its pooling) averaged over time onto the student's N tokens: each student token
          gets the mean of the teacher's map over the same stretch of the crop, a step straddling
          a boundary weighted by its overlap (``time_pooling_matrix``). Compared token by token
          with the reconstructed tokens ``[B, N, C_t]``.
  pooled  the teacher's pooled feature ``[B, D_t]`` (what its classifier reads), compared with the
          mean of the reconstructed tokens (the first implementation's only target).
Overlap-weighted average pooling rather than linear interpolation: teacher maps are mostly finer
than the student's grid (fcn_wang keeps 249 steps of a 250-sample crop against 32 tokens), and
interpolation would read two of every ~8 steps (aliasing) where the average reads all of them; a
coarser map (xresnet1d101: 8 steps, net1d: 1) gives each token the step it lies in.
The student reconstructs in the teacher's channel space (its reconstructor ends in C_t or D_t
units), not through a projection of the targets: a learned target projection could shrink the
targets towards whatever is easy to predict, and the diagnostics would no longer measure the
teacher's own features.

``recon.target_norm`` puts the targets on one scale for every teacher, so that ``recon_weight``
means the same: ``layernorm`` standardises each target token (or pooled vector) over its channels,
without parameters; ``channel`` standardises each channel with its mean and standard deviation over
the train split's targets, fitted once by ``prepare`` with the frozen teacher and kept in
``state["target_stats"]``; ``none`` keeps the raw features (the first implementation).

``recon.stage1_epochs`` > 0 trains the reconstruction alone for that many epochs, then everything
jointly: the loss picks its terms by the step counter in ``state["schedule"]`` (one trace serves
both stages), so the classifier and the fusion get zero gradient in stage 1.

params: the whole student (extractor, reconstructor, fusion, classifier).
state: the student's batch statistics, the frozen teacher, and where configured the target
statistics and the stage schedule.
``predict`` returns ``logits`` [B, C] and, per example, the pooled reconstruction's
``recon_cosine`` and ``recon_rel_error`` (``||rec - target|| / ||target||``) and, for token targets,
``recon_token_cosine`` (the mean over tokens of each token's cosine) and ``recon_token_rel_error``
(over the example's whole token map: a per-token ratio explodes on near-silent tokens), all in the
normalised target space; the trainer averages them into results.json. ``diagnostics`` adds linear
probes on the test split (``linear_probe_auc``).

Ablations: ``fusion.kind = "none"`` classifies the reconstructed pooled feature alone (no fusion
params); ``recon_weight = 0`` drops the reconstruction term from the loss (it is still logged as
``recon``).
"""

import copy
import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lead_kt import losses, methods, metrics, sharding
from lead_kt.methods.base import RunStart
from lead_kt.methods.common import Network, build_backbone, per_record_aggregates
from lead_kt.models.feature_recon import FUSIONS, FeatureReconOutput, FeatureReconStudent

RECON_LOSSES = ("mse", "cosine")
TARGETS = ("tokens", "pooled")
TARGET_NORMS = ("layernorm", "channel", "none")
# Feature widths do not depend on the length; this one stands in when crops are whole records.
_PROBE_LENGTH = 1000
_EPS = 1e-12
# Added to variances before the square root, as BatchNorm does: a channel that never fires maps
# to 0 instead of dividing by 0.
_NORM_EPS = 1e-5
# The feature sets the linear probe compares (see FeatureRecon.probe_features).
PROBED = ("reconstructed", "student", "teacher")
# The recon options as the first implementation, which did not have them, ran.
FIRST_VERSION = {
  "target": "pooled",
  "target_norm": "none",
  "stage1_epochs": 0,
  "linear_probe": False,
  "probe_inverse_l2": 1.0,
}


def time_pooling_matrix(source_len: int, target_len: int) -> np.ndarray:
  """``[target_len, source_len]`` weights; row n averages the source steps lying in the n-th of
  ``target_len`` equal stretches of the time axis, each weighted by its overlap (rows sum to 1).

  An integer ratio gives adaptive average pooling, equal lengths the identity, and a shorter source
  is repeated (a target stretch inside one source step takes that step).
  """
  source = np.linspace(0.0, 1.0, source_len + 1)
  target = np.linspace(0.0, 1.0, target_len + 1)
  overlap = np.minimum(target[1:, None], source[None, 1:]) - np.maximum(
    target[:-1, None], source[None, :-1]
  )
  overlap = np.clip(overlap, 0.0, None)
  return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def pool_to_tokens(feature_map: jax.Array, num_tokens: int) -> jax.Array:
  """``[B, T, C]`` -> ``[B, num_tokens, C]`` (float32) by ``time_pooling_matrix``."""
  weights = jnp.asarray(time_pooling_matrix(feature_map.shape[1], num_tokens))
  return jnp.einsum("nt,btc->bnc", weights, feature_map.astype(jnp.float32))


def normalize_targets(targets: jax.Array, kind: str, stats: dict | None = None) -> jax.Array:
  """Targets ``[..., C]`` on a common scale: ``layernorm`` over C per token, ``channel`` with the
  train statistics ``stats`` (``mean`` and ``std`` [C]), ``none`` as they are."""
  targets = targets.astype(jnp.float32)
  if kind == "layernorm":
    mean = jnp.mean(targets, axis=-1, keepdims=True)
    variance = jnp.var(targets, axis=-1, keepdims=True)
    return (targets - mean) * jax.lax.rsqrt(variance + _NORM_EPS)
  if kind == "channel":
    return (targets - stats["mean"]) / stats["std"]
  if kind == "none":
    return targets
  raise ValueError(f"unknown recon.target_norm {kind!r}; known: {', '.join(TARGET_NORMS)}")


def channel_statistics(parts: Iterable[dict]) -> dict[str, np.ndarray]:
  """Per-channel ``mean`` and ``std`` (float32 [C]) of targets given as per-example moments.

  Each part holds ``count`` [B] (tokens of each example; 0 for padding), ``mean`` [B, C] and
  ``m2`` [B, C] (summed squared deviations from the example's mean); parts are merged exactly in
  float64 (Chan et al.'s pairwise update), so no sum of squares loses the variance to rounding.
  """
  count, mean, m2 = 0.0, 0.0, 0.0
  for part in parts:
    n = np.asarray(part["count"], np.float64)
    total = n.sum()
    if total == 0:
      continue
    part_mean = np.asarray(part["mean"], np.float64)
    batch_mean = (n[:, None] * part_mean).sum(axis=0) / total
    batch_m2 = np.asarray(part["m2"], np.float64).sum(axis=0)
    batch_m2 = batch_m2 + (n[:, None] * np.square(part_mean - batch_mean)).sum(axis=0)
    delta, merged = batch_mean - mean, count + total
    mean = mean + delta * total / merged
    m2 = m2 + batch_m2 + np.square(delta) * count * total / merged
    count = merged
  if count == 0:
    raise ValueError("feature_recon: no training window to fit the target statistics on")
  std = np.sqrt(m2 / count + _NORM_EPS)
  return {"mean": np.asarray(mean, np.float32), "std": std.astype(np.float32)}


def _per_example(values: jax.Array) -> jax.Array:
  """``[B, ...]`` -> ``[B]``: the mean over everything but the batch axis."""
  return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of feature vectors along the last axis: ``[..., D]`` -> ``[...]``."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.sum(losses.l2_normalize(a) * losses.l2_normalize(b), axis=-1)


def relative_error(reconstructed: jax.Array, target: jax.Array) -> jax.Array:
  """``||reconstructed - target|| / ||target||`` per example, over all but the batch axis; [B]."""
  rows = lambda x: x.astype(jnp.float32).reshape(x.shape[0], -1)
  reconstructed, target = rows(reconstructed), rows(target)
  error = jnp.linalg.norm(reconstructed - target, axis=-1)
  return error / jnp.maximum(jnp.linalg.norm(target, axis=-1), _EPS)


def reconstruction_loss(
  reconstructed: jax.Array, target: jax.Array, kind: str = "mse", mask: jax.Array | None = None
) -> jax.Array:
  """Scalar loss between features ``[B, D]`` or token maps ``[B, N, D]``: the mean squared error,
  or 1 - the cosine similarity (of each token, averaged over tokens).

  ``target`` (the teacher's) gets no gradient.
  """
  target = jax.lax.stop_gradient(target).astype(jnp.float32)
  if kind == "mse":
    per_example = _per_example(jnp.square(reconstructed.astype(jnp.float32) - target))
  elif kind == "cosine":
    per_example = 1.0 - _per_example(cosine_similarity(reconstructed, target))
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}; known: {', '.join(RECON_LOSSES)}")
  return losses.masked_mean(per_example, mask)


def linear_probe_auc(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  inverse_l2: float = 1.0,
) -> float | None:
  """Test macro-AUC of one L2-regularised logistic regression per class fitted on train.

  Features are standardised with the train statistics. A class without both labels in train gets
  a constant score; classes without both labels in test are left out of the average (as in
  lead_kt.metrics). None when no class can be scored.
  """
  scaler = StandardScaler().fit(train_x)
  train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
  scores = np.zeros(test_y.shape)
  for c in range(train_y.shape[1]):
    if np.all(train_y[:, c] == train_y[0, c]):
      continue
    model = LogisticRegression(C=inverse_l2, max_iter=1000).fit(train_x, train_y[:, c])
    scores[:, c] = model.decision_function(test_x)
  auc = metrics.per_class_auc(scores, test_y)
  return float(np.nanmean(auc)) if np.isfinite(auc).any() else None


@dataclasses.dataclass(frozen=True)
class FeatureRecon:
  student: Network  # a FeatureReconStudent
  teacher: Network
  cfg: ml_collections.ConfigDict  # the run config (recon_weight, recon, mkd_weight, mkd)
  name: str = "feature_recon"

  @property
  def mkd_temperature(self):
    return None if self.cfg.mkd.temperature <= 0 else self.cfg.mkd.temperature

  @property
  def token_targets(self) -> bool:
    return self.cfg.recon.target == "tokens"

  def init(self, rng, batch):
    rng_s, rng_t = jax.random.split(rng)
    params, stats = self.student.init(rng_s, batch["student"])
    teacher_params, teacher_stats = self.teacher.init(rng_t, batch["teacher"])
    # The trainer replaces this placeholder with the trained teacher's variables.
    state = {"student": stats, "teacher": {"params": teacher_params, "stats": teacher_stats}}
    width = self.student.module.teacher_dim
    if self.cfg.recon.target_norm == "channel":
      # The identity until `prepare` fits the train split's statistics.
      state["target_stats"] = {"mean": jnp.zeros(width), "std": jnp.ones(width)}
    if self.cfg.recon.stage1_epochs:
      # Joint from the start until `prepare` sets the stage-1 length in steps.
      zero = jnp.zeros((), jnp.int32)
      state["schedule"] = {"step": zero, "stage1_steps": zero}
    return params, state

  def prepare(self, params, state, run: RunStart):
    """Sets the stage-1 length and fits the channel statistics of the targets on train."""
    del params
    state = dict(state)
    if self.cfg.recon.stage1_epochs:
      stage1_steps = self.cfg.recon.stage1_epochs * run.steps_per_epoch
      state["schedule"] = {
        "step": np.zeros((), np.int32),  # a run starts at step 0
        "stage1_steps": np.asarray(stage1_steps, np.int32),
      }
    if self.cfg.recon.target_norm == "channel":
      state["target_stats"] = self.target_statistics(state["teacher"], run.batches("train"))
    return state

  def target_statistics(self, teacher: dict, batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """Per-channel mean and std of the raw targets over ``batches`` (evaluation batches)."""
    moments = jax.jit(self._target_moments)
    return channel_statistics(sharding.to_host(moments(teacher, batch)) for batch in batches)

  def _target_moments(self, teacher: dict, batch) -> dict:
    num_tokens = self._num_tokens(batch["student"]) if self.token_targets else 1
    targets, _ = self._raw_targets(teacher, batch["teacher"], num_tokens)
    tokens = targets if targets.ndim == 3 else targets[:, None]
    mean = jnp.mean(tokens, axis=1)
    m2 = jnp.sum(jnp.square(tokens - mean[:, None]), axis=1)
    return {"count": batch["mask"] * tokens.shape[1], "mean": mean, "m2": m2}

  def _num_tokens(self, student_input) -> int:
    """The extractor's token count for this input shape (shapes only, nothing is computed)."""
    extractor = self.student.module.extractor
    probe = jax.ShapeDtypeStruct(student_input.shape, student_input.dtype)
    out = jax.eval_shape(
      lambda x: extractor.init_with_output(jax.random.key(0), x, train=False)[0], probe
    )
    return out.feature_maps[-1].shape[1]

  def _raw_targets(self, teacher: dict, teacher_input, num_tokens: int):
    """The unnormalised targets (``[B, N, C_t]`` or ``[B, D_t]``) and the teacher's output."""
    t_out = self.teacher.frozen_apply(teacher, teacher_input)
    if self.token_targets:
      return pool_to_tokens(t_out.feature_maps[-1], num_tokens), t_out
    return t_out.features.astype(jnp.float32), t_out

  def targets(self, state, teacher_input, num_tokens: int):
    """The normalised targets and the teacher's output."""
    raw, t_out = self._raw_targets(state["teacher"], teacher_input, num_tokens)
    stats = state.get("target_stats")
    return normalize_targets(raw, self.cfg.recon.target_norm, stats), t_out

  def _reconstruction(self, out: FeatureReconOutput) -> jax.Array:
    return out.reconstructed_tokens if self.token_targets else out.reconstructed

  def loss(self, params, state, batch, rng):
    out, stats = self.student.train_apply(params, state["student"], batch["student"], rng)
    targets, t_out = self.targets(state, batch["teacher"], out.reconstructed_tokens.shape[1])
    mask = batch["mask"]
    bce = losses.bce_with_logits(out.logits, batch["label"], mask)
    recon = reconstruction_loss(self._reconstruction(out), targets, self.cfg.recon.loss, mask)
    terms = {"bce": bce, "recon": recon}
    reconstruction = self.cfg.recon_weight * recon
    total = reconstruction + bce
    if self.cfg.mkd_weight:
      terms["mkd"] = losses.mkd(
        out.logits, t_out.logits, self.cfg.mkd.variant, self.mkd_temperature, mask
      )
      total = total + self.cfg.mkd_weight * terms["mkd"]
    new_state = {**state, "student": stats}
    if self.cfg.recon.stage1_epochs:
      schedule = state["schedule"]
      total = jnp.where(schedule["step"] >= schedule["stage1_steps"], total, reconstruction)
      new_state["schedule"] = {**schedule, "step": schedule["step"] + 1}
    return total, (new_state, terms)

  def _outputs(self, params, state, batch):
    """The student's eval-mode output and the normalised targets."""
    out = self.student.eval_apply(params, state["student"], batch["student"])
    targets, _ = self.targets(state, batch["teacher"], out.reconstructed_tokens.shape[1])
    return out, targets

  def predict(self, params, state, batch):
    out, targets = self._outputs(params, state, batch)
    outputs = {"logits": out.logits}
    pooled_target = targets
    if self.token_targets:
      tokens = out.reconstructed_tokens
      outputs["recon_token_cosine"] = jnp.mean(cosine_similarity(tokens, targets), axis=1)
      outputs["recon_token_rel_error"] = relative_error(tokens, targets)
      pooled_target = jnp.mean(targets, axis=1)
    outputs["recon_cosine"] = cosine_similarity(out.reconstructed, pooled_target)
    outputs["recon_rel_error"] = relative_error(out.reconstructed, pooled_target)
    return outputs

  def probe_features(self, params, state, batch) -> dict[str, jax.Array]:
    """Per-window features ``[B, D]`` for the linear probes: the reconstructed pooled teacher
    feature, the extractor's own pooled features, and the (normalised) teacher target itself."""
    out, targets = self._outputs(params, state, batch)
    pooled_target = jnp.mean(targets, axis=1) if self.token_targets else targets
    return {
      "reconstructed": out.reconstructed,
      "student": out.own_features,
      "teacher": pooled_target,
    }

  def diagnostics(self, params, state, batches) -> dict:
    """Linear probes fitted on the train records and scored on the test records (the mean of each
    record's window features): do the reconstructed features carry more diagnosis than the
    student's own? The teacher's target features give the ceiling."""
    if not self.cfg.recon.linear_probe:
      return {}
    features = jax.jit(self.probe_features)
    extract = lambda split: per_record_aggregates(
      lambda b: features(params, state, b), batches(split)
    )
    (train_x, train_y), (test_x, test_y) = extract("train"), extract("test")
    inverse_l2 = self.cfg.recon.probe_inverse_l2
    auc = {
      name: linear_probe_auc(train_x[name], train_y, test_x[name], test_y, inverse_l2)
      for name in PROBED
    }
    return {"linear_probe": {"fit_split": "train", "score_split": "test", "macro_auc": auc}}

  def export_network(self, params, state) -> dict:
    """The whole FeatureReconStudent (extractor, reconstructor, fusion, classifier)."""
    return {"params": params, "stats": state["student"]}


def teacher_target_dim(teacher: Network, length: int, target: str = "tokens") -> int:
  """Width of the teacher features reconstructed, from shapes only: the channels of the teacher's
  deepest feature map (``tokens``) or its pooled feature width (``pooled``)."""
  probe = jax.ShapeDtypeStruct((1, length, 12), jnp.float32)
  out = jax.eval_shape(
    lambda x: teacher.module.init_with_output(jax.random.key(0), x, train=False)[0], probe
  )
  return out.feature_maps[-1].shape[-1] if target == "tokens" else out.features.shape[-1]


def validate(config) -> None:
  recon = config.recon
  methods.check_choice("recon.loss", recon.loss, RECON_LOSSES)
  methods.check_choice("recon.target", recon.target, TARGETS)
  methods.check_choice("recon.target_norm", recon.target_norm, TARGET_NORMS)
  methods.check_choice("fusion.kind", config.fusion.kind, FUSIONS)
  methods.check_choice("mkd.variant", config.mkd.variant, losses.MKD_VARIANTS)
  for field in ("recon_weight", "mkd_weight"):
    if config[field] < 0:
      raise ValueError(f"feature_recon: {field} must be >= 0, got {config[field]}")
  stage1 = recon.stage1_epochs
  if not isinstance(stage1, int) or not 0 <= stage1 < config.num_epochs:
    raise ValueError(
      f"feature_recon: recon.stage1_epochs must be an integer in [0, num_epochs = "
      f"{config.num_epochs}), got {stage1!r} (stage 2, the joint training, needs an epoch)"
    )
  if stage1 and config.recon_weight == 0:
    raise ValueError("feature_recon: recon.stage1_epochs > 0 trains nothing with recon_weight = 0")
  if recon.probe_inverse_l2 <= 0:
    raise ValueError(
      f"feature_recon: recon.probe_inverse_l2 must be > 0, got {recon.probe_inverse_l2}"
    )


def with_first_version_defaults(config) -> ml_collections.ConfigDict:
  """``config`` with the ``recon`` fields it lacks set as the first version ran: the config of a
  run written before they existed (e.g. read back by lead_kt.predict) rebuilds that run's network
  and state."""
  missing = {k: v for k, v in FIRST_VERSION.items() if k not in config.recon}
  if not missing:
    return config
  config = copy.deepcopy(config)
  with config.unlocked():
    config.recon.update(missing)
  return config


def create(config, num_classes, num_train, train_first_labels):
  del num_train, train_first_labels
  config = with_first_version_defaults(config)
  teacher = Network(build_backbone(config.teacher, num_classes))
  # The extractor's own head is unused; num_classes only keeps its constructor uniform.
  extractor = build_backbone(config.student, num_classes)
  recon, fusion = config.recon, config.fusion
  length = config.data.crop_len or _PROBE_LENGTH
  module = FeatureReconStudent(
    extractor=extractor,
    num_classes=num_classes,
    teacher_dim=teacher_target_dim(teacher, length, recon.target),
    recon_d_model=recon.d_model,
    recon_layers=recon.num_layers,
    recon_heads=recon.num_heads,
    recon_mlp_dim=recon.mlp_dim,
    recon_dropout=recon.dropout,
    fusion=fusion.kind,
    fusion_heads=fusion.num_heads,
    fusion_mlp_dim=fusion.mlp_dim,
    fusion_dropout=fusion.dropout,
    dtype=extractor.dtype,
  )
  return FeatureRecon(Network(module), teacher, config)
