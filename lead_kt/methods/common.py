"""Pieces every method shares: building networks from config and applying them."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lead_kt import models
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
