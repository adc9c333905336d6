"""Optimisers and learning-rate schedules (optax)."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw_onecycle", "adam_warmup_step")


def _warmup_multistep(cfg: ml_collections.ConfigDict, steps_per_epoch: int):
  """The MVKT code's ``adjust_learning_rate``, constant within an epoch: ``warmup_lr * (epoch + 1)``
  for the first ``warmup_epochs`` epochs, then ``learning_rate * decay_rate ** k`` after ``k`` of
  the ``milestones`` (epochs) have passed."""
  warmup_epochs = int(cfg.warmup_epochs)
  warmup_lr = (
    float(cfg.warmup_lr) if cfg.warmup_lr > 0 else cfg.learning_rate / max(1, warmup_epochs)
  )
  peak, decay_rate = float(cfg.learning_rate), float(cfg.decay_rate)
  milestones = sorted(int(m) for m in cfg.milestones)
  if any(m < 0 for m in milestones):
    raise ValueError(f"optimizer.milestones must be epochs >= 0, got {tuple(cfg.milestones)}")

  def schedule(step):
    epoch = jnp.asarray(step) // max(1, steps_per_epoch)
    passed = sum((epoch >= m).astype(jnp.int32) for m in milestones) if milestones else 0
    decayed = peak * jnp.power(decay_rate, passed)
    return jnp.where(epoch < warmup_epochs, warmup_lr * (epoch + 1), decayed).astype(jnp.float32)

  return schedule


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
  total_steps = max(1, steps_per_epoch * num_epochs)
  if cfg.name == "adamw_onecycle":
    # The PTB-XL benchmark's fit_one_cycle: cosine warm-up from lr/25 to lr, then cosine annealing.
    return optax.cosine_onecycle_schedule(
      transition_steps=total_steps, peak_value=cfg.learning_rate, pct_start=cfg.pct_start
    )
  if cfg.name == "adam_warmup_step":
    return _warmup_multistep(cfg, steps_per_epoch)
  raise ValueError(f"unknown optimizer {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")


def create(
  cfg: ml_collections.ConfigDict,
  steps_per_epoch: int,
  num_epochs: int,
  frozen: Callable[[Any], Any] | None = None,
):
  """Returns ``(optax transformation, schedule)``. ``frozen``: ``params -> pytree of bools``;
  the parameters it marks get no update (the linear probe's backbone)."""
  schedule = learning_rate_schedule(cfg, steps_per_epoch, num_epochs)
  if cfg.name == "adamw_onecycle":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  else:
    # torch.optim.Adam(weight_decay=wd), as the MVKT code: L2 added to the gradient before Adam's
    # moments (coupled), unlike AdamW's decoupled decay.
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(schedule))
  if cfg.clip_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), tx)
  if frozen is not None:
    # Outermost, so that frozen parameters get neither weight decay nor a share of the clipping
    # norm, and the optimiser keeps no moments for them.
    labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "trained", frozen(params))
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
