"""lead_kt.predict on a tiny real run (tests/run_fixture.py) and real PTB-XL / CPSC records.

The test marked `needs_shared_cpsc2018` reads CPSC2018 records from the project's real-data folder,
`../shared/data/cpsc2018` beside the repository.
"""

import copy
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import warnings

import ml_collections
import numpy as np
import pyedflib
import pytest
import run_fixture
import tensorflow_datasets as tfds

from data_builders.icbeb2018 import Builder as Icbeb2018Builder
from lead_kt import ecg_io, predict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CPSC2018_WFDB = SHARED_DATA / "cpsc2018" / "wfdb"
needs_shared_cpsc2018 = pytest.mark.skipif(
  not CPSC2018_WFDB.is_dir(),
  reason=f"needs the real-data folder {CPSC2018_WFDB} beside the repository",
)
PTBXL_100HZ = SHARED_DATA / "ptb-xl" / "records100" / "00000"
needs_shared_ptbxl = pytest.mark.skipif(
  not PTBXL_100HZ.is_dir(), reason=f"needs the real-data folder {PTBXL_100HZ} beside the repository"
)


def probabilities(result: dict) -> np.ndarray:
  return np.array(list(result["probabilities"].values()))


def write_csv(path, columns: dict[str, np.ndarray], delimiter=",") -> None:
  with open(path, "w", newline="") as out:
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(columns)
    writer.writerows(zip(*[[repr(float(v)) for v in c] for c in columns.values()], strict=True))


def write_edf(path, channels: dict[str, np.ndarray], fs, dimension="uV", scale=1000.0) -> None:
  """An EDF+ file of the channels (mV arrays, stored times `scale` in `dimension`), with the
  16-bit range spanning the signals (finest steps)."""
  signals = [np.asarray(values, np.float64) * scale for values in channels.values()]
  extreme = float(np.ceil(max(np.abs(s).max() for s in signals))) + 1
  headers = [
    pyedflib.highlevel.make_signal_header(
      label, dimension=dimension, sample_frequency=fs, physical_min=-extreme, physical_max=extreme
    )
    for label in channels
  ]
  pyedflib.highlevel.write_edf(str(path), signals, headers)


def test_predictions_equal_the_trainers_evaluation_on_ptbxl_test_records(run_dir, predictor):
  reference = np.load(os.path.join(run_dir, "predictions", "test.npz"))
  paths = run_fixture.ptbxl_test_records(run_dir)
  assert len(paths) == len(reference["scores"]) > 10
  predicted = np.stack([probabilities(predictor.predict_record(path)) for path in paths])
  # The same windows, normalisation and aggregation; only float32 summation order may differ.
  np.testing.assert_allclose(predicted, reference["scores"], rtol=0, atol=1e-6)
  assert predicted.std(axis=0).min() > 1e-3  # Records get different scores.


def test_predict_record_reports_leads_rates_and_validation_threshold_decisions(run_dir, predictor):
  result = predictor.predict_record(FIXTURES / "00001_lr")
  results = json.loads((pathlib.Path(run_dir) / "results.json").read_text())
  assert result["file"].endswith("00001_lr")
  assert result["leads"] == ["I"]
  assert result["fs_in"] == result["fs_out"] == 100.0
  assert result["num_windows"] == 7  # 1000 samples, windows of 250 every 125.
  assert list(result["probabilities"]) == results["class_names"]
  thresholds = results["test"]["thresholds"]
  for name, probability in result["probabilities"].items():
    assert 0.0 < probability < 1.0
    assert result["decisions"][name] == (probability >= thresholds[name])


