"""Following an export's contract.json by hand gives predict's probabilities (issue 29).

The caller's side is written here from the contract's fields alone, as the README's "Using an
export outside lead_kt" tells it; the per-window function is the one that export serializes.
"""

import json
import pathlib
import warnings

import numpy as np
import pytest

from lead_kt import ecg_io, export, predict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def exported(predictor):
  """contract.json as written (through JSON) and the exported per-window function."""
  description = json.loads(json.dumps(export.contract(predictor, {})))
  return description, export.probabilities_fn(predictor)


def window_starts(description: dict, length: int, tail: bool = True) -> list[int]:
  """Where a caller cuts windows: every window_stride, then the tail window (if `tail`)."""
  last = max(length - description["window_length"], 0)
  return [*range(0, last, description["window_stride"]), *([last] if tail else [])]


def follow_contract(description: dict, per_window, signal: np.ndarray, tail=True) -> np.ndarray:
  """A caller's probabilities [C] of one record: signal [T, L] in mV at the contract's rate, its
  columns the contract's leads."""
  window = description["window_length"]
  padding = max(window - len(signal), 0)
  pad = np.broadcast_to(np.float32(description["pad_value_mv"]), (padding, signal.shape[1]))
  signal = np.concatenate([signal, pad])
  windows = [
    signal[start : start + window]
    for start in window_starts(description, len(signal) - padding, tail)
  ]
  probabilities = np.asarray(per_window(np.stack(windows)), np.float64)
  return {"max": np.max, "mean": np.mean}[description["window_aggregate"]](probabilities, axis=0)


@pytest.mark.parametrize("length", [960, 1000, 200])
def test_a_caller_following_the_contract_gets_predicts_probabilities(predictor, exported, length):
  description, per_window = exported
  assert description["tail_window"] == "aligned_to_end"
  assert "record's last sample" in description["tail_window_description"]
  record = ecg_io.read_record(FIXTURES / "00001_lr")  # PTB-XL record 1 at 100 Hz.
  assert record.fs == description["input"]["sampling_rate_hz"]
  leads = description["input"]["leads"]
  signal = ecg_io.select_leads(record, leads)[:length]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", predict.ShortRecordWarning)
    expected = predictor.predict_signal(signal, leads, record.fs)
  np.testing.assert_allclose(follow_contract(description, per_window, signal), expected, atol=1e-6)
  if length == 960:  # 9.6 s: the tail window covers the last 0.85 s, which no other window does.
    without_tail = follow_contract(description, per_window, signal, tail=False)
    assert np.abs(without_tail - expected).max() > 1e-4
