"""Bad input never gives a silent prediction: each case raises the project's error naming the file.

Records are real (tests/fixtures) or written from real PTB-XL signals; the model is the tiny run of
tests/run_fixture.py.
"""

import csv
import json
import pathlib
import shutil
import warnings

import numpy as np
import pyedflib
import pytest
from test_predict import write_csv, write_edf

from lead_kt import ecg_io, predict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def lead_i():
  """Lead I of PTB-XL record 1 at 100 Hz (mV, 1000 samples)."""
  return ecg_io.read_record(FIXTURES / "00001_lr").signal[:, 0]


def copy_record(tmp_path, name, extensions=(".hea", ".dat")):
  for extension in extensions:
    shutil.copy(FIXTURES / (name + extension), tmp_path / (name + extension))
    (tmp_path / (name + extension)).chmod(0o644)
  return tmp_path / name


def refused(predictor, path, pattern, **kwargs):
  with pytest.raises(ecg_io.EcgReadError, match=pattern):
    predictor.predict_record(path, **kwargs)


@pytest.mark.parametrize(
  "bad, problem",
  [
    ("nan", "'nan' is not a finite number"),
    ("inf", "'inf' is not a finite number"),
    ("-inf", "'-inf' is not a finite number"),
    ("n/a", "'n/a' is not a finite number"),
    ("null", "'null' is not a finite number"),
    ("", r"empty cell \(a missing sample\)"),
  ],
)
def test_nan_inf_or_text_cells_are_named_by_row_and_column(
  tmp_path, predictor, lead_i, bad, problem
):
  path = tmp_path / "r.csv"
  write_csv(path, {"time": np.arange(1000) / 100, "I": lead_i})
  lines = path.read_text().splitlines()
  lines[101] = f"1.0,{bad}"  # Line 102 of the file: sample 100.
  path.write_text("\n".join(lines) + "\n")
  refused(predictor, path, rf"r\.csv: row 102, column 'I': {problem}", csv_fs=100)


def test_wfdb_missing_sample_value(tmp_path, predictor):
  base = copy_record(tmp_path, "00001_lr")
  samples = np.fromfile(tmp_path / "00001_lr.dat", dtype="<i2")
  samples[12 * 7] = -32768  # Lead I, sample 7: WFDB's "no value".
  samples.tofile(tmp_path / "00001_lr.dat")
  refused(predictor, base, r"00001_lr\.hea: 1 NaN/Inf samples .*sample 7, lead I")


def test_flat_lead_the_model_needs(tmp_path, predictor, lead_i):
  path = tmp_path / "r.csv"
  write_csv(path, {"I": np.full(1000, 0.12), "II": lead_i})
  refused(predictor, path, r"r\.csv: lead I is flat", csv_fs=100)


def test_flat_lead_the_model_ignores_is_fine(tmp_path, predictor, lead_i):
  path = tmp_path / "r.csv"
  write_csv(path, {"I": lead_i, "V6": np.zeros(1000)})
  expected = predictor.predict_signal(lead_i[:, None], ["I"], 100)
  result = predictor.predict_record(path, csv_fs=100)
  np.testing.assert_allclose(list(result["probabilities"].values()), expected, atol=1e-6)


def test_record_shorter_than_half_a_window_is_refused(tmp_path, predictor, lead_i):
  path = tmp_path / "r.csv"
  write_csv(path, {"I": lead_i[:124]})  # The window is 250 samples.
  with pytest.raises(predict.ShortRecordError, match=r"r\.csv: 124 samples .*shorter than half"):
    predictor.predict_record(path, csv_fs=100)


