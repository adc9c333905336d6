"""Feature reconstruction: a single-lead student reconstructs a frozen 12-lead teacher's features.

loss = BCE + recon_weight * reconstruction (+ mkd_weight * MKD on the teacher's logits), where the
reconstruction loss compares the student's reconstructed pooled teacher feature ``[B, D_t]`` with
the frozen teacher's pooled feature of the same 12-lead crop (MSE, or 1 - cosine similarity).
The network is ``lead_kt.models.feature_recon.FeatureReconStudent``.

params: the whole student (extractor, reconstructor, fusion, classifier).
state: the student's batch statistics and the frozen teacher.
``predict`` returns ``logits`` [B, C] and, per example, ``recon_cosine`` [B] and
``recon_rel_error`` [B] (``||rec - true|| / ||true||``) against the teacher; the trainer averages
them into results.json.

Ablations: ``fusion.kind = "none"`` classifies the reconstructed feature alone (no fusion params);
``recon_weight = 0`` drops the reconstruction term from the loss (it is still logged as ``recon``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from lead_kt import losses, methods
from lead_kt.methods.common import Network, build_backbone
from lead_kt.models.feature_recon import FUSIONS, FeatureReconStudent

RECON_LOSSES = ("mse", "cosine")
# Feature widths do not depend on the length; this one stands in when crops are whole records.
_PROBE_LENGTH = 1000
_EPS = 1e-12


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example cosine similarity of ``[B, D]`` rows; ``[B]``."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.sum(losses.l2_normalize(a) * losses.l2_normalize(b), axis=-1)


def relative_error(reconstructed: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example ``||reconstructed - target|| / ||target||`` of ``[B, D]`` rows; ``[B]``."""
  reconstructed, target = reconstructed.astype(jnp.float32), target.astype(jnp.float32)
  error = jnp.linalg.norm(reconstructed - target, axis=-1)
  return error / jnp.maximum(jnp.linalg.norm(target, axis=-1), _EPS)


def reconstruction_loss(
  reconstructed: jax.Array, target: jax.Array, kind: str = "mse", mask: jax.Array | None = None
) -> jax.Array:
  """Scalar loss between ``[B, D]`` features: mean squared error over D, or 1 - cosine similarity.

  ``target`` (the teacher's) gets no gradient.
  """
  target = jax.lax.stop_gradient(target).astype(jnp.float32)
  if kind == "mse":
    per_example = jnp.mean(jnp.square(reconstructed.astype(jnp.float32) - target), axis=-1)
  elif kind == "cosine":
    per_example = 1.0 - cosine_similarity(reconstructed, target)
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}; known: {', '.join(RECON_LOSSES)}")
  return losses.masked_mean(per_example, mask)


@dataclasses.dataclass(frozen=True)
class FeatureRecon:
  student: Network  # a FeatureReconStudent
  teacher: Network
  cfg: ml_collections.ConfigDict  # the run config (recon_weight, recon.loss, mkd_weight, mkd)
  name: str = "feature_recon"

  @property
  def mkd_temperature(self):
    return None if self.cfg.mkd.temperature <= 0 else self.cfg.mkd.temperature

  def init(self, rng, batch):
    rng_s, rng_t = jax.random.split(rng)
    params, stats = self.student.init(rng_s, batch["student"])
    teacher_params, teacher_stats = self.teacher.init(rng_t, batch["teacher"])
    # The trainer replaces this placeholder with the trained teacher's variables.
    teacher = {"params": teacher_params, "stats": teacher_stats}
    return params, {"student": stats, "teacher": teacher}

  def loss(self, params, state, batch, rng):
    out, stats = self.student.train_apply(params, state["student"], batch["student"], rng)
    t_out = self.teacher.frozen_apply(state["teacher"], batch["teacher"])
    mask = batch["mask"]
    bce = losses.bce_with_logits(out.logits, batch["label"], mask)
    recon = reconstruction_loss(out.reconstructed, t_out.features, self.cfg.recon.loss, mask)
    terms = {"bce": bce, "recon": recon}
    total = bce + self.cfg.recon_weight * recon
    if self.cfg.mkd_weight:
      terms["mkd"] = losses.mkd(
        out.logits, t_out.logits, self.cfg.mkd.variant, self.mkd_temperature, mask
      )
      total = total + self.cfg.mkd_weight * terms["mkd"]
    return total, ({"student": stats, "teacher": state["teacher"]}, terms)

  def predict(self, params, state, batch):
    out = self.student.eval_apply(params, state["student"], batch["student"])
    target = self.teacher.frozen_apply(state["teacher"], batch["teacher"]).features
    return {
      "logits": out.logits,
      "recon_cosine": cosine_similarity(out.reconstructed, target),
      "recon_rel_error": relative_error(out.reconstructed, target),
    }

  def export_network(self, params, state) -> dict:
    """The whole FeatureReconStudent (extractor, reconstructor, fusion, classifier)."""
    return {"params": params, "stats": state["student"]}


def teacher_feature_dim(teacher: Network, length: int) -> int:
  """Width D_t of the teacher's pooled features, from shapes only (nothing is computed)."""
  probe = jax.ShapeDtypeStruct((1, length, 12), jnp.float32)
  out = jax.eval_shape(
    lambda x: teacher.module.init_with_output(jax.random.key(0), x, train=False)[0], probe
  )
  return out.features.shape[-1]


def validate(config) -> None:
  methods.check_choice("recon.loss", config.recon.loss, RECON_LOSSES)
  methods.check_choice("fusion.kind", config.fusion.kind, FUSIONS)
  methods.check_choice("mkd.variant", config.mkd.variant, losses.MKD_VARIANTS)
  for field in ("recon_weight", "mkd_weight"):
    if config[field] < 0:
      raise ValueError(f"feature_recon: {field} must be >= 0, got {config[field]}")


def create(config, num_classes, num_train, train_first_labels):
  del num_train, train_first_labels
  teacher = Network(build_backbone(config.teacher, num_classes))
  # The extractor's own head is unused; num_classes only keeps its constructor uniform.
  extractor = build_backbone(config.student, num_classes)
  recon, fusion = config.recon, config.fusion
  module = FeatureReconStudent(
    extractor=extractor,
    num_classes=num_classes,
    teacher_dim=teacher_feature_dim(teacher, config.data.crop_len or _PROBE_LENGTH),
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
