"""Pieces every method shares: building networks from config and applying them."""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lead_kt import metrics, models, sharding
from lead_kt.data.train import holdout_parts
from lead_kt.data.windows import aggregate_windows
from lead_kt.models import BackboneOutput

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_backbone(net_cfg: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """``net_cfg`` is ``config.student`` or ``config.teacher``: backbone name, dtype, kwargs."""
  dtype = getattr(net_cfg, "dtype", "float32")
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
  return models.get(net_cfg.backbone, num_classes, dtype=DTYPES[dtype], **net_cfg.kwargs.to_dict())


@dataclasses.dataclass(frozen=True)
class Network:
  """A backbone with its variables split into trainable ``params`` and ``batch_stats``."""

  module: nn.Module

  def init(self, rng: jax.Array, x: jax.Array) -> tuple[Any, dict]:
    variables = self.module.init({"params": rng, "dropout": rng}, x, train=False)
    return variables["params"], {"batch_stats": variables.get("batch_stats", {})}

  def train_apply(self, params, stats: dict, x, rng) -> tuple[BackboneOutput, dict]:
    """Train mode: dropout on, batch statistics updated; returns ``(output, new_stats)``."""
    out, updates = self.module.apply(
      {"params": params, **stats}, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )
    return out, {"batch_stats": updates.get("batch_stats", {})}

  def eval_apply(self, params, stats: dict, x) -> BackboneOutput:
    return self.module.apply({"params": params, **stats}, x, train=False)

  def frozen_apply(self, frozen: dict, x) -> BackboneOutput:
    """A frozen network (e.g. the teacher): eval mode, no gradient reaches ``frozen``."""
    frozen = jax.lax.stop_gradient(frozen)
    return jax.tree.map(
      jax.lax.stop_gradient, self.eval_apply(frozen["params"], frozen["stats"], x)
    )


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The frozen 12-lead teacher of a transfer method: one network (``single``) or ``parts``
  networks of one backbone with their variables stacked on a leading axis, each trained without
  one part of the train split (``data.holdout_part``).

  ``frozen_apply(frozen, x, index)`` gives, for ``oof`` and a batch of training records
  (``index``), each record's output from the member that did not see it; for ``ensemble``, or
  without ``index`` (validation, test), the mean of the members' outputs.
  """

  net: Network
  target: str = "single"
  # The part of every training record (holdout_parts); a tuple, since the method is hashed.
  part_of_record: tuple[int, ...] = ()
  parts: int = 1

  @property
  def module(self) -> nn.Module:
    return self.net.module

  def init(self, rng: jax.Array, x: jax.Array) -> tuple[Any, dict]:
    variables = self.net.init(rng, x)
    if self.target == "single":
      return variables
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (self.parts, *a.shape)), variables)

  def frozen_apply(self, frozen: dict, x, index=None) -> BackboneOutput:
    if self.target == "single":
      return self.net.frozen_apply(frozen, x)
    # One forward per member (a loop, not vmap: vmapped parameters make grouped convolutions).
    outputs = [
      self.net.frozen_apply(jax.tree.map(lambda a, k=k: a[k], frozen), x) for k in range(self.parts)
    ]
    if self.target == "oof" and index is not None:
      part = jnp.asarray(self.part_of_record, jnp.int32)[index]
      weights = (part[None, :] == jnp.arange(self.parts)[:, None]).astype(x.dtype)
    else:
      weights = jnp.full((self.parts, x.shape[0]), 1.0 / self.parts, x.dtype)

    def combine(*members):
      stacked = jnp.stack(members)
      w = weights.reshape(weights.shape + (1,) * (stacked.ndim - 2)).astype(stacked.dtype)
      return jnp.sum(stacked * w, axis=0)

    return jax.tree.map(combine, *outputs)


def build_teacher(config: ml_collections.ConfigDict, num_classes: int, num_train: int) -> Teacher:
  """The teacher of a transfer run: ``config.teacher.target`` over its backbone."""
  net = Network(build_backbone(config.teacher, num_classes))
  # Runs from before the option have no teacher.target in their stored config.
  target = config.teacher.get("target", "single")
  if target == "single":
    return Teacher(net)
  parts = config.teacher.oof_parts
  return Teacher(net, target, tuple(int(p) for p in holdout_parts(num_train, parts)), parts)


def per_record_aggregates(
  features: Callable[[dict], dict], batches: Iterator[dict], aggregate: str = "mean"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Each record's ``aggregate`` (mean, or max) over its windows of every ``features(batch)``
  output ``[B, D]``, and its labels; ``({name: [n, D]}, labels [n, C])`` in record order (padding
  windows dropped)."""
  chunks = [
    sharding.to_host({**features(batch), **{k: batch[k] for k in ("record", "mask", "label")}})
    for batch in batches
  ]
  joined = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  record, mask, labels = joined.pop("record"), joined.pop("mask"), joined.pop("label")
  num_records = int(record[mask > 0].max()) + 1
  means = {
    name: aggregate_windows(values, record, mask, num_records, aggregate)
    for name, values in joined.items()
  }
  # A record's windows share its labels.
  record_labels = aggregate_windows(labels, record, mask, num_records, "max")
  return means, record_labels.astype(labels.dtype)


def distillation_diagnostics(
  student: Network, teacher: Teacher, variables: dict, frozen: dict, batches, aggregate: str
) -> dict:
  """What a distilled student is taught and how closely it follows, per split (train, validation,
  test), on each record's probabilities (its windows aggregated as evaluation does): the teacher
  targets' macro-AUC (on train, each record's training target: its out-of-fold teacher's output
  where ``teacher.target`` is oof), the student's, their Bernoulli KL summed over classes and the
  share of decisions (at 0.5) they agree on. The teacher's train-versus-validation AUC says how
  much its targets are the labels; agreement on every split says whether training still buys
  agreement where it counts (big_vision's distillation evaluators track the same)."""

  @functools.partial(jax.jit, static_argnums=1)
  def probabilities(batch, on_train):
    s_logits = student.eval_apply(variables["params"], variables["stats"], batch["student"]).logits
    index = batch["index"] if on_train else None
    t_logits = teacher.frozen_apply(frozen, batch["teacher"], index).logits
    return {"student": jax.nn.sigmoid(s_logits), "teacher": jax.nn.sigmoid(t_logits)}

  report = {}
  for split in ("train", "validation", "test"):
    probs, labels = per_record_aggregates(
      lambda b, t=split == "train": probabilities(b, t), batches(split), aggregate
    )
    p_s, p_t = (np.clip(probs[k], 1e-7, 1 - 1e-7) for k in ("student", "teacher"))
    kl = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    names = [str(c) for c in range(labels.shape[1])]
    report[split] = {
      "teacher_macro_auc": metrics.evaluate_split(p_t, labels, names)["macro_auc"],
      "student_macro_auc": metrics.evaluate_split(p_s, labels, names)["macro_auc"],
      "teacher_kl": float(kl.sum(axis=1).mean()),
      "teacher_agreement": float(((p_s > 0.5) == (p_t > 0.5)).mean()),
    }
  return report
