"""Tests of the `ptbxl` TFDS builder on real PTB-XL records (data_builders/ptbxl/dummy_data)."""

import io
import pathlib
import shutil
import socket

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds

import data_builders  # noqa: F401  (registers the builders)
from data_builders.ptbxl import SAMPLE_DIR, labels, source
from lead_kt import ecg_io

DUMMY_DIR = pathlib.Path(data_builders.ptbxl.__file__).parent / "dummy_data"
SUPERCLASSES = ["CD", "HYP", "MI", "NORM", "STTC"]
# Hand-read from the dummy ptbxl_database.csv: strat_fold 1-8 / 9 / 10, ecg_ids 17 and 18 (fold 9)
# have only AFLT/AFIB/ABQRS (no diagnostic statement).
SPLIT_ECG_IDS = {
  "train": [1, 2, 22, 32, 45, 50, 77, 87, 96],
  "validation": [8, 26, 30, 39],
  "test": [9, 38, 63, 65, 100],
}
EXPECTED_SUPERCLASSES = {
  1: ["NORM"],  # {'NORM': 100, 'LVOLT': 0, 'SR': 0}
  8: ["MI"],  # {'IMI': 35, 'ABQRS': 0, 'SR': 0}
  39: ["MI", "STTC"],  # IMI 15 (counts), LNGQT, NST_, DIG
  45: ["CD", "HYP"],  # IRBBB, RAO/RAE, RVH
  50: ["CD", "MI"],  # {'LMI': 15, 'IVCD': 100}
  87: ["CD", "STTC"],  # NDT, IRBBB
}


def _build(data_dir, config="superdiagnostic_100hz", manual_dir=None, **builder_kwargs):
  builder = tfds.builder(f"ptbxl/{config}", data_dir=data_dir, **builder_kwargs)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def _examples_by_split(builder):
  return {split: list(data) for split, data in builder.as_data_source().items()}


@pytest.fixture(scope="module")
def superdiagnostic(tmp_path_factory):
  builder = _build(tmp_path_factory.mktemp("tfds"), manual_dir=DUMMY_DIR)
  return builder, _examples_by_split(builder)


def test_split_sizes_and_ecg_id_order(superdiagnostic):
  builder, examples = superdiagnostic
  assert {split: [int(e["ecg_id"]) for e in data] for split, data in examples.items()} == (
    SPLIT_ECG_IDS
  )
  assert builder.info.splits["validation"].num_examples == 4
  assert builder.info.metadata["excluded_without_label"] == {"train": 0, "validation": 2, "test": 0}


def test_index_is_dense_in_ecg_id_order(superdiagnostic):
  _, examples = superdiagnostic
  for data in examples.values():
    assert [int(e["index"]) for e in data] == list(range(len(data)))


def test_labels_match_hand_computed_superclasses(superdiagnostic):
  _, examples = superdiagnostic
  by_id = {int(e["ecg_id"]): e for data in examples.values() for e in data}
  for ecg_id, classes in EXPECTED_SUPERCLASSES.items():
    expected = np.array([name in classes for name in SUPERCLASSES], np.float32)
    np.testing.assert_array_equal(by_id[ecg_id]["label"], expected, err_msg=f"ecg_id {ecg_id}")
  assert by_id[8]["strat_fold"] == 9 and by_id[9]["strat_fold"] == 10


def test_features_shapes_dtypes_and_values(superdiagnostic):
  builder, examples = superdiagnostic
  example = examples["train"][0]  # ecg_id 1
  assert example["ecg"].shape == (1000, 12) and example["ecg"].dtype == np.float32
  assert example["label"].shape == (5,) and example["label"].dtype == np.float32
  assert example["length"] == 1000
  assert (example["ecg_id"], example["patient_id"], example["sex"]) == (1, 15709, 1)
  assert example["age"] == pytest.approx(56.0)
  record = ecg_io.read_record(DUMMY_DIR / "records100/00000/00001_lr")
  np.testing.assert_array_equal(example["ecg"], record.signal)
  metadata = builder.info.metadata
  assert metadata["class_names"] == SUPERCLASSES
  assert metadata["lead_names"] == list(ecg_io.STANDARD_LEADS)
  assert metadata["sampling_rate"] == 100
  assert builder.info.file_format.value == "array_record"


