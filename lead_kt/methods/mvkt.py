"""MVKT-ECG: BCE + alpha * multi-label KD (MKD) + beta * contrastive lead-information transfer.

params: the student backbone and the two embedding heads (student side, teacher side: both trained).
state: the student's batch statistics, the frozen teacher, and the contrastive memory (two banks of
[num_train, dim] with their Z, or a FIFO queue), read and updated inside the jitted step.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from lead_kt import losses, memory, methods, sharding
from lead_kt.methods.common import (
  Network,
  Teacher,
  build_backbone,
  build_teacher,
  distillation_diagnostics,
)
from lead_kt.models.heads import EmbedHead

MEMORIES = ("bank", "queue")
NEGATIVES = ("uniform", "other_class")
# The class that other_class negatives must differ in: the record's first label (REFERENCE.csv's
# First_label for ICBEB2018, the lowest positive class for PTB-XL), or, as the MVKT code does for
# PTB-XL, bit 0 of the multi-hot label (a bug there: it splits the records by one class only).
CLASS_KEYS = ("first_label", "bit0")


@dataclasses.dataclass(frozen=True)
class Mvkt:
  student: Network
  teacher: Teacher
  cfg: ml_collections.ConfigDict  # the run config (alpha, beta, mkd, clt)
  num_train: int
  # First label of each training record, for other_class negatives. A tuple, not an array: the
  # method object is hashed when its bound methods are jitted.
  train_first_labels: tuple[int, ...] | None = None
  # Bank rows are padded to a multiple of this (the data axis, when the rows are split over it).
  bank_rows_multiple: int = 1
  name: str = "mvkt"

  @property
  def embed(self) -> EmbedHead:
    return EmbedHead(dim=self.cfg.clt.embed_dim, hidden=self.cfg.clt.head_hidden)

  @property
  def mkd_temperature(self):
    return None if self.cfg.mkd.temperature <= 0 else self.cfg.mkd.temperature

  @property
  def label_weight(self) -> float:
    # Runs from before the option have no label_weight in their stored config: 1 then.
    return self.cfg.get("label_weight", 1.0)

  def init(self, rng, batch):
    rng_s, rng_t, rng_es, rng_et, rng_m = jax.random.split(rng, 5)
    params, stats = self.student.init(rng_s, batch["student"])
    teacher_params, teacher_stats = self.teacher.init(rng_t, batch["teacher"])
    # The trainer replaces this placeholder with the trained teacher's variables.
    teacher = {"params": teacher_params, "stats": teacher_stats}
    s_feat = self.student.eval_apply(params, stats, batch["student"]).features
    t_feat = self.teacher.frozen_apply(teacher, batch["teacher"]).features
    params = {
      "student": params,
      "embed_student": self.embed.init(rng_es, s_feat)["params"],
      "embed_teacher": self.embed.init(rng_et, t_feat)["params"],
    }
    clt = self.cfg.clt
    if clt.memory == "bank":
      labels = self.train_first_labels
      labels = None if labels is None else jnp.asarray(labels, jnp.int32)
      mem = memory.init_memory(
        rng_m, self.num_train, clt.embed_dim, labels, rows_multiple=self.bank_rows_multiple
      )
    else:
      mem = memory.init_queue(rng_m, clt.queue_size, clt.embed_dim)
    return params, {"student": stats, "teacher": teacher, "memory": mem}

  def loss(self, params, state, batch, rng):
    rng_drop, rng_neg = jax.random.split(rng)
    s_out, s_stats = self.student.train_apply(
      params["student"], state["student"], batch["student"], rng_drop
    )
    t_out = self.teacher.frozen_apply(state["teacher"], batch["teacher"], batch["index"])
    bce = losses.bce_with_logits(s_out.logits, batch["label"], batch["mask"])
    mkd = losses.mkd(
      s_out.logits, t_out.logits, self.cfg.mkd.variant, self.mkd_temperature, batch["mask"]
    )
    s_emb = self.embed.apply({"params": params["embed_student"]}, s_out.features)
    t_emb = self.embed.apply({"params": params["embed_teacher"]}, t_out.features)
    clt_cfg = self.cfg.clt
    if clt_cfg.memory == "bank":
      contrast_idx = memory.sample_negatives(
        rng_neg,
        batch["index"],
        clt_cfg.num_negatives,
        state["memory"],
        mode=clt_cfg.negatives,
      )
      clt, new_memory, aux = memory.clt_loss(
        state["memory"],
        s_emb,
        t_emb,
        batch["index"],
        contrast_idx,
        temperature=clt_cfg.temperature,
        momentum=clt_cfg.momentum,
        mask=batch["mask"],
        positive=clt_cfg.positive,
        form=clt_cfg.loss,
      )
    else:
      clt, new_memory, aux = memory.queue_loss(state["memory"], s_emb, t_emb, clt_cfg.temperature)
    total = self.label_weight * bce + self.cfg.alpha * mkd + self.cfg.beta * clt
    new_state = {"student": s_stats, "teacher": state["teacher"], "memory": new_memory}
    return total, (new_state, {"bce": bce, "mkd": mkd, "clt": clt, **aux})

  def predict(self, params, state, batch):
    out = self.student.eval_apply(params["student"], state["student"], batch["student"])
    return {"logits": out.logits}

  def evaluation_outputs(self, params, state, batch):
    """``predict``'s outputs and the student's agreement with its teacher, for validation (not
    in ``predict``, which export and inference trace: they must not carry the teacher)."""
    logits = self.predict(params, state, batch)["logits"]
    teacher = self.teacher.frozen_apply(state["teacher"], batch["teacher"])
    return {"logits": logits, **losses.agreement(logits, teacher.logits)}

  def state_shardings(self, state, mesh):
    """Replicated, except the bank rows split over the data axis when ``bank_sharding="data"``."""
    rep = sharding.replicated(mesh)
    shardings = jax.tree.map(lambda _: rep, state)
    if self.cfg.clt.memory == "bank" and self.cfg.clt.bank_sharding == "data":
      rows = NamedSharding(mesh, PartitionSpec(sharding.DATA_AXIS))
      shardings["memory"] = shardings["memory"].replace(student_bank=rows, teacher_bank=rows)
    return shardings

  def diagnostics(self, params, state, batches) -> dict:
    variables = {"params": params["student"], "stats": state["student"]}
    return distillation_diagnostics(
      self.student, self.teacher, variables, state["teacher"], batches, self.cfg.data.eval_aggregate
    )

  def export_network(self, params, state) -> dict:
    return {"params": params["student"], "stats": state["student"]}


def validate(config) -> None:
  methods.check_choice("mkd.variant", config.mkd.variant, losses.MKD_VARIANTS)
  methods.check_choice("clt.memory", config.clt.memory, MEMORIES)
  methods.check_choice("clt.negatives", config.clt.negatives, NEGATIVES)
  methods.check_choice("clt.positive", config.clt.positive, memory.POSITIVES)
  methods.check_choice("clt.loss", config.clt.loss, memory.LOSS_FORMS)
  methods.check_choice("clt.class_key", config.clt.class_key, CLASS_KEYS)
  if config.clt.head_hidden < 0:
    raise ValueError(
      f"clt.head_hidden must be >= 0 (0 = one linear layer), got {config.clt.head_hidden}"
    )
  methods.check_choice("clt.bank_sharding", config.clt.bank_sharding, ("replicated", "data"))


def create(config, num_classes, num_train, train_first_labels):
  student = Network(build_backbone(config.student, num_classes))
  teacher = build_teacher(config, num_classes, num_train)
  first = None
  if config.clt.negatives == "other_class":
    first = tuple(int(v) for v in train_first_labels)
    if config.clt.class_key == "bit0":
      # The lowest positive class is 0 exactly when bit 0 is set: two groups, as in the code.
      first = tuple(0 if label == 0 else 1 for label in first)
  rows_multiple = 1
  if config.clt.bank_sharding == "data":
    rows_multiple = sharding.data_axis_size(config.mesh.model, config.mesh.num_devices)
  return Mvkt(student, teacher, config, num_train, first, rows_multiple)