def test_record_shorter_than_a_window_is_padded_as_in_evaluation(tmp_path, predictor, lead_i):
  path = tmp_path / "r.csv"
  write_csv(path, {"I": lead_i[:200]})
  with pytest.warns(predict.ShortRecordWarning, match=r"r\.csv: 200 samples .*padded"):
    result = predictor.predict_record(path, csv_fs=100)
  assert result["num_windows"] == 1
  record = ecg_io.read_record(path, csv_fs=100)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", predict.ShortRecordWarning)
    (window,) = predictor.model_windows(record)
  spec = predictor.spec
  normalised = (window - spec.mean) * spec.inv_std
  assert window.shape == (250, 1) and np.all(normalised[200:] == 0)  # The pipeline's padding.
  np.testing.assert_array_equal(window[:200, 0], lead_i[:200])


def test_a_decimal_comma_in_one_cell_is_refused_not_read_shifted(tmp_path, run_dir, capsys):
  # Issue 29: record 1 as a 12-lead CSV file, one cell of lead II written "0,123" (13 fields).
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  columns = {lead: record.signal[:, i] for i, lead in enumerate(record.lead_names)}
  write_csv(tmp_path / "r.csv", columns)
  lines = (tmp_path / "r.csv").read_text().splitlines()
  cells = lines[102].split(",")
  cells[1] = "0,123"
  lines[102] = ",".join(cells)
  (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
  out = tmp_path / "out.csv"
  argv = ["--workdir", run_dir, "--csv-fs", "100", "--input", str(tmp_path / "r.csv")]
  assert predict.main([*argv, "--output", str(out)]) == 1
  assert "r.csv: row 103 has 13 fields (a decimal comma?), but the header has 12" in (
    capsys.readouterr().err
  )
  (row,) = csv.DictReader(out.open())
  assert row["p_NORM"] == "" and "row 103" in row["error"]


@pytest.mark.parametrize(
  "output, reason",
  [("no_such_dir/out.csv", "its directory no_such_dir does not exist"), ("a_dir.csv", "it is a")],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
  tmp_path, run_dir, monkeypatch, capsys, output, reason
):
  (tmp_path / "a_dir.csv").mkdir()
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(predict, "Predictor", None)  # Loading the run would fail the test.
  argv = ["--workdir", run_dir, "--input", str(FIXTURES / "00001_lr"), "--output", output]
  assert predict.main(argv) == 2
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f"error: cannot write --output {output}: {reason}")


def test_the_output_is_written_whole_or_not_at_all(tmp_path, run_dir, monkeypatch):
  out = tmp_path / "out.csv"
  out.write_text("earlier results\n")

  def fail_midway(rows, class_names, stream):
    stream.write("file,")
    raise KeyboardInterrupt

  monkeypatch.setattr(predict, "write_rows", fail_midway)
  argv = ["--workdir", run_dir, "--input", str(FIXTURES / "00001_lr"), "--output", str(out)]
  with pytest.raises(KeyboardInterrupt):
    predict.main(argv)
  assert out.read_text() == "earlier results\n"  # Untouched, and no partial file beside it.
  assert sorted(path.name for path in tmp_path.iterdir()) == ["out.csv"]


def test_missing_signal_file(tmp_path, predictor):
  base = copy_record(tmp_path, "00001_lr", extensions=(".hea",))
  refused(predictor, base, r"00001_lr\.dat: signal file named in .*00001_lr\.hea is missing")


def test_header_sample_count_disagrees_with_file_size(tmp_path, predictor):
  base = copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  (tmp_path / "00001_lr.hea").write_text(header.replace(" 12 100 1000", " 12 100 1200"))
  refused(predictor, base, r"00001_lr\.dat: signal file is truncated: 24000 bytes.*1200 samples")