def test_a_500hz_config_builds_from_the_500hz_records(tmp_path):
  builder = _build(tmp_path, "rhythm_500hz", manual_dir=DUMMY_DIR)
  examples = _examples_by_split(builder)
  assert [len(data) for data in examples.values()] == [9, 6, 5]  # Every record has a rhythm.
  example = examples["validation"][1]
  assert example["ecg_id"] == 17 and example["ecg"].shape == (5000, 12)
  names = builder.info.metadata["class_names"]
  assert [names[i] for i in np.flatnonzero(example["label"])] == ["AFIB", "AFLT"]
  record = ecg_io.read_record(DUMMY_DIR / "records500/00000/00017_hr")
  np.testing.assert_array_equal(example["ecg"], record.signal)


@pytest.mark.parametrize(
  "task, count",
  [
    ("all", 71),
    ("diagnostic", 44),
    ("subdiagnostic", 23),
    ("superdiagnostic", 5),
    ("form", 19),
    ("rhythm", 12),
  ],
)
def test_class_counts_per_task(tmp_path, task, count):
  builder = tfds.builder(f"ptbxl/{task}_100hz", data_dir=tmp_path)
  names = builder.info.metadata["class_names"]
  assert len(names) == count and names == sorted(names)
  assert builder.info.features["label"].shape == (count,)


def test_bundled_sample_is_the_default_source(tmp_path):
  builder = _build(tmp_path)
  sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert sizes == {"train": 275, "validation": 62, "test": 53}
  assert builder.info.metadata["source"] == "bundled_sample"
  # Asking for the full data must not silently reuse the sample build.
  with pytest.raises(ValueError, match="built from the bundled sample"):
    _build(tmp_path, manual_dir=DUMMY_DIR)


# --- Bad input: a clear error naming the file, and no dataset left behind. ---


@pytest.fixture
def broken(tmp_path):
  """A writable copy of dummy_data, without its checksum list unless a test restores it."""
  copy = tmp_path / "source"
  shutil.copytree(DUMMY_DIR, copy)
  for path in copy.rglob("*"):
    path.chmod(0o755 if path.is_dir() else 0o644)
  (copy / "SHA256SUMS.txt").rename(tmp_path / "SHA256SUMS.txt")
  return copy


def _assert_build_fails(data_dir, pattern, config="superdiagnostic_100hz", **kwargs):
  with pytest.raises(ValueError, match=pattern):
    _build(data_dir, config, **kwargs)
  assert not (data_dir / "ptbxl" / config / "1.0.0").exists()
  assert not list(data_dir.rglob("*incomplete*"))


def test_missing_manual_dir(tmp_path):
  _assert_build_fails(
    tmp_path / "tfds", r"manual_dir .*nowhere does not exist", manual_dir=tmp_path / "nowhere"
  )


def test_empty_manual_dir(tmp_path):
  (tmp_path / "empty").mkdir()
  _assert_build_fails(
    tmp_path / "tfds", r"manual_dir .*empty is empty", manual_dir=tmp_path / "empty"
  )


def test_record_listed_but_missing(tmp_path, broken):
  (broken / "records100/00000/00022_lr.dat").unlink()
  _assert_build_fails(tmp_path / "tfds", r"missing: .*00022_lr\.dat", manual_dir=broken)


def test_truncated_dat(tmp_path, broken):
  dat = broken / "records100/00000/00022_lr.dat"
  dat.write_bytes(dat.read_bytes()[:-2400])
  _assert_build_fails(
    tmp_path / "tfds", r"00022_lr\.dat: signal file is truncated", manual_dir=broken
  )


def test_header_sampling_rate_differs_from_config(tmp_path, broken):
  header = broken / "records100/00000/00022_lr.hea"
  header.write_text(header.read_text().replace("00022_lr 12 100 1000", "00022_lr 12 500 1000"))
  _assert_build_fails(
    tmp_path / "tfds",
    r"00022_lr\.hea: sampling rate 500 Hz, but superdiagnostic_100hz reads 100 Hz",
    manual_dir=broken,
  )


def test_header_lead_names_differ_from_the_standard_leads(tmp_path, broken):
  header = broken / "records100/00000/00022_lr.hea"
  header.write_text(header.read_text().replace(" V6\n", " V5\n"))  # V5 twice, no V6.
  _assert_build_fails(tmp_path / "tfds", r"00022_lr\.hea: duplicate lead names", manual_dir=broken)
  header.write_text(header.read_text().replace(" V5\n", " Pleth\n", 1))
  _assert_build_fails(
    tmp_path / "tfds",
    r"00022_lr\.hea: leads .* are not the 12 standard leads .*V6 \(channels not read as ECG leads: "
    r"Pleth\)",
    manual_dir=broken,
  )


