"""The CLT memory with banks sharded over 8 host devices gives the unsharded result.

Run by tests/test_multidevice.py in its own process with 8 simulated CPU devices.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lead_kt import memory as mem

NUM_ITEMS, DIM, BATCH, NUM_NEGATIVES = 64, 16, 16, 7


@jax.jit
def _step(memory, student, teacher, index, rng):
  contrast_idx = mem.sample_negatives(rng, index, NUM_NEGATIVES, memory, "other_class")
  loss, new_memory, aux = mem.clt_loss(memory, student, teacher, index, contrast_idx)
  return loss, new_memory, aux, contrast_idx


def test_clt_step_sharded_over_data_matches_unsharded():
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  rows = NamedSharding(mesh, PartitionSpec("data"))
  replicated = NamedSharding(mesh, PartitionSpec())
  keys = jax.random.split(jax.random.key(0), 4)
  labels = jax.random.randint(keys[0], (NUM_ITEMS,), -1, 5, jnp.int32)
  memory = mem.init_memory(keys[1], NUM_ITEMS, DIM, labels)
  embeddings = jax.random.normal(keys[2], (2, BATCH, DIM))
  student, teacher = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
  # Two duplicated indices (7 and 40) check that the winning write does not depend on sharding.
  index = jnp.array([7, 40, 3, 7, 12, 63, 0, 40, 21, 22, 23, 24, 50, 51, 52, 9], jnp.int32)

  expected = _step(memory, student, teacher, index, keys[3])
  # Banks, labels and the batch split by rows over "data"; the Z scalars replicated.
  sharded_inputs = jax.tree.map(
    lambda x: jax.device_put(x, rows if x.ndim else replicated), (memory, student, teacher, index)
  )
  assert len(sharded_inputs[0].student_bank.sharding.device_set) == 8
  got = _step(*sharded_inputs, keys[3])
  # Two steps, so the second runs with Z fixed and banks updated by the first.
  expected_second = _step(expected[1], student, teacher, index, keys[0])
  got_second = _step(got[1], *sharded_inputs[1:], keys[0])

  for want, have in ((expected, got), (expected_second, got_second)):
    np.testing.assert_array_equal(have[3], want[3])
    np.testing.assert_allclose(have[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(have[1].student_bank, want[1].student_bank, atol=1e-6)
    np.testing.assert_allclose(have[1].teacher_bank, want[1].teacher_bank, atol=1e-6)
    np.testing.assert_allclose(have[1].z_student, want[1].z_student, rtol=1e-5)
  # The last occurrence of a duplicated index wrote its row.
  row = 0.5 * memory.student_bank[7] + 0.5 * student[3]
  np.testing.assert_allclose(got[1].student_bank[7], row / jnp.linalg.norm(row), atol=1e-6)
