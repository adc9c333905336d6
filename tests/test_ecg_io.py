"""Tests of lead_kt.ecg_io on real records (tests/fixtures) and on corrupted copies of them."""

import pathlib
import shutil
import warnings

import numpy as np
import pyedflib
import pytest
import scipy.io
import wfdb

from lead_kt import ecg_io
from lead_kt.ecg_io import wfdb_format

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
# Two real PhysioNet/CinC Challenge 2021 records (Georgia, Ningbo), headers written `16x1+24`.
CHALLENGE_2021 = FIXTURES.parents[1] / "data_builders" / "physionet2021" / "dummy_data"
# The project's real CPSC2018 files, in ../shared/data beside the repository.
SHARED_CPSC2018 = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cpsc2018"


@pytest.fixture(params=["header_parser", "wfdb_parser"])
def wfdb_reader(request, monkeypatch):
  """Runs a test on both WFDB read paths: ecg_io's own header parser and wfdb's."""
  if request.param == "wfdb_parser":
    monkeypatch.setattr(wfdb_format, "_parse_simple_header", lambda header_path: None)
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
  raw = scipy.io.loadmat(FIXTURES / "A1980.mat")["ECG"]["data"][0, 0]
  np.testing.assert_allclose(record.signal, raw.T, rtol=1e-6)


@pytest.mark.skipif(
  not (SHARED_CPSC2018 / "challenge2020_early").is_dir(),
  reason=f"needs the real-data folder {SHARED_CPSC2018} beside the repository",
)
def test_reads_the_first_challenge2020_release_whose_dx_holds_abbreviations(wfdb_reader):
  """Its headers write `#Dx: RBBB` where the later release writes SNOMED codes (read by predict)."""
  early = SHARED_CPSC2018 / "challenge2020_early"
  found = ecg_io.find_records(early)
  assert [pathlib.Path(path).name for path in found] == [f"A{i:04d}.hea" for i in range(1, 101)]
  records = list(ecg_io.read_records(found))
  assert all(r.fs == 500.0 and r.lead_names == ecg_io.STANDARD_LEADS for r in records)
  assert records[0].meta["header_fields"]["Dx"] == "RBBB"
  assert records[42].meta["header_fields"]["Dx"] == "AF,RBBB"  # A0043
  assert (records[0].meta["age"], records[0].meta["sex"]) == (74.0, 0)
  snomed = ecg_io.read_record(SHARED_CPSC2018 / "wfdb" / "A0001")
  np.testing.assert_array_equal(records[0].signal, snomed.signal)


@pytest.mark.parametrize(
  "name, canonical",
  [
    ("AVR", "aVR"),
    ("avl", "aVL"),
    ("aVF", "aVF"),
    ("Lead I", "I"),
    ("lead_ii", "II"),
    ("v6", "V6"),
    # Wearable and Holter spellings (issue 29): numbered limb leads, MIT-BIH's modified leads.
    ("Lead 1", "I"),
    ("lead_2", "II"),
    ("ECG Lead 3", "III"),
    ("MLII", "II"),
    ("MLIII", "III"),
  ],
)
def test_normalize_lead_name(name, canonical):
  assert ecg_io.normalize_lead_name(name) == canonical


@pytest.mark.parametrize("name", ["Resp", "ECG", "value", "1", "ECG 1", "ML", "MLV1"])
def test_normalize_lead_name_rejects_unknown_names(name):
  # A bare number, or one after "ECG", numbers a channel, not a lead.
  with pytest.raises(ecg_io.EcgReadError, match=f"'{name}'"):
    ecg_io.normalize_lead_name(name)


def test_select_leads_reorders_by_canonical_name():
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  selected = ecg_io.select_leads(record, ["V1", "avr", "I"])
  np.testing.assert_array_equal(selected, record.signal[:, [6, 3, 0]])


def test_select_leads_names_the_missing_lead():
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  only_two = ecg_io.Record(record.signal[:, :2], ("I", "II"), 100.0, record.path, {})
  with pytest.raises(ecg_io.EcgReadError, match="lead V2 .*00001_lr|00001_lr.*lead V2"):
    ecg_io.select_leads(only_two, ["I", "V2"])


def test_select_leads_names_every_missing_lead_and_what_needs_them():
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  lead_i = ecg_io.Record(record.signal[:, :1], ("I",), 100.0, record.path, {})
  with pytest.raises(
    ecg_io.EcgReadError,
    match=r"00001_lr\.hea: the model reads all 12 leads; the record lacks leads II, III, aVR, "
    r"aVL, aVF, V1, V2, V3, V4, V5, V6 \(it has I\)",
  ):
    ecg_io.select_leads(lead_i, ecg_io.STANDARD_LEADS, needed_by="the model")


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


