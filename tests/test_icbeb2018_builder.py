"""The icbeb2018 TFDS builder: labels, folds, both released forms, bad input (no TensorFlow)."""

import math
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import tensorflow_datasets as tfds
import wfdb

from data_builders.icbeb2018 import Builder, labels, sources
from data_builders.icbeb2018.labels import Icbeb2018SourceError
from lead_kt.ecg_io import EcgReadError, read_record, resample

DUMMY = os.path.join(os.path.dirname(labels.__file__), "dummy_data")
REFERENCE = os.path.join(DUMMY, labels.REFERENCE_FILENAME)
ORIGINAL = os.path.join(DUMMY, "original_mat")
WFDB = os.path.join(DUMMY, "wfdb")
SPLITS = ("train", "validation", "test")


def build(manual_dir, data_dir, config="500hz"):
  """Builds `config` from manual_dir into data_dir; returns the builder."""
  builder = Builder(config=config, data_dir=str(data_dir), file_format="array_record")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir and str(manual_dir))
  builder.download_and_prepare(download_config=download_config)
  return builder


def examples(builder):
  """{record name: example} over all splits, each example with its split added."""
  found = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    for i in range(len(source)):
      example = dict(source[i], split=split)
      found[example["record_id"].decode()] = example
  return found


def reference_label(name):
  classes = labels.reference_classes(labels.read_reference(REFERENCE)[name])
  return labels.multi_hot(classes)


def copy_records(target, source_dir, names, rename=None):
  """Copies the files of records `names` into folder target, optionally renaming one record."""
  os.makedirs(target, exist_ok=True)
  for file_name in sorted(os.listdir(source_dir)):
    stem, extension = os.path.splitext(file_name)
    if stem in names:
      new_stem = (rename or {}).get(stem, stem)
      shutil.copyfile(
        os.path.join(source_dir, file_name), os.path.join(target, new_stem + extension)
      )
  return target


def edit_header(path, old, new):
  with open(path) as handle:
    text = handle.read()
  assert old in text
  with open(path, "w") as handle:
    handle.write(text.replace(old, new))


def assert_no_dataset(data_dir):
  written = [name for _, _, files in os.walk(data_dir) for name in files]
  assert not [name for name in written if "array_record" in name or name == "dataset_info.json"]


@pytest.fixture(scope="module")
def original_500(tmp_path_factory):
  return build(ORIGINAL, tmp_path_factory.mktemp("original_500"))


@pytest.fixture(scope="module")
def wfdb_500(tmp_path_factory):
  return build(WFDB, tmp_path_factory.mktemp("wfdb_500"))


@pytest.fixture(scope="module")
def wfdb_100(tmp_path_factory):
  return build(WFDB, tmp_path_factory.mktemp("wfdb_100"), "100hz")


# --- REFERENCE.csv, SNOMED codes and folds (pure functions) ---


def test_read_reference_full_file():
  reference = labels.read_reference(REFERENCE)
  assert len(reference) == 6877
  assert reference["A0001"] == (5,)
  assert reference["A1236"] == (9, 5, 6)  # Three labels, first label first.
  assert reference["A0953"] == (6,)  # The file repeats 6 in this row.
  assert sum(10 in numbers for numbers in reference.values()) == 18


@pytest.mark.parametrize(
  "row, message",
  [
    ("A0001,11,,", "not an integer"),
    ("A0001,,,", "first label is empty"),
    ("X1,1,,", "record name"),
  ],
)
def test_read_reference_rejects_bad_rows(tmp_path, row, message):
  path = tmp_path / labels.REFERENCE_FILENAME
  path.write_text("Recording,First_label,Second_label,Third_label\n" + row + "\n")
  with pytest.raises(Icbeb2018SourceError, match=message) as error:
    labels.read_reference(path)
  assert str(path) in str(error.value)


def test_reference_classes_and_label10():
  assert labels.reference_classes((9, 5, 6)) == (8, 4, 5)
  assert labels.reference_classes((10,)) is None
  assert labels.reference_classes((10,), label10="norm") == (0,)
  with pytest.raises(ValueError, match="label10"):
    labels.reference_classes((1,), label10="keep")
  np.testing.assert_array_equal(labels.multi_hot((8, 4, 5)), [0, 0, 0, 0, 1, 1, 0, 0, 1])