def test_header_leads_in_another_order_are_reordered(tmp_path, broken):
  # Store lead II first: swap the two columns in the .dat and their lines in the header.
  dat = broken / "records100/00000/00022_lr.dat"
  samples = np.fromfile(dat, dtype="<i2").reshape(-1, 12)
  samples[:, [1, 0, *range(2, 12)]].tofile(dat)
  header = broken / "records100/00000/00022_lr.hea"
  lines = header.read_text().splitlines(keepends=True)
  lines[1], lines[2] = lines[2], lines[1]
  header.write_text("".join(lines))
  (broken / "ptbxl_database.csv").write_text(
    _database_rows(broken, [22, 8, 9])  # One record per split suffices.
  )
  builder = _build(tmp_path / "tfds", manual_dir=broken)
  example = builder.as_data_source()["train"][0]
  original = ecg_io.read_record(DUMMY_DIR / "records100/00000/00022_lr")
  np.testing.assert_array_equal(example["ecg"], original.signal)


def _database_rows(source_dir, ecg_ids) -> str:
  database = pd.read_csv(source_dir / "ptbxl_database.csv")
  return database[database["ecg_id"].isin(ecg_ids)].to_csv(index=False)


def test_csv_missing_a_required_column(tmp_path, broken):
  database = pd.read_csv(broken / "ptbxl_database.csv")
  database.drop(columns="strat_fold").to_csv(broken / "ptbxl_database.csv", index=False)
  _assert_build_fails(
    tmp_path / "tfds",
    r"ptbxl_database\.csv: required column\(s\) strat_fold missing",
    manual_dir=broken,
  )


def test_checksum_mismatch_names_every_mismatching_file(tmp_path, broken):
  (tmp_path / "SHA256SUMS.txt").rename(broken / "SHA256SUMS.txt")
  for name in ("00022_lr.dat", "00030_lr.hea"):
    path = broken / "records100/00000" / name
    data = bytearray(path.read_bytes())
    data[100] ^= 1  # Same size: only the checksum can tell.
    path.write_bytes(bytes(data))
  _assert_build_fails(
    tmp_path / "tfds",
    r"checksum mismatch in 2 file\(s\): records100/00000/00022_lr\.dat, "
    r"records100/00000/00030_lr\.hea",
    manual_dir=broken,
  )


def test_unreadable_header(tmp_path, broken):
  (broken / "records100/00000/00022_lr.hea").write_bytes(bytes(range(256)) * 4)
  _assert_build_fails(
    tmp_path / "tfds", r"00022_lr\.hea: cannot parse the WFDB header", manual_dir=broken
  )


def test_unreadable_csv(tmp_path, broken):
  (broken / "scp_statements.csv").write_bytes(b"\xff\xfe\x00garbage" * 100)
  _assert_build_fails(tmp_path / "tfds", r"scp_statements\.csv: cannot be read", manual_dir=broken)


def test_unknown_scp_code_is_an_error(tmp_path, broken):
  path = broken / "ptbxl_database.csv"
  path.write_text(path.read_text().replace("{'LVH': 100.0, 'SR': 0.0}", "{'XYZ': 100.0}", 1))
  _assert_build_fails(
    tmp_path / "tfds", r"ecg_id 30: SCP codes \['XYZ'\] are not defined", manual_dir=broken
  )


def test_500hz_config_from_the_sample_says_it_has_no_500hz_records(tmp_path):
  _assert_build_fails(tmp_path, r"sample holds 100 Hz records only", config="superdiagnostic_500hz")
  assert not (SAMPLE_DIR / "records500").exists()


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
  def unreachable(address, timeout):
    raise OSError(f"cannot reach {address[0]}")

  for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(proxy, raising=False)
  monkeypatch.setattr(socket, "create_connection", unreachable)
  _assert_build_fails(
    tmp_path,
    r"downloading PTB-XL v1\.0\.3 from https://physionet\.org/.*cannot reach physionet.*manual_dir",
    download=True,
  )
  monkeypatch.setattr(socket, "create_connection", lambda address, timeout: io.BytesIO())

  def no_download(self, url):
    raise ConnectionError(f"{url} timed out")

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_download)
  _assert_build_fails(tmp_path, r"ConnectionError: .*timed out.*manual_dir", download=True)


