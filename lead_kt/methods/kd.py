"""Distillation baselines of the MVKT paper's Table 1: KD, KD + FitNet, KD + attention transfer.

KD is the per-class Bernoulli KL at temperature T (``losses.kd_kl``). FitNet's hint is the deepest
feature map (student mapped to the teacher's channels and length by a 1x1 conv regressor); attention
transfer compares the attention maps of every stage the two networks have in common.
"""

import dataclasses

import jax
import ml_collections

from lead_kt import losses, methods
from lead_kt.methods.common import (
  Network,
  Teacher,
  build_backbone,
  build_teacher,
  distillation_diagnostics,
)
from lead_kt.models.heads import HintRegressor

VARIANTS = ("kd", "kd_fitnet", "kd_at")


@dataclasses.dataclass(frozen=True)
class Kd:
  student: Network
  teacher: Teacher
  cfg: ml_collections.ConfigDict
  name: str = "kd"

  @property
  def label_weight(self) -> float:
    # Runs from before the option have no label_weight in their stored config: 1 then.
    return self.cfg.get("label_weight", 1.0)

  def init(self, rng, batch):
    rng_s, rng_t, rng_r = jax.random.split(rng, 3)
    student_params, stats = self.student.init(rng_s, batch["student"])
    teacher_params, teacher_stats = self.teacher.init(rng_t, batch["teacher"])
    # The trainer replaces this placeholder with the trained teacher's variables.
    teacher = {"params": teacher_params, "stats": teacher_stats}
    params = {"student": student_params}
    if self.cfg.kd_variant == "kd_fitnet":
      s_map = self.student.eval_apply(student_params, stats, batch["student"]).feature_maps[-1]
      t_map = self.teacher.frozen_apply(teacher, batch["teacher"]).feature_maps[-1]
      regressor = HintRegressor(channels=t_map.shape[-1])
      params["regressor"] = regressor.init(rng_r, s_map, t_map.shape[-2])["params"]
    return params, {"student": stats, "teacher": teacher}

  def loss(self, params, state, batch, rng):
    s_out, s_stats = self.student.train_apply(
      params["student"], state["student"], batch["student"], rng
    )
    t_out = self.teacher.frozen_apply(state["teacher"], batch["teacher"], batch["index"])
    bce = losses.bce_with_logits(s_out.logits, batch["label"], batch["mask"])
    kd = losses.kd_kl(s_out.logits, t_out.logits, self.cfg.kd_temperature, batch["mask"])
    terms = {"bce": bce, "kd": kd}
    total = self.label_weight * bce + self.cfg.kd_weight * kd
    if self.cfg.kd_variant == "kd_fitnet":
      t_map = t_out.feature_maps[-1]
      regressor = HintRegressor(channels=t_map.shape[-1])
      hint = regressor.apply(
        {"params": params["regressor"]}, s_out.feature_maps[-1], t_map.shape[-2]
      )
      terms["fitnet"] = losses.fitnet(hint, t_map)
      total = total + self.cfg.fitnet_weight * terms["fitnet"]
    elif self.cfg.kd_variant == "kd_at":
      terms["at"] = losses.attention_transfer(s_out.feature_maps, t_out.feature_maps)
      total = total + self.cfg.at_weight * terms["at"]
    return total, ({"student": s_stats, "teacher": state["teacher"]}, terms)

  def predict(self, params, state, batch):
    out = self.student.eval_apply(params["student"], state["student"], batch["student"])
    return {"logits": out.logits}

  def evaluation_outputs(self, params, state, batch):
    """``predict``'s outputs and the student's agreement with its teacher, for validation (not
    in ``predict``, which export and inference trace: they must not carry the teacher)."""
    logits = self.predict(params, state, batch)["logits"]
    teacher = self.teacher.frozen_apply(state["teacher"], batch["teacher"])
    return {"logits": logits, **losses.agreement(logits, teacher.logits)}

  def diagnostics(self, params, state, batches) -> dict:
    variables = {"params": params["student"], "stats": state["student"]}
    return distillation_diagnostics(
      self.student, self.teacher, variables, state["teacher"], batches, self.cfg.data.eval_aggregate
    )

  def export_network(self, params, state) -> dict:
    return {"params": params["student"], "stats": state["student"]}


def validate(config) -> None:
  methods.check_choice("kd_variant", config.kd_variant, VARIANTS)


def create(config, num_classes, num_train, train_first_labels):
  del train_first_labels
  student = Network(build_backbone(config.student, num_classes))
  return Kd(student, build_teacher(config, num_classes, num_train), config)