def test_a_non_ecg_channel_in_a_header_is_ignored_and_listed(tmp_path, wfdb_reader):
  # As in EDF (issue 29): Resp, in a unit no lead has, is left out, not a reason to refuse.
  base = _copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  (tmp_path / "00001_lr.hea").write_text(
    header.replace("/mV 16 0 -79 832 0 V6", "/Ohm 16 0 -79 832 0 Resp")
  )
  record = ecg_io.read_record(base)
  assert record.lead_names == ecg_io.STANDARD_LEADS[:11]
  assert record.meta["ignored_channels"] == ("Resp",)
  reference = ecg_io.read_record(FIXTURES / "00001_lr")
  np.testing.assert_array_equal(record.signal, reference.signal[:, :11])
  with pytest.raises(ecg_io.EcgReadError, match=r"lacks lead V6 .*not read as ECG leads: Resp"):
    ecg_io.select_leads(record, ["V6"])


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
    header = wfdb_format._parse_simple_header(str(FIXTURES / f"{name}.hea"))
    assert header is not None and header.n_sig == 12


@pytest.mark.parametrize("name", ["E07500", "JS20000"])
def test_challenge_2021_headers_take_the_fast_parser(name):
  """The 2021 release writes format 16 as `16x1+24` (one sample per frame, 24 bytes offset)."""
  header_path = CHALLENGE_2021 / f"{name}.hea"
  assert "16x1+24 " in header_path.read_text()
  header = wfdb_format._parse_simple_header(str(header_path))
  assert header is not None and header.n_sig == 12 and header.byte_offset == [24] * 12
  record = ecg_io.read_record(CHALLENGE_2021 / name)
  assert record.lead_names == ecg_io.STANDARD_LEADS and record.fs == 500.0
  assert record.signal.shape == (5000, 12)
  np.testing.assert_allclose(record.signal, _wfdb_physical(CHALLENGE_2021 / name), atol=1e-6)
  assert record.meta["header_fields"]["Dx"] and record.meta["sex"] in (0, 1)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_read_records_keeps_order_and_raises_the_first_bad_record(tmp_path, num_workers):
  paths = [FIXTURES / "00001_hr", FIXTURES / "00001_lr", FIXTURES / "A1980", tmp_path / "missing"]
  records = []
  with pytest.raises(ecg_io.EcgReadError, match="missing"):
    for record in ecg_io.read_records(paths, num_workers=num_workers, batch_size=1):
      records.append(record)
  assert [record.fs for record in records] == [500.0, 100.0, 500.0]
  assert records[2].path.endswith("A1980.mat")


# --- CSV and EDF (issue 9) ---


def _write_csv(path: pathlib.Path, header: str, rows: np.ndarray, delimiter: str = ",") -> None:
  lines = [header] + [delimiter.join(repr(float(v)) for v in row) for row in rows]
  path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_reads_csv_with_units_spellings_and_a_time_column(tmp_path, delimiter):
  reference = ecg_io.read_record(FIXTURES / "00001_lr")
  columns = np.column_stack(
    [np.arange(1000) / 100, reference.signal[:, 0], reference.signal[:, 3] * 1000]
  )
  header = delimiter.join(["time", '"Lead I"', "AVR (uV)"])
  _write_csv(tmp_path / "r.csv", header, columns, delimiter)
  record = ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)
  assert record.lead_names == ("I", "aVR") and record.fs == 100.0
  assert record.path == str(tmp_path / "r.csv")
  np.testing.assert_allclose(record.signal, reference.signal[:, [0, 3]], rtol=1e-6, atol=1e-7)


def test_csv_single_column_and_trailing_blank_lines(tmp_path):
  (tmp_path / "r.csv").write_text("V1 [mV]\n0.5\n-0.25\n1\n\n\n")
  record = ecg_io.read_record(tmp_path / "r.csv", csv_fs=250)
  assert record.lead_names == ("V1",)
  np.testing.assert_array_equal(record.signal[:, 0], [0.5, -0.25, 1.0])


@pytest.mark.parametrize(
  "text, pattern",
  [
    ("0.1,0.2\n0.3,0.4\n", r"r\.csv: the CSV file has no header row of lead names"),
    ("I,II\n0.1,0.2\n0.3,abc\n", r"r\.csv: row 3, column 'II': 'abc' is not a finite number"),
    ("I\n0.1\n\n0.3\n", r"r\.csv: row 3, column 'I': empty cell \(a missing sample\)"),
    ("I,I\n0.1,0.2\n", r"r\.csv: duplicate lead names"),
    ("I (furlong)\n0.1\n", r"r\.csv: unsupported physical unit 'furlong'"),
    ("time\n0.1\n", r"r\.csv: the CSV header names no ECG lead"),
    ("I\n", r"r\.csv: the record has no samples"),
  ],
)
def test_invalid_csv_is_rejected(tmp_path, text, pattern):
  (tmp_path / "r.csv").write_text(text)
  with pytest.raises(ecg_io.EcgReadError, match=pattern):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)