def test_non_ecg_channels_are_ignored_alike_in_every_format(tmp_path, predictor, lead_i):
  # Resp beside lead I: the prediction of lead I alone, the channel listed (issue 29).
  expected = predictor.predict_signal(lead_i[:, None], ["I"], 100)
  resp = np.sin(np.arange(1000) / 30)
  write_csv(tmp_path / "r.csv", {"I": lead_i, "Resp": resp})
  write_edf(tmp_path / "r.edf", {"ECG I": lead_i, "Resp": resp}, fs=100)
  base = copy_record(tmp_path, "00001_lr")
  header = (tmp_path / "00001_lr.hea").read_text()
  (tmp_path / "00001_lr.hea").write_text(header.replace(" V6\n", " Resp\n"))
  for path, tolerance in ((tmp_path / "r.csv", 1e-6), (tmp_path / "r.edf", 5e-4), (base, 0)):
    result = predictor.predict_record(path, csv_fs=100)
    assert result["ignored_channels"] == ["Resp"], path
    np.testing.assert_allclose(list(result["probabilities"].values()), expected, atol=tolerance)
  # A channel the model needs under an unknown label is named among the ignored ones.
  (tmp_path / "00001_lr.hea").write_text(header.replace(" I\n", " X1\n", 1))
  refused(
    predictor,
    base,
    r"00001_lr\.hea: .*lacks lead I \(it has .*; channels not read as ECG leads: X1\)",
  )


def test_missing_lead_the_model_needs(tmp_path, predictor, lead_i):
  write_csv(tmp_path / "r.csv", {"II": lead_i, "V1": lead_i})
  refused(
    predictor,
    tmp_path / "r.csv",
    r"r\.csv: the model reads lead I; the record lacks lead I \(it has II, V1\)",
    csv_fs=100,
  )


@pytest.mark.parametrize("name", ["r.xml", "r.npy", "r.txt"])
def test_unsupported_file_type(tmp_path, predictor, name):
  (tmp_path / name).write_text("<ecg/>")
  refused(predictor, tmp_path / name, rf"{name}: unsupported file type '\.{name[2:]}'")


def test_edf_with_mixed_sampling_rates(tmp_path, predictor, lead_i):
  path = tmp_path / "r.edf"
  headers = [
    pyedflib.highlevel.make_signal_header("ECG I", "mV", 100, -5, 5),
    pyedflib.highlevel.make_signal_header("ECG II", "mV", 200, -5, 5),
  ]
  pyedflib.highlevel.write_edf(
    str(path), [lead_i.astype(np.float64), np.repeat(lead_i, 2).astype(np.float64)], headers
  )
  refused(
    predictor,
    path,
    r"r\.edf: the ECG channels have different sampling rates "
    r"\(ECG I 100 Hz, ECG II 200 Hz\)",
  )


def test_edf_without_ecg_channels(tmp_path, predictor, lead_i):
  write_edf(tmp_path / "r.edf", {"Resp": lead_i, "SpO2": lead_i}, fs=100)
  refused(predictor, tmp_path / "r.edf", r"r\.edf: no channel is labelled as an ECG lead")


def test_csv_without_header(tmp_path, predictor, lead_i):
  path = tmp_path / "r.csv"
  path.write_text("".join(f"{v},{v}\n" for v in lead_i))
  refused(predictor, path, r"r\.csv: the CSV file has no header row of lead names", csv_fs=100)


def test_csv_without_sampling_rate(tmp_path, predictor, lead_i):
  write_csv(tmp_path / "r.csv", {"I": lead_i})
  refused(predictor, tmp_path / "r.csv", r"r\.csv: a CSV file has no sampling rate")


def test_implausible_sampling_rate(tmp_path, predictor, lead_i):
  write_csv(tmp_path / "r.csv", {"I": lead_i})
  refused(predictor, tmp_path / "r.csv", r"r\.csv: implausible sampling rate 1e\+06 Hz", csv_fs=1e6)


# --- Run directories ---


@pytest.fixture
def run_copy(tmp_path, run_dir):
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  return copy


def edit_results(run: pathlib.Path, edit) -> None:
  results = json.loads((run / "results.json").read_text())
  edit(results)
  (run / "results.json").write_text(json.dumps(results))


def test_not_a_run_directory(tmp_path):
  with pytest.raises(predict.RunDirError, match=r"results\.json is missing: is .* a finished"):
    predict.Predictor(tmp_path)