def test_download_and_manual_dir_together_are_refused(tmp_path):
  _assert_build_fails(
    tmp_path, "either download=True or a manual_dir", download=True, manual_dir=DUMMY_DIR
  )


def test_plan_checks_the_official_class_list(tmp_path, broken):
  statements = pd.read_csv(broken / "scp_statements.csv", index_col=0)
  statements.drop(index="LVH").to_csv(broken / "scp_statements.csv")
  official = source.official_class_names(SAMPLE_DIR / "scp_statements.csv")["diagnostic"]
  with pytest.raises(source.PtbxlSourceError, match=r"scp_statements\.csv: gives task diagnostic"):
    source.plan_splits(broken, "diagnostic", 100, official)


# --- Label construction (labels.py) on hand-made statements. ---

_NAN = float("nan")
HAND_STATEMENTS = pd.DataFrame(
  {
    "diagnostic": [1, 1, 1, 1, _NAN, _NAN, _NAN],
    "form": [_NAN, _NAN, 1, _NAN, 1, _NAN, _NAN],
    "rhythm": [_NAN, _NAN, _NAN, _NAN, _NAN, 1, 1],
    "diagnostic_class": ["NORM", "MI", "STTC", "MI", _NAN, _NAN, _NAN],
    "diagnostic_subclass": ["NORM", "IMI", "STTC", "AMI", _NAN, _NAN, _NAN],
  },
  index=["NORM", "IMI", "NDT", "ASMI", "LVOLT", "SR", "AFIB"],
)


@pytest.mark.parametrize(
  "task, classes",
  [
    ("all", ["AFIB", "ASMI", "IMI", "LVOLT", "NDT", "NORM", "SR"]),
    ("diagnostic", ["ASMI", "IMI", "NDT", "NORM"]),
    ("subdiagnostic", ["AMI", "IMI", "NORM", "STTC"]),
    ("superdiagnostic", ["MI", "NORM", "STTC"]),
    ("form", ["LVOLT", "NDT"]),
    ("rhythm", ["AFIB", "SR"]),
  ],
)
def test_task_classes_from_hand_made_statements(task, classes):
  assert labels.class_names(labels.task_mapping(HAND_STATEMENTS, task)) == classes


@pytest.mark.parametrize(
  "task, expected",
  [
    ("all", {"IMI", "ASMI", "NDT", "LVOLT", "SR"}),
    ("diagnostic", {"IMI", "ASMI", "NDT"}),
    ("subdiagnostic", {"IMI", "AMI", "STTC"}),
    ("superdiagnostic", {"MI", "STTC"}),  # IMI and ASMI both map to MI.
    ("form", {"NDT", "LVOLT"}),
    ("rhythm", {"SR"}),  # Likelihood 0 counts.
  ],
)
def test_record_classes_per_task(task, expected):
  codes = labels.parse_scp_codes(
    "{'IMI': 15.0, 'ASMI': 0.0, 'NDT': 100.0, 'LVOLT': 0.0, 'SR': 0.0}"
  )
  mapping = labels.task_mapping(HAND_STATEMENTS, task)
  assert labels.record_classes(codes, mapping, HAND_STATEMENTS.index) == expected


def test_record_without_a_label_for_the_task_gets_none():
  mapping = labels.task_mapping(HAND_STATEMENTS, "superdiagnostic")
  assert labels.record_classes({"LVOLT": 0.0, "SR": 0.0}, mapping, HAND_STATEMENTS.index) == set()


def test_unknown_code_is_an_error():
  mapping = labels.task_mapping(HAND_STATEMENTS, "rhythm")
  with pytest.raises(labels.UnknownStatementError, match=r"\['XYZ'\]"):
    labels.record_classes({"SR": 0.0, "XYZ": 100.0}, mapping, HAND_STATEMENTS.index)


def test_multi_hot_and_scp_code_parsing():
  np.testing.assert_array_equal(
    labels.multi_hot({"STTC", "MI"}, ["MI", "NORM", "STTC"]), np.array([1, 0, 1], np.float32)
  )
  assert labels.parse_scp_codes("{'NORM': 100.0, 'SR': 0}") == {"NORM": 100.0, "SR": 0.0}
  with pytest.raises(ValueError, match="not a dict literal"):
    labels.parse_scp_codes("NORM, SR")
  with pytest.raises(ValueError, match="unknown PTB-XL task"):
    labels.task_mapping(HAND_STATEMENTS, "morphology")