@pytest.fixture(scope="module")
def ptbxl_record():
  """PTB-XL record 1 at 100 Hz: 12 leads x 1000 samples in mV."""
  return ecg_io.read_record(FIXTURES / "00001_lr")


def _record_csv(path: pathlib.Path, record: ecg_io.Record) -> list[str]:
  """Writes the record as a 12-column CSV file; returns its lines (header first)."""
  lines = [",".join(record.lead_names)]
  lines += [",".join(f"{v:.3f}" for v in row) for row in record.signal]
  path.write_text("\n".join(lines) + "\n")
  return lines


def _record_csv_with_cell(
  path: pathlib.Path, record: ecg_io.Record, line: int, column: int, cell: str
) -> None:
  """Writes the record as _record_csv does, with field `column` of line `line` (0: the header) set
  to the text `cell`."""
  lines = _record_csv(path, record)
  row = lines[line].split(",")
  row[column] = cell
  lines[line] = ",".join(row)
  path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("cell, fields", [("0,123", 13), ("0,1,2", 14)])
def test_a_csv_row_with_a_field_too_many_is_refused_naming_it(tmp_path, ptbxl_record, cell, fields):
  # A decimal comma splits one cell in two; read as it lies, the row's later leads would shift.
  _record_csv_with_cell(tmp_path / "r.csv", ptbxl_record, 102, 1, cell)
  with pytest.raises(
    ecg_io.EcgReadError,
    match=rf"r\.csv: row 103 has {fields} fields \(a decimal comma\?\), but the header has 12",
  ):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)


def test_a_csv_row_with_a_field_too_few_is_refused_naming_it(tmp_path, ptbxl_record):
  lines = _record_csv(tmp_path / "r.csv", ptbxl_record)
  lines[500] = lines[500].rpartition(",")[0]
  (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.csv: row 501 has 11 fields, but the header"):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)


@pytest.mark.parametrize("cell", ["n/a", "NA", "null", "inf", "-inf", "nan", "abc"])
def test_a_csv_text_cell_is_named_by_row_and_column(tmp_path, ptbxl_record, cell):
  _record_csv_with_cell(tmp_path / "r.csv", ptbxl_record, 101, 3, cell)
  with pytest.raises(
    ecg_io.EcgReadError, match=rf"r\.csv: row 102, column 'aVR': '{cell}' is not a finite number"
  ):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)


