"""Fixtures shared by the test modules that need a trained run (predict, robustness)."""

import pytest
import run_fixture

from lead_kt import predict


@pytest.fixture(scope="session")
def run_dir():
  """A tiny real training run (see run_fixture.tiny_run), made once per test session."""
  return run_fixture.tiny_run()


@pytest.fixture(scope="session")
def predictor(run_dir):
  return predict.Predictor(run_dir)