def test_snomed_mapping():
  for code, name in labels.SNOMED_TO_CLASS.items():
    assert labels.snomed_classes([code]) == ((labels.CLASS_NAMES.index(name),), ())
  assert labels.snomed_classes(["427172004", "164884008"]) == ((6,), ())  # Both mean PVC.
  assert labels.snomed_classes(["59118001", "999", "164889003"]) == ((4, 1), ("999",))
  assert labels.snomed_classes(["251146004"]) == ((), ("251146004",))
  assert labels.parse_dx_codes(["Age: 74", "Dx: 59118001, 164889003", "Rx: Unknown"]) == (
    "59118001",
    "164889003",
  )
  assert labels.parse_dx_codes(["Age: 74", "Sex: Male"]) is None


def test_folds_are_deterministic_balanced_and_stratified():
  reference = labels.read_reference(REFERENCE)
  folds = labels.assign_folds(reference)
  assert folds == labels.assign_folds(dict(reversed(list(reference.items()))))
  assert folds != labels.assign_folds(reference, seed=labels.FOLD_SEED + 1)
  assert sorted(Counter(folds.values()).values()) == [687] * 3 + [688] * 7
  first = np.zeros((labels.NUM_FOLDS, 11))
  every = np.zeros((labels.NUM_FOLDS, 11))
  for name, numbers in reference.items():
    first[folds[name] - 1, numbers[0]] += 1
    every[folds[name] - 1, list(numbers)] += 1
  # First labels (label 10 included) are dealt out exactly: within +-1 of the expectation.
  assert np.abs(first - first.mean(0)).max() < 1
  # Second and third labels are spread by their label combination only: documented tolerance 3.
  assert np.abs(every - every.mean(0)).max() <= 3


def test_split_of_fold():
  assert [labels.split_of_fold(fold) for fold in (1, 8, 9, 10)] == [
    "train",
    "train",
    "validation",
    "test",
  ]


# --- Source detection ---


def test_detect_form_and_reference_location():
  assert sources.detect_form(ORIGINAL) == ("original", [f"A{i}" for i in range(1980, 1990)])
  assert sources.detect_form(WFDB) == ("wfdb", [f"A{i:04d}" for i in range(1, 11)])
  assert sources.find_reference(ORIGINAL) == os.path.abspath(REFERENCE)
  assert sources.find_reference(DUMMY) == os.path.abspath(REFERENCE)


def test_detect_form_names_subfolders_holding_records():
  with pytest.raises(Icbeb2018SourceError, match="original_mat, wfdb; point manual_dir") as error:
    sources.detect_form(DUMMY)
  assert DUMMY in str(error.value)


def test_detect_form_rejects_mixed_forms(tmp_path):
  copy_records(tmp_path, WFDB, {"A0001"})
  copy_records(tmp_path, ORIGINAL, {"A1980"})
  with pytest.raises(Icbeb2018SourceError, match="mixes the two forms.*A1980"):
    sources.detect_form(tmp_path)


# --- Builds from the dummy data ---


def test_original_form_build(original_500):
  info = original_500.info
  assert {split: info.splits[split].num_examples for split in SPLITS} == {
    "train": 7,
    "validation": 2,
    "test": 1,
  }
  assert info.metadata["class_names"] == list(labels.CLASS_NAMES)
  assert info.metadata["sampling_rate"] == 500
  assert info.metadata["source_form"] == "original"
  found = examples(original_500)
  full_folds = labels.assign_folds(labels.read_reference(REFERENCE))
  for name, example in found.items():
    np.testing.assert_array_equal(example["label"], reference_label(name))
    # The fold is the one of the whole label file, whatever subset of records is present.
    assert example["strat_fold"] == full_folds[name]
    assert example["split"] == labels.split_of_fold(full_folds[name])
  a1988 = found["A1988"]  # 54 s, the longest dummy record, stored at full length.
  assert a1988["ecg"].shape == (27157, 12) and a1988["ecg"].dtype == np.float32
  assert a1988["length"] == 27157
  features = info.features
  assert (features["length"].np_dtype, features["strat_fold"].np_dtype) == (np.int32, np.int32)
  assert (features["index"].np_dtype, features["age"].np_dtype) == (np.int64, np.float32)
  np.testing.assert_array_equal(a1988["ecg"], read_record(os.path.join(ORIGINAL, "A1988")).signal)
  assert (found["A1980"]["age"], found["A1980"]["sex"]) == (52.0, 0)
  assert (found["A1981"]["age"], found["A1981"]["sex"]) == (48.0, 1)


