"""lead_kt.data.preprocessing: ECGFounder's contract on a real 500 Hz record, checked against
scipy applied by hand as ECGFounder's ``util.filter_bandpass`` and ``dataset.py`` apply it; the
contract as an option of the input pipeline (data.preprocessing) and of predict."""

from pathlib import Path

import numpy as np
import pytest
from scipy import signal as scipy_signal

from lead_kt import ecg_io, input_pipeline, predict
from lead_kt.data import preprocessing

FIXTURE_500HZ = Path(__file__).parent / "fixtures" / "00001_hr"  # PTB-XL ecg_id 1, 10 s


def by_hand(ecg: np.ndarray, fs: float) -> np.ndarray:
  """ECGFounder's steps, lead by lead on a [leads, T] array as its code runs them."""
  leads = np.asarray(ecg, np.float64).T
  b, a = scipy_signal.iirnotch(50, 30, fs)
  notched = np.stack([scipy_signal.filtfilt(b, a, lead) for lead in leads])
  b, a = scipy_signal.butter(N=4, Wn=[0.67, 40], btype="bandpass", fs=fs)
  banded = np.stack([scipy_signal.filtfilt(b, a, lead) for lead in notched])
  baseline = np.stack([scipy_signal.medfilt(lead, kernel_size=201) for lead in banded])
  filtered = banded - baseline
  return ((filtered - np.mean(filtered)) / (np.std(filtered) + 1e-8)).T


@pytest.fixture(scope="module")
def record() -> ecg_io.Record:
  return ecg_io.read_record(FIXTURE_500HZ)


def test_ecgfounder_contract_is_scipy_applied_by_hand(record):
  contract = preprocessing.get("ecgfounder")
  assert (contract.fs, contract.record_seconds) == (500, 10)
  assert contract.leads == ("I", "II", "III", "aVR", "aVL", "aVF") + tuple(
    f"V{i}" for i in range(1, 7)
  )
  ecg = ecg_io.select_leads(record, contract.leads)
  assert ecg.shape == (5000, 12) and record.fs == 500
  out = contract.apply(ecg, record.fs)
  assert out.dtype == np.float32 and out.shape == ecg.shape
  np.testing.assert_allclose(out, by_hand(ecg, record.fs), atol=2e-6)
  assert abs(float(out.mean())) < 1e-6 and abs(float(out.std()) - 1.0) < 1e-5


def test_the_filter_removes_mains_and_baseline_and_keeps_the_band():
  fs, seconds = 500, 10
  time = np.arange(fs * seconds)[:, None] / fs
  in_band, mains, drift = (np.sin(2 * np.pi * f * time) for f in (10.0, 50.0, 0.1))
  out = preprocessing.ecgfounder_filter(np.tile(in_band + mains + 3 * drift, (1, 12)), fs)
  middle = slice(fs, -fs)  # away from the filters' edges

  def amplitude(x, frequency):
    return 2 * abs(np.mean(x[middle, 0] * np.exp(-2j * np.pi * frequency * time[middle, 0])))

  assert amplitude(out, 10.0) > 0.9
  assert amplitude(out, 50.0) < 1e-3 and amplitude(out, 0.1) < 0.05


def register_500hz(name: str, record: ecg_io.Record):
  """One 10 s record (scaled per split) in each split of an in-memory 500 Hz dataset; returns a
  data config reading it under the contract."""
  ecg = ecg_io.select_leads(record, ecg_io.STANDARD_LEADS).astype(np.float32)
  examples = [
    {
      "ecg": ecg * (1 + i),
      "label": np.ones(2, np.float32),
      "index": 0,
      "length": len(ecg),
      "strat_fold": fold,
      "ecg_id": i + 1,
    }
    for i, fold in enumerate((1, 9, 10))
  ]
  splits = dict(zip(("train", "validation", "test"), ([e] for e in examples), strict=True))
  input_pipeline.register_memory_dataset(name, splits, ["a", "b"], sampling_rate=500)
  cfg = input_pipeline.default_data_config()
  cfg.update(name=name, crop_len=5000, preprocessing="ecgfounder", normalization="none")
  return cfg


def with_fields(cfg, **fields):
  changed = cfg.copy_and_resolve_references()
  changed.update(fields)
  return changed


def test_the_pipeline_reads_records_through_the_contract(record):
  cfg = register_500hz("ecgfounder_500hz", record)
  split = input_pipeline.load_split(cfg, "train")
  crops, _ = split.crops(np.array([0]), np.array([0]), 5000)
  stored = ecg_io.select_leads(record, ecg_io.STANDARD_LEADS).astype(np.float32)
  np.testing.assert_array_equal(crops[0], preprocessing.ecgfounder(stored, 500))
  normalizer = input_pipeline.load_or_fit_normalizer(cfg, "/nonexistent/never/written.json")
  assert normalizer.kind == "none"
  np.testing.assert_array_equal(normalizer.apply(crops), crops)


def test_the_pipeline_refuses_a_contract_it_cannot_honour(record):
  cfg = register_500hz("ecgfounder_checks", record)
  with pytest.raises(ValueError, match="set data.normalization='none'"):
    input_pipeline.dataset_info(with_fields(cfg, normalization="global"))
  with pytest.raises(ValueError, match="unknown data.preprocessing 'ecg_founder'; known"):
    input_pipeline.load_split(with_fields(cfg, preprocessing="ecg_founder"), "train")
  input_pipeline.register_memory_dataset("at_100hz", {"train": []}, ["a"], sampling_rate=100)
  with pytest.raises(ValueError, match="needs records at 500 Hz, but 'at_100hz' stores 100 Hz"):
    input_pipeline.load_split(with_fields(cfg, name="at_100hz"), "train")


def test_predict_applies_the_contract_after_resampling(record):
  spec = predict.ModelSpec(
    method="teacher",
    class_names=("a",),
    input_leads=ecg_io.STANDARD_LEADS,
    student_leads=("I",),
    fs=500.0,
    crop_len=5000,
    stride=2500,
    aggregate="max",
    thresholds=np.zeros(1),
    mean=np.zeros(12, np.float32),
    inv_std=np.ones(12, np.float32),
    preprocessing=predict.RecordPreprocessing(contract="ecgfounder"),
    record_seconds=None,
  )
  ecg = ecg_io.select_leads(record, ecg_io.STANDARD_LEADS)
  at_250hz = ecg_io.resample(ecg, 500, 250)
  out = predict.preprocess_as_dataset(at_250hz, 250, spec)
  np.testing.assert_allclose(out, by_hand(ecg_io.resample(at_250hz, 250, 500), 500), atol=2e-6)