def test_unfinished_run_without_best_checkpoint(run_copy):
  shutil.rmtree(run_copy / "best")
  with pytest.raises(predict.RunDirError, match=r"best does not exist"):
    predict.Predictor(run_copy)


def test_checkpoint_of_another_architecture(run_copy):
  edit_results(run_copy, lambda r: r["config"]["student"].update(backbone="resnet1d_wang"))
  with pytest.raises(
    predict.RunDirError,
    match=r"cannot load the best checkpoint into the "
    r"baseline / resnet1d_wang network",
  ):
    predict.Predictor(run_copy)


def test_results_with_another_class_list(run_copy):
  edit_results(run_copy, lambda r: r["class_names"].append("AFIB"))
  with pytest.raises(predict.RunDirError, match=r"results\.json does not describe a usable run"):
    predict.Predictor(run_copy)


def test_corrupt_checkpoint_files(run_copy):
  (step,) = (run_copy / "best").iterdir()
  files = [path for path in (step / "model").rglob("*") if path.is_file()]
  assert files
  for path in files:
    path.write_bytes(b"\x00garbage" * 7)
  with pytest.raises(predict.RunDirError, match=r"cannot load the best checkpoint"):
    predict.Predictor(run_copy)


def test_corrupt_normalization_file(run_copy):
  (run_copy / "normalization.json").write_text('{"kind": "global", "mean": [0], "std": [0]}')
  with pytest.raises(predict.RunDirError, match=r"normalization\.json: invalid"):
    predict.Predictor(run_copy)


def test_run_dir_errors_are_checkpoint_errors_too():
  from lead_kt import checkpoint

  assert issubclass(predict.RunDirError, checkpoint.CheckpointError)
  assert issubclass(predict.RunDirError, ecg_io.EcgReadError)


# --- Fuzz: damaged copies of real records predict or raise EcgReadError, nothing else ---


def fuzz_sources(tmp_path, lead_i) -> list[pathlib.Path]:
  """Four real records in four formats: WFDB .hea/.dat, Challenge .hea/.mat, CSV, EDF."""
  source = tmp_path / "source"
  source.mkdir()
  copy_record(source, "00001_lr")
  copy_record(source, "HR00001", extensions=(".hea", ".mat"))
  write_csv(source / "r.csv", {"time": np.arange(1000) / 100, "I": lead_i})
  write_edf(source / "r.edf", {"ECG I": lead_i}, fs=100)
  return sorted(source.iterdir())


def damage(data: bytes, rng: np.random.Generator) -> bytes:
  """Truncates the bytes, flips bits in them, or both."""
  data = bytearray(data)
  kind = rng.integers(3)
  if kind != 1:
    data = data[: rng.integers(len(data))]
  if kind != 0 and data:
    for position in rng.integers(len(data), size=rng.integers(1, 9)):
      data[position] ^= 1 << int(rng.integers(8))
  return bytes(data)


def test_damaged_records_predict_or_raise_ecg_read_error(tmp_path, predictor, lead_i):
  rng = np.random.default_rng(20240611)
  sources = fuzz_sources(tmp_path, lead_i)
  outcomes = {"predicted": 0, "refused": 0}
  for case in range(50):
    victim = sources[rng.integers(len(sources))]
    case_dir = tmp_path / f"case{case}"
    shutil.copytree(victim.parent, case_dir)
    (case_dir / victim.name).write_bytes(damage(victim.read_bytes(), rng))
    path = case_dir / (victim.stem if victim.suffix in (".hea", ".dat", ".mat") else victim.name)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", predict.ShortRecordWarning)
        result = predictor.predict_record(path, csv_fs=100)
    except ecg_io.EcgReadError as error:
      assert str(case_dir) in str(error), error  # It names the file.
      outcomes["refused"] += 1
    else:
      assert all(np.isfinite(p) for p in result["probabilities"].values())
      outcomes["predicted"] += 1
  assert outcomes["predicted"] > 0 and outcomes["refused"] > 0, outcomes