def test_index_is_dense_in_record_name_order(original_500, wfdb_500):
  for builder in (original_500, wfdb_500):
    for split in builder.info.splits:
      source = builder.as_data_source(split)
      stored = [(source[i]["index"], source[i]["record_id"]) for i in range(len(source))]
      # Position i holds index i, and indices follow the record names.
      assert [index for index, _ in stored] == list(range(len(source)))
      assert [name for _, name in stored] == sorted(name for _, name in stored)


def test_wfdb_form_build(wfdb_500):
  info = wfdb_500.info
  # The ten records fall in folds 1-8 and 10 (dummy_data/README.md): no validation split.
  assert {split: info.splits[split].num_examples for split in info.splits} == {
    "train": 8,
    "test": 2,
  }
  assert info.metadata["source_form"] == "wfdb"
  found = examples(wfdb_500)
  assert found["A0005"]["ecg"].shape == (12500, 12) and found["A0005"]["length"] == 12500
  assert (found["A0002"]["age"], found["A0002"]["sex"]) == (49.0, 1)
  for name, example in found.items():
    np.testing.assert_array_equal(example["label"], reference_label(name))


def test_snomed_labels_equal_reference_labels_without_reference(tmp_path):
  """The header codes alone (no REFERENCE.csv in reach) give REFERENCE.csv's labels."""
  manual_dir = copy_records(tmp_path / "records" / "wfdb", WFDB, {f"A{i:04d}" for i in range(11)})
  plan = sources.plan_records(manual_dir)
  assert plan.reference_path is None and len(plan.records) == 10
  header_labels = {record.name: record.classes for record in plan.records}
  assert labels.assign_folds({n: [c + 1 for c in cs] for n, cs in header_labels.items()}) == {
    record.name: record.fold for record in plan.records
  }
  found = examples(build(manual_dir, tmp_path / "data"))
  for name, example in found.items():
    np.testing.assert_array_equal(example["label"], reference_label(name))


def test_100hz_resampling(wfdb_100, wfdb_500):
  assert wfdb_100.info.metadata["sampling_rate"] == 100
  fast, slow = examples(wfdb_500), examples(wfdb_100)
  for name in ("A0004", "A0008"):  # 5974 and 7588 samples: not multiples of 5.
    assert slow[name]["length"] == math.ceil(fast[name]["length"] / 5) == len(slow[name]["ecg"])
    np.testing.assert_allclose(slow[name]["ecg"], resample(fast[name]["ecg"], 500, 100), atol=1e-6)
  assert slow["A0004"]["ecg"].shape == (1195, 12)


def test_multi_label_records(tmp_path):
  """Multi-hot labels from REFERENCE.csv's rows and from a WFDB header with several codes."""
  # A1236 is a three-label row of REFERENCE.csv (STE, RBBB, PAC); A1980's file stands in for it.
  original = copy_records(tmp_path / "original", ORIGINAL, {"A1980"}, rename={"A1980": "A1236"})
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  (found,) = examples(build(original, tmp_path / "data_original")).values()
  np.testing.assert_array_equal(found["label"], [0, 0, 0, 0, 1, 1, 0, 0, 1])
  wfdb = copy_records(tmp_path / "wfdb" / "records", WFDB, {"A0001"})
  edit_header(os.path.join(wfdb, "A0001.hea"), "#Dx: 59118001", "#Dx: 59118001,164889003,999")
  plan = sources.plan_records(wfdb)
  assert plan.unmapped_codes == {"999": 1}
  (found,) = examples(build(wfdb, tmp_path / "data_wfdb")).values()
  np.testing.assert_array_equal(found["label"], [0, 1, 0, 0, 1, 0, 0, 0, 0])


def test_label10_records_dropped_by_default_or_read_as_norm(tmp_path):
  # A0716 is labelled 10 in REFERENCE.csv; A1980's file stands in for it.
  manual_dir = copy_records(tmp_path / "records", ORIGINAL, {"A1980"}, rename={"A1980": "A0716"})
  copy_records(manual_dir, ORIGINAL, {"A1981"})
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  dropping = build(manual_dir, tmp_path / "data", "500hz")
  assert set(examples(dropping)) == {"A1981"}
  assert dropping.info.metadata["dropped_records"] == {sources.DROP_LABEL10: 1}
  found = examples(build(manual_dir, tmp_path / "data", "500hz_label10_norm"))
  np.testing.assert_array_equal(found["A0716"]["label"], labels.multi_hot([0]))
  full_folds = labels.assign_folds(labels.read_reference(REFERENCE))
  assert found["A0716"]["strat_fold"] == full_folds["A0716"]


