"""The input pipeline with grain worker processes."""

import pytest
from test_input_pipeline import IDENTITY, assert_batches_equal, register, take

from lead_kt import input_pipeline as ip


@pytest.fixture
def cfg():
  return register("multiprocess", [120] * 60, [120] * 10, [120] * 11)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(cfg):
  in_process = take(ip.train_iterator(cfg, IDENTITY, 16, None, seed=4), 4)
  cfg.worker_count = 2
  iterator = ip.train_iterator(cfg, IDENTITY, 16, None, seed=4)
  try:
    assert_batches_equal(take(iterator, 4), in_process)
  finally:
    iterator.close()
