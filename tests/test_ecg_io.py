"""Tests of lead_kt.ecg_io on real records (tests/fixtures) and on corrupted copies of them."""

import pathlib
import shutil
import warnings

import numpy as np
import pytest
import wfdb

from lead_kt import ecg_io

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(params=["header_parser", "wfdb_parser"])
def wfdb_reader(request, monkeypatch):
  """Runs a test on both WFDB read paths: ecg_io's own header parser and wfdb's."""
  if request.param == "wfdb_parser":
    monkeypatch.setattr(ecg_io, "_parse_simple_header", lambda header_path: None)
  return request.param


def _wfdb_physical(base: pathlib.Path) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return wfdb.rdrecord(str(base)).p_signal


def _copy_record(tmp_path: pathlib.Path, name: str, extensions=(".hea", ".dat")) -> pathlib.Path:
  for extension in extensions:
    shutil.copy(FIXTURES / (name + extension), tmp_path / (name + extension))
    (tmp_path / (name + extension)).chmod(0o644)
  return tmp_path / name


def test_reads_ptbxl_wfdb_record_equal_to_wfdb_physical_signal(wfdb_reader):
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  assert record.signal.shape == (1000, 12)
  assert record.signal.dtype == np.float32
  assert record.lead_names == ecg_io.STANDARD_LEADS  # Header says AVR/AVL/AVF.
  assert record.fs == 100.0
  assert record.path.endswith("00001_lr.hea")
  np.testing.assert_allclose(record.signal, _wfdb_physical(FIXTURES / "00001_lr"), atol=1e-6)
  assert np.isnan(record.meta["age"]) and record.meta["sex"] == -1


@pytest.mark.parametrize("suffix", ["", ".hea", ".dat"])
def test_path_may_carry_an_extension(suffix):
  record = ecg_io.read_record(str(FIXTURES / "00001_lr") + suffix)
  assert record.signal.shape == (1000, 12)


def test_challenge_mat_record_equals_ptbxl_500hz_record(wfdb_reader):
  challenge = ecg_io.read_record(FIXTURES / "HR00001.mat")
  ptbxl = ecg_io.read_record(FIXTURES / "00001_hr")
  assert challenge.signal.shape == (5000, 12) and challenge.fs == 500.0
  assert challenge.lead_names == ecg_io.STANDARD_LEADS
  np.testing.assert_array_equal(challenge.signal, ptbxl.signal)
  assert challenge.meta["age"] == 56.0 and challenge.meta["sex"] == 1
  assert challenge.meta["header_fields"]["Dx"] == "251146004,426783006"


def test_reads_original_cpsc_mat():
  record = ecg_io.read_record(FIXTURES / "A1980")
  assert record.signal.ndim == 2 and record.signal.shape[1] == 12
  assert record.signal.shape[0] >= 5000  # CPSC records last 10 to 60 s at 500 Hz.
  assert record.fs == 500.0
  assert record.lead_names == ecg_io.STANDARD_LEADS
  assert record.meta["sex"] == 0 and record.meta["age"] == 52.0
  raw = ecg_io.scipy.io.loadmat(FIXTURES / "A1980.mat")["ECG"]["data"][0, 0]
  np.testing.assert_allclose(record.signal, raw.T, rtol=1e-6)


@pytest.mark.parametrize(
  "name, canonical",
  [
    ("AVR", "aVR"),
    ("avl", "aVL"),
    ("aVF", "aVF"),
    ("Lead I", "I"),
    ("lead_ii", "II"),
    ("v6", "V6"),
  ],
)
def test_normalize_lead_name(name, canonical):
  assert ecg_io.normalize_lead_name(name) == canonical


def test_normalize_lead_name_rejects_unknown_names():
  with pytest.raises(ecg_io.EcgReadError, match="'Resp'"):
    ecg_io.normalize_lead_name("Resp")


def test_select_leads_reorders_by_canonical_name():
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  selected = ecg_io.select_leads(record, ["V1", "avr", "I"])
  np.testing.assert_array_equal(selected, record.signal[:, [6, 3, 0]])


def test_select_leads_names_the_missing_lead():
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  only_two = ecg_io.Record(record.signal[:, :2], ("I", "II"), 100.0, record.path, {})
  with pytest.raises(ecg_io.EcgReadError, match="lead V2 .*00001_lr|00001_lr.*lead V2"):
    ecg_io.select_leads(only_two, ["I", "V2"])


