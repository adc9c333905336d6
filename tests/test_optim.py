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


def test_warmup_then_step_decay_as_the_mvkt_code():
  cfg = _cfg(name="adam_warmup_step", learning_rate=1e-3, warmup_epochs=2, decay_epochs=3)
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=10, num_epochs=20)
  assert float(schedule(0)) == 0.0 and np.isclose(float(schedule(10)), 5e-4)
  assert np.isclose(float(schedule(20)), 1e-3)  # warm-up done
  assert np.isclose(float(schedule(20 + 29)), 1e-3) and np.isclose(float(schedule(20 + 30)), 1e-4)


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
