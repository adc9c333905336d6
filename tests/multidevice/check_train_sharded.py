"""The MVKT train step on 1 device and on 8 (simulated CPU) devices gives the same loss curve.

Run by tests/test_multidevice.py in its own process with 8 devices. The 8-device run also splits
the memory bank rows over the data axis (``clt.bank_sharding = "data"``).
"""

import functools

import jax
import numpy as np
from test_input_pipeline import IDENTITY, register
from train_helpers import tiny_config

from lead_kt import input_pipeline, methods, optim, sharding, train

STEPS = 6


def _loss_curve(num_devices: int, bank_sharding: str) -> list[dict]:
  config = tiny_config("mvkt", data_dir="unused", **{"clt.bank_sharding": bank_sharding})
  config.data = register("sharded_train", [300] * 64, [300] * 8, [300] * 8)
  config.mesh.num_devices = num_devices
  config.batch_size = 16
  mesh = sharding.make_mesh(1, num_devices)
  data_sharding = sharding.batch_sharding(mesh)
  info = input_pipeline.dataset_info(config.data)
  method = methods.create(config, info.num_classes, info.split_sizes["train"], None)
  batches = input_pipeline.train_iterator(config.data, IDENTITY, 16, data_sharding, seed=0)
  tx, schedule = optim.create(config.optimizer, batches.steps_per_epoch, config.num_epochs)
  example = next(input_pipeline.train_iterator(config.data, IDENTITY, 16, data_sharding, seed=0))
  init_fn = functools.partial(train._init_state, method, tx, example)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  shardings = train._state_shardings(method, abstract, mesh)
  state = jax.jit(init_fn, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = jax.jit(train._make_train_step(method, tx, schedule), out_shardings=(shardings, None))
  curve = []
  for _ in range(STEPS):
    state, scalars = step(state, train._model_inputs(next(batches)))
    curve.append({k: float(v) for k, v in scalars.items()})
  if bank_sharding == "data":
    bank = state.method_state["memory"].student_bank
    assert len(bank.sharding.device_set) == 8 and bank.addressable_shards[0].data.shape[0] == 8
  return curve


def test_one_and_eight_devices_give_the_same_loss_curve():
  assert jax.device_count() == 8
  single = _loss_curve(1, "replicated")
  eight = _loss_curve(8, "data")
  for one, many in zip(single, eight, strict=True):
    for key in ("loss", "bce", "mkd", "clt", "grad_norm"):
      np.testing.assert_allclose(many[key], one[key], rtol=2e-4, err_msg=key)
  assert single[-1]["loss"] != single[0]["loss"]