@pytest.mark.parametrize(
  "header, columns",
  [("ECG", [1]), ("value", [1]), ("time,value", [0, 1]), (None, [1])],
)
def test_a_single_channel_file_is_read_as_the_lead_it_is_given(
  tmp_path, ptbxl_record, header, columns
):
  lead_i = ptbxl_record.signal[:, 0]
  table = np.column_stack([np.arange(1000) / 100, lead_i])[:, columns]
  lines = ([header] if header else []) + [",".join(repr(float(v)) for v in row) for row in table]
  (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.csv: .*--lead I"):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)
  naming = ecg_io.LeadNaming(single_lead="lead 1")
  record = ecg_io.read_record(tmp_path / "r.csv", csv_fs=100, naming=naming)
  assert record.lead_names == ("I",) and record.meta["ignored_channels"] == ()
  np.testing.assert_array_equal(record.signal[:, 0], lead_i)


def test_wearable_labels_and_a_lead_map(tmp_path, ptbxl_record):
  signal = ptbxl_record.signal
  _write_csv(tmp_path / "r.csv", "MLII,chan 3,Resp", signal[:, [1, 2, 5]])
  record = ecg_io.read_record(tmp_path / "r.csv", csv_fs=100)
  assert record.lead_names == ("II",)  # chan 3 names no lead: ignored, as Resp.
  assert record.meta["ignored_channels"] == ("chan 3", "Resp")
  mapped = ecg_io.read_record(
    tmp_path / "r.csv", csv_fs=100, naming=ecg_io.LeadNaming({"CHAN 3": "iii"})
  )
  assert mapped.lead_names == ("II", "III") and mapped.meta["ignored_channels"] == ("Resp",)
  np.testing.assert_allclose(mapped.signal, signal[:, [1, 2]], rtol=1e-6)
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.csv: .* this record has 3 channels"):
    ecg_io.read_record(tmp_path / "r.csv", csv_fs=100, naming=ecg_io.LeadNaming(single_lead="I"))
  with pytest.raises(ecg_io.EcgReadError, match=r"unknown ECG lead name 'V9'"):
    ecg_io.LeadNaming({"ECG": "V9"})


def test_a_single_channel_edf_is_read_as_the_lead_it_is_given(tmp_path, ptbxl_record):
  lead_i = ptbxl_record.signal[:, 0].astype(np.float64)
  pyedflib.highlevel.write_edf(
    str(tmp_path / "r.edf"), [lead_i], [_edf_header("ECG", "mV", 100, 5)]
  )
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.edf: no channel .* say which \(--lead I\)"):
    ecg_io.read_record(tmp_path / "r.edf")
  record = ecg_io.read_record(tmp_path / "r.edf", naming=ecg_io.LeadNaming(single_lead="I"))
  assert record.lead_names == ("I",)
  np.testing.assert_allclose(record.signal[:, 0], lead_i, atol=10 / 65535)


def test_csv_needs_a_sampling_rate(tmp_path):
  (tmp_path / "r.csv").write_text("I\n0.1\n")
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.csv: a CSV file has no sampling rate"):
    ecg_io.read_record(tmp_path / "r.csv")


def _edf_header(label, dimension, fs, extreme):
  return pyedflib.highlevel.make_signal_header(
    label, dimension=dimension, sample_frequency=fs, physical_min=-extreme, physical_max=extreme
  )


def test_reads_edf_leads_in_microvolts_and_ignores_other_channels(tmp_path):
  reference = ecg_io.read_record(FIXTURES / "00001_hr")
  signals = [reference.signal[:, 1] * 1000.0, reference.signal[:, 6] * 1000.0, np.zeros(5000)]
  headers = [
    _edf_header("ECG II", "uV", 500, 5000),
    _edf_header("EKG V1", "uV", 500, 5000),
    _edf_header("Resp", "", 500, 1),
  ]
  pyedflib.highlevel.write_edf(
    str(tmp_path / "r.edf"), [s.astype(np.float64) for s in signals], headers
  )
  record = ecg_io.read_record(tmp_path / "r.edf")
  assert record.lead_names == ("II", "V1") and record.fs == 500.0
  assert record.meta["ignored_channels"] == ("Resp",)
  step = 10.0 / 65535  # mV per digital step of a +-5000 uV range.
  np.testing.assert_allclose(record.signal, reference.signal[:, [1, 6]], atol=step)
  with pytest.raises(ecg_io.EcgReadError, match=r"lead I is not in the record .*ignored|Resp"):
    ecg_io.select_leads(record, ["I"])


def test_edf_with_mixed_rates_is_rejected(tmp_path):
  headers = [_edf_header("I", "mV", 100, 5), _edf_header("II", "mV", 250, 5)]
  pyedflib.highlevel.write_edf(str(tmp_path / "r.edf"), [np.zeros(1000), np.zeros(2500)], headers)
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.edf: .*different sampling rates"):
    ecg_io.read_record(tmp_path / "r.edf")


def test_unreadable_edf_is_rejected(tmp_path):
  (tmp_path / "r.edf").write_bytes(b"0       not an EDF header" * 20)
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.edf: cannot read the EDF file"):
    ecg_io.read_record(tmp_path / "r.edf")


def test_unsupported_file_type_is_rejected(tmp_path):
  (tmp_path / "r.json").write_text("{}")
  with pytest.raises(ecg_io.EcgReadError, match=r"r\.json: unsupported file type '\.json'"):
    ecg_io.read_record(tmp_path / "r.json")


@pytest.mark.parametrize(
  "name, canonical", [("ECG II", "II"), ("EKG aVL", "aVL"), ("ecg_v3", "V3")]
)
def test_normalize_lead_name_takes_edf_labels(name, canonical):
  assert ecg_io.normalize_lead_name(name) == canonical


def test_find_records_lists_each_record_once(tmp_path):
  _copy_record(tmp_path, "00001_lr")
  _copy_record(tmp_path, "HR00001", extensions=(".hea", ".mat"))
  (tmp_path / "sub").mkdir()
  shutil.copy(FIXTURES / "A1980.mat", tmp_path / "sub" / "A1980.mat")
  (tmp_path / "sub" / "r.csv").write_text("I\n0\n")
  (tmp_path / "notes.txt").write_text("")
  found = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in ecg_io.find_records(tmp_path)]
  assert found == ["00001_lr.hea", "HR00001.hea", "sub/A1980.mat", "sub/r.csv"]


def test_reject_flat_leads_names_them():
  signal = np.stack([np.sin(np.arange(100.0)), np.full(100, 0.3), np.zeros(100)], axis=1)
  with pytest.raises(ecg_io.EcgReadError, match=r"rec: lead II, V1 is flat"):
    ecg_io.reject_flat_leads(signal, ("I", "II", "V1"), "rec")
  ecg_io.reject_flat_leads(signal[:, :1], ("I",), "rec")  # A varying lead passes.