def test_one_recording_in_every_format_gets_the_same_prediction(tmp_path, predictor):
  wfdb_500 = predictor.predict_record(FIXTURES / "00001_hr")
  challenge = predictor.predict_record(FIXTURES / "HR00001.mat")
  np.testing.assert_array_equal(probabilities(challenge), probabilities(wfdb_500))

  record = ecg_io.read_record(FIXTURES / "00001_hr")
  lead_i, lead_ii = record.signal[:, 0], record.signal[:, 1]
  write_csv(tmp_path / "r.csv", {"time": np.arange(5000) / 500, "II": lead_ii, "Lead I": lead_i})
  from_csv = predictor.predict_record(tmp_path / "r.csv", csv_fs=500)
  np.testing.assert_allclose(probabilities(from_csv), probabilities(wfdb_500), atol=1e-6)

  write_edf(tmp_path / "r.edf", {"ECG II": lead_ii, "ECG I": lead_i}, fs=500)
  from_edf = predictor.predict_record(tmp_path / "r.edf")
  # EDF stores 16-bit samples (here steps of about 0.1 uV).
  np.testing.assert_allclose(probabilities(from_edf), probabilities(wfdb_500), atol=5e-4)
  assert from_edf["fs_in"] == 500.0 and from_edf["fs_out"] == 100.0


def test_500hz_input_is_resampled_to_the_models_rate(predictor):
  high = ecg_io.read_record(FIXTURES / "00001_hr")
  probs = predictor.predict_signal(high.signal, high.lead_names, high.fs)
  resampled = ecg_io.resample(high.signal, 500, 100)
  np.testing.assert_array_equal(probs, predictor.predict_signal(resampled, high.lead_names, 100))
  # PTB-XL's own 100 Hz version of the record was downsampled differently: close, not equal.
  low = predictor.predict_record(FIXTURES / "00001_lr")
  np.testing.assert_allclose(probs, probabilities(low), atol=0.05)


def test_predict_signal_takes_any_lead_order_and_spelling(predictor):
  record = ecg_io.read_record(FIXTURES / "00001_lr")
  expected = probabilities(predictor.predict_record(FIXTURES / "00001_lr"))
  columns = record.signal[:, [6, 3, 0]]  # V1, aVR, I
  probs = predictor.predict_signal(columns, ["v1", "AVR", "Lead I"], 100)
  np.testing.assert_array_equal(probs, expected)
  assert probs.shape == (len(predictor.spec.class_names),)


