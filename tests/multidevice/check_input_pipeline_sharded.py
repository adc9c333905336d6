"""Pipeline batches assembled as global arrays over 8 (simulated CPU) devices.

Run by tests/test_multidevice.py in its own process with 8 devices.
"""

import jax
import numpy as np
from test_input_pipeline import IDENTITY, register

from lead_kt import input_pipeline as ip


def test_batches_are_sharded_over_eight_devices():
  assert jax.device_count() == 8
  cfg = register("multidevice", [120] * 60, [120] * 10, [120] * 11)
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = next(ip.train_iterator(cfg, IDENTITY, 16, sharding, seed=0))
  host = next(ip.train_iterator(cfg, IDENTITY, 16, None, seed=0))
  for key, value in batch.items():
    assert value.sharding == sharding and len(value.addressable_shards) == 8
    assert value.addressable_shards[0].data.shape[0] == 2
    np.testing.assert_array_equal(np.asarray(value), host[key])
  evaluated = list(ip.eval_batches(cfg, "test", IDENTITY, 16, sharding))
  assert len(evaluated) == 3  # 11 records x 4 windows = 44 windows
  assert float(jax.jit(lambda batches: sum(b["mask"].sum() for b in batches))(evaluated)) == 44