def test_resample_changes_length_by_the_rate_ratio_and_keeps_a_sine():
  fs_in, fs_out = 500, 100
  t = np.arange(5000) / fs_in
  signal = np.stack([np.sin(2 * np.pi * 1.0 * t)] * 2, axis=1)
  out = ecg_io.resample(signal, fs_in, fs_out)
  assert out.shape == (1000, 2) and out.dtype == np.float32
  expected = np.sin(2 * np.pi * 1.0 * np.arange(1000) / fs_out)
  np.testing.assert_allclose(out[50:-50, 0], expected[50:-50], atol=1e-2)
  assert ecg_io.resample(signal, 500, 360).shape == (3600, 2)
  np.testing.assert_array_equal(ecg_io.resample(signal, 500, 500.0), signal.astype(np.float32))


def test_truncated_dat_is_rejected(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr")
  data = (tmp_path / "00001_lr.dat").read_bytes()
  (tmp_path / "00001_lr.dat").write_bytes(data[:10000])
  with pytest.raises(ecg_io.EcgReadError, match=r"00001_lr\.dat.*truncated"):
    ecg_io.read_record(base)


def test_header_sample_count_mismatch_is_rejected(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  (tmp_path / "00001_lr.hea").write_text(
    header.replace("00001_lr 12 100 1000", "00001_lr 12 100 900")
  )
  with pytest.raises(ecg_io.EcgReadError, match=r"00001_lr\.dat.*longer than the header"):
    ecg_io.read_record(base)


def test_nan_samples_are_rejected(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr")
  samples = np.fromfile(tmp_path / "00001_lr.dat", dtype="<i2")
  samples[12 * 5 + 3] = -32768  # WFDB format 16's missing-sample value: wfdb returns NaN.
  samples.tofile(tmp_path / "00001_lr.dat")
  with pytest.raises(
    ecg_io.EcgReadError, match=r"00001_lr\.hea: 1 NaN/Inf samples .*sample 5, lead aVR"
  ):
    ecg_io.read_record(base)


def test_unreadable_mat_is_rejected(tmp_path):
  (tmp_path / "A0000.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
  with pytest.raises(ecg_io.EcgReadError, match=r"A0000\.mat: cannot read the MATLAB file"):
    ecg_io.read_record(tmp_path / "A0000.mat")


def test_mat_without_ecg_struct_or_header_is_rejected(tmp_path):
  shutil.copy(FIXTURES / "HR00001.mat", tmp_path / "HR00001.mat")
  with pytest.raises(ecg_io.EcgReadError, match=r"HR00001\.mat: not a CPSC2018 file"):
    ecg_io.read_record(tmp_path / "HR00001")


def test_missing_record_is_rejected(tmp_path):
  with pytest.raises(ecg_io.EcgReadError, match=r"nothing_here.*no ECG record found"):
    ecg_io.read_record(tmp_path / "nothing_here")


def test_missing_signal_file_is_rejected(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr", extensions=(".hea",))
  with pytest.raises(ecg_io.EcgReadError, match=r"00001_lr\.dat: signal file .* is missing"):
    ecg_io.read_record(base)


def test_unknown_lead_name_in_header_is_rejected(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  (tmp_path / "00001_lr.hea").write_text(header.replace(" V6\n", " Resp\n"))
  with pytest.raises(ecg_io.EcgReadError, match=r"00001_lr\.hea: unknown ECG lead name 'Resp'"):
    ecg_io.read_record(base)


def test_microvolt_units_are_converted_to_millivolts(tmp_path, wfdb_reader):
  base = _copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  # Same digital values, gain now per uV: physical values in uV are 1000x the mV ones, so mV equal.
  (tmp_path / "00001_lr.hea").write_text(header.replace("1000.0(0)/mV", "1.0(0)/uV"))
  record = ecg_io.read_record(base)
  reference = ecg_io.read_record(FIXTURES / "00001_lr")
  np.testing.assert_allclose(record.signal, reference.signal, rtol=1e-6)


def test_common_headers_take_the_fast_parser():
  for name in ("00001_lr", "00001_hr", "HR00001"):
    header = ecg_io._parse_simple_header(str(FIXTURES / f"{name}.hea"))
    assert header is not None and header.n_sig == 12


@pytest.mark.parametrize("num_workers", [1, 2])
def test_read_records_keeps_order_and_raises_the_first_bad_record(tmp_path, num_workers):
  paths = [FIXTURES / "00001_hr", FIXTURES / "00001_lr", FIXTURES / "A1980", tmp_path / "missing"]
  records = []
  with pytest.raises(ecg_io.EcgReadError, match="missing"):
    for record in ecg_io.read_records(paths, num_workers=num_workers, batch_size=1):
      records.append(record)
  assert [record.fs for record in records] == [500.0, 100.0, 500.0]
  assert records[2].path.endswith("A1980.mat")
