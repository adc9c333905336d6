"""Learning-rate schedules and optimiser options."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from lead_kt import optim


def _cfg(**fields) -> ml_collections.ConfigDict:
  cfg = default.get_config().optimizer
  cfg.update(fields)
  return cfg


def test_one_cycle_warms_up_to_the_peak_then_anneals():
  schedule = optim.learning_rate_schedule(_cfg(learning_rate=1e-2, pct_start=0.3), 10, 10)
  rates = np.array([float(schedule(step)) for step in range(100)])
  assert np.isclose(rates[0], 1e-2 / 25, rtol=1e-3)  # fastai's div_factor 25
  assert np.argmax(rates) == 30 and np.isclose(rates.max(), 1e-2, rtol=1e-3)
  assert rates[-1] < 1e-5


def test_warmup_then_milestones_as_the_mvkt_code():
  # transferring.py: 1e-4 * (epoch + 1) for 15 epochs, then 1e-3, x0.1 at epochs 40 and 70.
  cfg = _cfg(
    name="adam_warmup_step",
    learning_rate=1e-3,
    warmup_epochs=15,
    warmup_lr=1e-4,
    milestones=(40, 70),
  )
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=10, num_epochs=100)
  rate = lambda epoch, offset=0: float(schedule(epoch * 10 + offset))
  assert np.isclose(rate(0), 1e-4) and np.isclose(rate(0, 9), 1e-4)  # constant within an epoch
  assert np.isclose(rate(14, 9), 1.5e-3)  # the code's warm-up overshoots the base rate
  assert np.isclose(rate(15), 1e-3) and np.isclose(rate(39, 9), 1e-3)
  assert np.isclose(rate(40), 1e-4) and np.isclose(rate(69, 9), 1e-4)
  assert np.isclose(rate(70), 1e-5) and np.isclose(rate(99, 9), 1e-5)


def test_warmup_rate_defaults_to_a_linear_rise_to_the_base_rate():
  cfg = _cfg(name="adam_warmup_step", learning_rate=1e-3, warmup_epochs=4, milestones=())
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=5, num_epochs=10)
  rates = [float(schedule(epoch * 5)) for epoch in range(10)]
  np.testing.assert_allclose(rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3] + [1e-3] * 6, rtol=1e-6)


def test_adam_weight_decay_is_coupled_l2_as_torch():
  cfg = _cfg(name="adam_warmup_step", warmup_epochs=0, learning_rate=1e-3, weight_decay=0.5)
  tx, _ = optim.create(cfg, 1, 1)
  params = {"w": jnp.array([2.0, -4.0])}
  # A zero loss gradient still moves the weights: Adam normalises wd * w, a step of -lr * sign(w).
  updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]), [-1e-3, 1e-3], rtol=1e-4)


def test_teacher_run_takes_its_own_optimizer_fields():
  from configs import mvkt
  from lead_kt import train

  config = mvkt.get_config()
  config.teacher.optimizer.warmup_lr = 1e-3
  teacher = train.teacher_config(config)
  assert teacher.optimizer.warmup_lr == 1e-3 and config.optimizer.warmup_lr == 0.0
  config.teacher.optimizer.no_such_field = 1.0
  with pytest.raises(ValueError, match="optimizer.no_such_field"):
    train.teacher_config(config)


def _second_update(tx, grads_sequence):
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  for grads in grads_sequence:
    updates, state = tx.update(grads, state, params)
  return np.asarray(updates["w"])


def test_gradient_clipping_rescales_large_gradients_only():
  big, small = {"w": jnp.array([300.0, 400.0, 0.0])}, {"w": jnp.array([0.1, -0.2, 0.3])}
  clipped_big = {"w": big["w"] / 500.0}
  fields = dict(name="adam_warmup_step", warmup_epochs=0)
  with_clip, _ = optim.create(_cfg(clip_grad_norm=1.0, **fields), 1, 1)
  without, _ = optim.create(_cfg(clip_grad_norm=0.0, **fields), 1, 1)
  # Adam's second step depends on the scale of the first gradient, so clipping shows there.
  np.testing.assert_allclose(
    _second_update(with_clip, [big, small]),
    _second_update(without, [clipped_big, small]),
    rtol=1e-5,
  )
  assert not np.allclose(
    _second_update(without, [big, small]), _second_update(with_clip, [big, small])
  )


def test_unknown_optimizer_is_refused():
  with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
    optim.create(_cfg(name="sgd"), 10, 10)