def test_cpsc_record_of_any_length_is_windowed(predictor):
  result = predictor.predict_record(FIXTURES / "A1980.mat")
  length = len(ecg_io.resample(ecg_io.read_record(FIXTURES / "A1980.mat").signal, 500, 100))
  assert result["num_windows"] == -(-(length - 250) // 125) + 1
  assert all(0.0 < p < 1.0 for p in result["probabilities"].values())


def test_cli_writes_csv_and_json_and_reports_bad_records(tmp_path, run_dir, predictor, capsys):
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  for name in ("00001_lr.hea", "00001_lr.dat", "A1980.mat"):
    shutil.copy(FIXTURES / name, inputs / name)
  (inputs / "bad.csv").write_text("Resp\n1\n2\n")
  out_csv, out_json = tmp_path / "out.csv", tmp_path / "out.json"
  argv = ["--workdir", run_dir, "--input", str(inputs), "--csv_fs", "100"]
  assert predict.main([*argv, "--output", str(out_csv)]) == 1
  assert (
    "bad.csv: no channel is labelled as an ECG lead (labels: 'Resp')" in capsys.readouterr().err
  )
  rows = list(csv.DictReader(out_csv.open()))
  assert [os.path.basename(row["file"]) for row in rows] == ["00001_lr.hea", "A1980.mat", "bad.csv"]
  expected = predictor.predict_record(FIXTURES / "00001_lr")
  for name, probability in expected["probabilities"].items():
    assert float(rows[0][f"p_{name}"]) == pytest.approx(probability, abs=1e-6)
    assert rows[0][name] == str(int(expected["decisions"][name]))
  assert rows[0]["leads"] == "I" and rows[0]["error"] == "" and rows[2]["p_NORM"] == ""
  assert (
    predict.main(
      ["--workdir", run_dir, "--input", str(inputs / "A1980.mat"), "--output", str(out_json)]
    )
    == 0
  )
  (row,) = json.loads(out_json.read_text())
  assert (
    row["fs_in"] == 500.0
    and row["error"] == ""
    and set(row["decisions"]) == set(expected["decisions"])
  )


def test_a_transfer_runs_top_directory_resolves_to_its_student(tmp_path, run_dir):
  shutil.copytree(run_dir, tmp_path / "student")
  shutil.copy(tmp_path / "student" / "results.json", tmp_path / "results.json")
  assert predict.resolve_run_dir(tmp_path) == str(tmp_path / "student")
  assert predict.resolve_run_dir(run_dir) == run_dir
  result = predict.Predictor(tmp_path).predict_record(FIXTURES / "00001_lr")
  assert result["leads"] == ["I"]


def test_a_relative_workdir_is_accepted(tmp_path, run_dir, predictor, monkeypatch):
  shutil.copytree(run_dir, tmp_path / "run")
  monkeypatch.chdir(tmp_path)
  relative = predict.Predictor("run").predict_record(FIXTURES / "00001_lr")
  absolute = predictor.predict_record(FIXTURES / "00001_lr")
  assert relative["probabilities"] == absolute["probabilities"]


@pytest.mark.parametrize(
  "method, extra, expected",
  [
    ("teacher", {}, ecg_io.STANDARD_LEADS),
    ("baseline", {}, ("II", "aVR")),
    ("mvkt", {}, ("II", "aVR")),
    ("signal_recon", {"kept_leads": ("v5", "II")}, ("II", "V5")),
  ],
)
def test_model_input_leads_by_method(method, extra, expected):
  config = ml_collections.ConfigDict({"method": method, **extra})
  assert predict.model_input_leads(config, ("ii", "AVR")) == expected


def test_predict_signal_refuses_arrays_that_do_not_match_their_lead_names(predictor):
  signal = np.sin(np.arange(1000.0) / 10)[:, None]
  with pytest.raises(
    ecg_io.EcgReadError, match=r"watch: signal shape \(1000, 1\) does not match 2"
  ):
    predictor.predict_signal(signal, ["I", "II"], 100, name="watch")
  with pytest.raises(ecg_io.EcgReadError, match=r"watch: 1 NaN/Inf samples"):
    predictor.predict_signal(
      np.where(np.arange(1000)[:, None] == 3, np.nan, signal), ["I"], 100, name="watch"
    )


@pytest.mark.parametrize(
  "name, facts, preprocessing",
  [
    ("ptbxl/superdiagnostic_100hz", (100.0, 1000), predict.RecordPreprocessing()),
    ("ptbxl/diagnostic_500hz", (500.0, 5000), predict.RecordPreprocessing()),
    ("icbeb2018/500hz", (500.0, None), predict.RecordPreprocessing()),
    (
      "icbeb2018/100hz_label10_norm_mvkt_split_db6",
      (100.0, None),
      predict.RecordPreprocessing(denoise_fs=500.0),
    ),
    ("icbeb2018/500hz_20s", (500.0, 10000), predict.RecordPreprocessing(record_length=10000)),
  ],
)
def test_rate_record_length_and_preprocessing_come_from_builder_code_without_data(
  tmp_path, name, facts, preprocessing
):
  config = ml_collections.ConfigDict({"data": {"name": name, "data_dir": str(tmp_path / "none")}})
  assert predict._dataset_facts(config) == facts
  assert predict._dataset_preprocessing(config) == preprocessing
  assert not (tmp_path / "none").exists()  # Nothing was prepared.


def run_on_dataset(run_dir, copy_dir, dataset: str) -> pathlib.Path:
  """A copy of the run whose results.json says it was trained on `dataset`."""
  shutil.copytree(run_dir, copy_dir)
  results = json.loads((copy_dir / "results.json").read_text())
  results["dataset"] = results["config"]["data"]["name"] = dataset
  (copy_dir / "results.json").write_text(json.dumps(results))
  return copy_dir


@needs_shared_cpsc2018
def test_a_db6_20s_run_prepares_a_record_exactly_as_its_builder_stored_it(
  tmp_path, run_dir, predictor
):
  names = ("A0004", "A0005")  # 5974 samples at 500 Hz (tiled to 20 s), 12500 (centre-cropped).
  manual_dir = tmp_path / "records"
  manual_dir.mkdir()
  for name in names:
    for extension in (".hea", ".mat"):
      shutil.copy(CPSC2018_WFDB / f"{name}{extension}", manual_dir)
  builder = Icbeb2018Builder(config="100hz_db6_20s", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  stored = {
    example["record_id"].decode(): example["ecg"]
    for split in builder.info.splits
    for example in builder.as_data_source(split)
  }
  # The tiny PTB-XL run's network (lead I, 100 Hz, windows of 250 every 125) as if trained on
  # this dataset: how a recording is prepared depends on the dataset only.
  db6_20s = predict.Predictor(
    run_on_dataset(run_dir, tmp_path / "run", f"icbeb2018/{builder.builder_config.name}")
  )
  assert db6_20s.spec.preprocessing == predict.RecordPreprocessing(500.0, 2000)
  assert predictor.spec.preprocessing == predict.RecordPreprocessing()  # PTB-XL: resampling only.
  lead_i = ecg_io.STANDARD_LEADS.index("I")
  for name in names:
    windows = db6_20s.model_windows(ecg_io.read_record(CPSC2018_WFDB / name))
    expected = [stored[name][start : start + 250, [lead_i]] for start in range(0, 1751, 125)]
    np.testing.assert_array_equal(windows, np.stack(expected))


def test_a_run_on_a_dataset_unknown_to_the_code_is_refused(tmp_path, run_dir):
  # Without its builder, what was done to the dataset's records cannot be repeated.
  run = run_on_dataset(run_dir, tmp_path / "run", "no_such_dataset/100hz")
  with pytest.raises(predict.RunDirError, match=r"usable run .*unknown dataset 'no_such_dataset"):
    predict.Predictor(run)


def test_a_single_lead_run_under_a_record_contract_is_refused(tmp_path, run_dir):
  # The contract z-scores each stored 12-lead record; a lead-I view cannot repeat that alone.
  run = tmp_path / "run"
  shutil.copytree(run_dir, run)
  results = json.loads((run / "results.json").read_text())
  results["config"]["data"]["preprocessing"] = "ecgfounder"
  (run / "results.json").write_text(json.dumps(results))
  with pytest.raises(
    predict.RunDirError, match=r"reads I, but its data.preprocessing='ecgfounder'"
  ):
    predict.Predictor(run)


# --- Wearable files, long recordings, the CLI's flags and output (issue 29) ---


def test_a_wearables_single_channel_is_read_as_the_lead_it_is_given(tmp_path, run_dir, predictor):
  lead_i = ecg_io.read_record(FIXTURES / "00001_lr").signal[:, 0]
  expected = probabilities(predictor.predict_record(FIXTURES / "00001_lr"))
  write_csv(tmp_path / "watch.csv", {"time": np.arange(1000) / 100, "value": lead_i})
  write_edf(tmp_path / "watch.edf", {"ECG": lead_i, "Resp": np.sin(np.arange(1000) / 30)}, fs=100)
  out = tmp_path / "out.json"
  argv = ["--workdir", run_dir, "--csv-fs", "100", "--output", str(out)]
  assert predict.main([*argv, "--input", str(tmp_path / "watch.csv"), "--lead", "I"]) == 0
  (row,) = json.loads(out.read_text())
  np.testing.assert_allclose(probabilities(row), expected, atol=1e-6)
  assert predict.main([*argv, "--input", str(tmp_path / "watch.edf"), "--lead-map", "ecg=I"]) == 0
  (row,) = json.loads(out.read_text())
  np.testing.assert_allclose(probabilities(row), expected, atol=5e-4)
  assert row["ignored_channels"] == ["Resp"] and row["leads"] == ["I"]


def test_a_12_lead_model_names_every_lead_a_1_lead_file_lacks(tmp_path, predictor):
  write_csv(
    tmp_path / "watch.csv", {"Lead 1": ecg_io.read_record(FIXTURES / "00001_lr").signal[:, 0]}
  )
  record = ecg_io.read_record(tmp_path / "watch.csv", csv_fs=100)
  twelve_lead = copy.copy(predictor)  # Only what the model reads differs, and it fails before.
  twelve_lead.spec = dataclasses.replace(predictor.spec, input_leads=ecg_io.STANDARD_LEADS)
  with pytest.raises(
    ecg_io.EcgReadError,
    match=r"watch\.csv: the model reads all 12 leads; the record lacks leads II, III, aVR, aVL, "
    r"aVF, V1, V2, V3, V4, V5, V6 \(it has I\)",
  ):
    twelve_lead.model_windows(record)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
  """A 115 s lead-I CSV file (a PTB recording's length) made of real 10 s PTB-XL records 1..12
  (the last one's first half); returns its path and the eleven whole records' paths."""
  paths = [PTBXL_100HZ / f"{ecg_id:05d}_lr" for ecg_id in range(1, 13)]
  lead_i = np.concatenate([ecg_io.read_record(path).signal[:, 0] for path in paths])[:11_500]
  path = tmp_path_factory.mktemp("long") / "ptb_115s.csv"
  write_csv(path, {"I": lead_i})
  return path, paths[:11]


@needs_shared_ptbxl
def test_a_long_recording_is_predicted_per_segment_or_warned_about(long_recording, predictor):
  path, records = long_recording
  with pytest.warns(
    predict.LongRecordWarning, match=r"ptb_115s\.csv: 115 s .*than the 10 s records .*--segment-"
  ):
    (whole,) = predictor.predict_segments(path, csv_fs=100)
  assert (whole["start_s"], whole["end_s"], whole["aggregation"]) == (0.0, 115.0, "max")
  with warnings.catch_warnings():
    warnings.simplefilter("error", predict.LongRecordWarning)  # 10 s segments are not long.
    segments = predictor.predict_segments(path, csv_fs=100, segment_seconds=10)
  # Every 10 s, the last segment ending at the record's end: each is one training record long.
  assert [(row["start_s"], row["end_s"]) for row in segments] == [
    *((10.0 * k, 10.0 * k + 10) for k in range(11)),
    (105.0, 115.0),
  ]
  assert [row["segment"] for row in segments] == list(range(12))
  assert all(row["num_windows"] == 7 and row["aggregation"] == "max" for row in segments)
  # A segment that is one of the records gets that record's prediction.
  for row, record in zip(segments, records, strict=False):
    expected = probabilities(predictor.predict_record(record))
    np.testing.assert_allclose(probabilities(row), expected, atol=1e-6)
  # The max over all windows is at least every segment's: the whole record's scores run high.
  assert np.all(probabilities(whole) >= np.max([probabilities(r) for r in segments], axis=0))
  with pytest.raises(ValueError, match=r"segments of 1 s are shorter than the model's window"):
    predictor.predict_segments(path, csv_fs=100, segment_seconds=1)


@needs_shared_ptbxl
def test_cli_writes_one_row_per_segment_and_says_how_it_aggregated(
  long_recording, tmp_path, run_dir, capsys
):
  path, _ = long_recording
  out = tmp_path / "out.csv"
  argv = ["--workdir", run_dir, "--input", str(path), "--csv_fs", "100", "--output", str(out)]
  assert predict.main(argv) == 0
  assert "warning: " in capsys.readouterr().err  # The long record, on stderr.
  (whole,) = csv.DictReader(out.open())
  assert (whole["segment"], whole["start_s"], whole["end_s"]) == ("0", "0.0", "115.0")
  assert whole["aggregation"] == "max" and whole["ignored_channels"] == ""
  assert predict.main([*argv, "--segment-seconds", "10"]) == 0
  assert "warning: " not in capsys.readouterr().err
  rows = list(csv.DictReader(out.open()))
  assert [row["segment"] for row in rows] == [str(k) for k in range(12)]
  assert [row["start_s"] for row in rows][-2:] == ["100.0", "105.0"]
  assert predict.main([*argv, "--segment-seconds", "2"]) == 2
  assert "error: segments of 2 s are shorter" in capsys.readouterr().err
