"""Optimisers and learning-rate schedules (optax)."""

import ml_collections
import optax

OPTIMIZERS = ("adamw_onecycle", "adam_warmup_step")


def learning_rate_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
  total_steps = max(1, steps_per_epoch * num_epochs)
  if cfg.name == "adamw_onecycle":
    # The PTB-XL benchmark's fit_one_cycle: cosine warm-up from lr/25 to lr, then cosine annealing.
    return optax.cosine_onecycle_schedule(
      transition_steps=total_steps, peak_value=cfg.learning_rate, pct_start=cfg.pct_start
    )
  if cfg.name == "adam_warmup_step":
    # The MVKT code: linear warm-up, then the rate multiplied by decay_rate every decay_epochs.
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, max(1, warmup_steps))
    decay = optax.exponential_decay(
      cfg.learning_rate,
      transition_steps=max(1, cfg.decay_epochs * steps_per_epoch),
      decay_rate=cfg.decay_rate,
      staircase=True,
    )
    return optax.join_schedules([warmup, decay], [warmup_steps])
  raise ValueError(f"unknown optimizer {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")


def create(cfg: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
  """Returns ``(optax transformation, schedule)``."""
  schedule = learning_rate_schedule(cfg, steps_per_epoch, num_epochs)
  if cfg.name == "adamw_onecycle":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  else:
    tx = optax.adam(schedule)
  if cfg.clip_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), tx)
  return tx, schedule