def test_records_without_reference_row_or_known_code_are_dropped(tmp_path):
  manual_dir = copy_records(tmp_path / "wfdb", WFDB, {"A0001", "A0002", "A0003"})
  edit_header(os.path.join(manual_dir, "A0002.hea"), "#Dx: 426783006", "#Dx: 251146004")
  edit_header(os.path.join(manual_dir, "A0003.hea"), "#Dx: 164889003\n", "")
  plan = sources.plan_records(manual_dir)
  assert [record.name for record in plan.records] == ["A0001"]
  assert plan.dropped == {sources.DROP_NO_KNOWN_CODE: ("A0002",), sources.DROP_NO_DX: ("A0003",)}
  copy_records(tmp_path / "original", ORIGINAL, {"A1980"}, rename={"A1980": "A9999"})
  copy_records(tmp_path / "original", ORIGINAL, {"A1981"})
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  plan = sources.plan_records(tmp_path / "original")
  assert [record.name for record in plan.records] == ["A1981"]
  assert plan.dropped == {sources.DROP_NO_REFERENCE_ROW: ("A9999",)}


def test_header_labels_win_over_reference_and_mismatches_are_reported(tmp_path):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  manual_dir = copy_records(tmp_path / "wfdb", WFDB, {"A0001", "A0002"})
  edit_header(os.path.join(manual_dir, "A0002.hea"), "#Dx: 426783006", "#Dx: 164889003")
  plan = sources.plan_records(manual_dir)
  assert plan.reference_path == str(tmp_path / labels.REFERENCE_FILENAME)
  assert plan.label_mismatches == ("A0002",)
  assert [record.classes for record in plan.records] == [(4,), (1,)]


# --- Bad input: a clear error naming the file, and nothing left in data_dir ---


def test_manual_dir_must_be_given(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  for manual_dir in (None, tmp_path / "missing", empty):
    with pytest.raises(Icbeb2018SourceError, match="manual_dir holding the records must be given"):
      build(manual_dir, tmp_path / "data")
  assert_no_dataset(tmp_path / "data")


def test_original_form_needs_reference(tmp_path):
  manual_dir = copy_records(tmp_path / "records", ORIGINAL, {"A1980"})
  with pytest.raises(Icbeb2018SourceError, match="needs REFERENCE.csv"):
    build(manual_dir, tmp_path / "data")
  assert_no_dataset(tmp_path / "data")


def _unreadable_mat(folder):
  copy_records(folder, ORIGINAL, {"A1980"})
  (folder / "A1981.mat").write_bytes(b"not a MATLAB file")
  return folder / "A1981.mat", "cannot read the MATLAB file"


def _unknown_lead(folder):
  copy_records(folder, WFDB, {"A0001", "A0002"})
  edit_header(folder / "A0002.hea", " V6\n", " V7\n")
  return folder / "A0002.hea", "unknown ECG lead name 'V7'"


def _missing_lead(folder):
  """A0001 rewritten as a valid WFDB record without lead V6."""
  source = wfdb.rdrecord(os.path.join(WFDB, "A0001"), physical=False)
  os.makedirs(folder)
  wfdb.wrsamp(
    "A0001",
    fs=500,
    units=source.units[:11],
    sig_name=source.sig_name[:11],
    d_signal=source.d_signal[:, :11],
    fmt=["16"] * 11,
    adc_gain=source.adc_gain[:11],
    baseline=source.baseline[:11],
    comments=source.comments,
    write_dir=str(folder),
  )
  return folder / "A0001.hea", "leads I, II, .*, V5 differ from the 12 standard leads"


def _wrong_rate(folder):
  """A0002 (train, written first) is fine; A0001 (test, written last) is not."""
  copy_records(folder, WFDB, {"A0001", "A0002"})
  edit_header(folder / "A0001.hea", "A0001 12 500 7500", "A0001 12 250 7500")
  return folder / "A0001.hea", "sampling rate 250 Hz, expected 500 Hz"


@pytest.mark.parametrize("make_bad", [_unreadable_mat, _unknown_lead, _missing_lead, _wrong_rate])
def test_bad_records_fail_naming_the_file(tmp_path, make_bad):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  bad_file, message = make_bad(tmp_path / "records")
  with pytest.raises(EcgReadError, match=message) as error:
    build(tmp_path / "records", tmp_path / "data")
  assert str(bad_file) in str(error.value)
  assert_no_dataset(tmp_path / "data")
