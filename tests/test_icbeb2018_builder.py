"""The icbeb2018 TFDS builder: labels, folds, splits, the released forms, bad input (no TensorFlow).

Tests marked `needs_shared` read the first Challenge 2020 release from the project's real-data
folder, `../shared/data/cpsc2018` beside the repository.
"""

import functools
import math
import os
import pathlib
import shutil
from collections import Counter

import builder_helpers
import ml_collections
import numpy as np
import pytest
import wfdb
from builder_helpers import assert_no_dataset, examples

from data_builders.icbeb2018 import Builder, labels, preprocessing, sources
from data_builders.icbeb2018.labels import Icbeb2018SourceError
from lead_kt import input_pipeline
from lead_kt.ecg_io import EcgReadError, read_record, resample

DUMMY = os.path.join(os.path.dirname(labels.__file__), "dummy_data")
REFERENCE = os.path.join(DUMMY, labels.REFERENCE_FILENAME)
ORIGINAL = os.path.join(DUMMY, "original_mat")
WFDB = os.path.join(DUMMY, "wfdb")
SPLITS = ("train", "validation", "test")
SHARED_CPSC2018 = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cpsc2018"
# The first Challenge 2020 release: `#Dx:` in CPSC abbreviations (A0001..A0100).
EARLY = SHARED_CPSC2018 / "challenge2020_early"
needs_shared = pytest.mark.skipif(
  not EARLY.is_dir(), reason=f"needs the real-data folder {EARLY} beside the repository"
)
build = functools.partial(builder_helpers.build, Builder)


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


def test_dx_mapping_of_snomed_codes_and_abbreviations():
  snomed, abbreviation = labels.SNOMED_NOTATION, labels.ABBREVIATION_NOTATION
  for mapping, notation in (
    (labels.SNOMED_TO_CLASS, snomed),
    (labels.ABBREVIATION_TO_CLASS, abbreviation),
  ):
    for entry, name in mapping.items():
      index = labels.CLASS_NAMES.index(name)
      assert labels.dx_labels([entry]) == labels.DxLabels((index,), (), frozenset({notation}))
  # Both notations name the 9 classes in challenge order (REFERENCE.csv's numbers 1..9).
  assert [
    labels.dx_labels([abbreviation]).classes for abbreviation in labels.ABBREVIATION_TO_CLASS
  ] == [(index,) for index in range(9)]
  assert labels.dx_labels(["427172004", "164884008"]).classes == (6,)  # Both mean PVC.
  assert labels.dx_labels(["59118001", "999", "164889003"]) == labels.DxLabels(
    (4, 1), ("999",), frozenset({snomed})
  )
  assert labels.dx_labels(["AF", "RBBB", "AF"]).classes == (1, 4)
  assert labels.dx_labels(["RBBB", "59118001"]) == labels.DxLabels(
    (4,), (), frozenset({snomed, abbreviation})
  )
  assert labels.dx_labels(["251146004", "LQT"]) == labels.DxLabels(
    (), ("251146004", "LQT"), frozenset()
  )
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


# --- Finding records ---


def test_find_records_in_folders_and_subfolders_and_reference_location():
  found = sources.find_records(ORIGINAL)
  assert [record.name for record in found] == [f"A{i}" for i in range(1980, 1990)]
  assert {record.form for record in found} == {sources.ORIGINAL_FORM}
  assert found[0].file == os.path.join(ORIGINAL, "A1980.mat")
  found = sources.find_records(WFDB)
  assert [(record.name, record.form) for record in found] == [
    (f"A{i:04d}", sources.WFDB_FORM) for i in range(1, 11)
  ]
  assert found[0].file == os.path.join(WFDB, "A0001.hea")
  # Both forms, one per subfolder: all 20 records.
  assert Counter(record.form for record in sources.find_records(DUMMY)) == {
    "original": 10,
    "wfdb": 10,
  }
  assert sources.find_reference(ORIGINAL) == os.path.abspath(REFERENCE)
  assert sources.find_reference(DUMMY) == os.path.abspath(REFERENCE)


def test_find_records_names_a_folder_without_records(tmp_path):
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "A0001.txt").write_text("")
  with pytest.raises(Icbeb2018SourceError, match="no CPSC2018 records.*or its subfolders") as error:
    sources.find_records(tmp_path)
  assert str(tmp_path) in str(error.value)


@needs_shared
def test_a_record_present_twice_is_an_error_naming_both_files(tmp_path):
  manual_dir = tmp_path / "records"
  copy_records(manual_dir / "snomed", WFDB, {"A0001", "A0002"})
  copy_records(manual_dir / "early", EARLY, {"A0001", "A0003"})
  with pytest.raises(Icbeb2018SourceError, match="record A0001 is present twice") as error:
    build(manual_dir, tmp_path / "data")
  assert str(manual_dir / "early" / "A0001.hea") in str(error.value)
  assert str(manual_dir / "snomed" / "A0001.hea") in str(error.value)
  assert_no_dataset(tmp_path / "data")


def test_a_record_in_the_original_and_the_wfdb_form_is_an_error(tmp_path):
  copy_records(tmp_path / "original", ORIGINAL, {"A1980"}, rename={"A1980": "A0002"})
  copy_records(tmp_path / "wfdb", WFDB, {"A0002"})
  with pytest.raises(Icbeb2018SourceError, match="record A0002 is present twice") as error:
    sources.find_records(tmp_path)
  assert str(tmp_path / "original" / "A0002.mat") in str(error.value)
  assert str(tmp_path / "wfdb" / "A0002.hea") in str(error.value)


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
  assert info.metadata["source_forms"] == {"original": 10}
  assert info.metadata["dx_notations"] == {}
  assert info.metadata["split"] == labels.FOLDS_SPLIT
  found = examples(original_500)
  reference = labels.read_reference(REFERENCE)
  full_folds = labels.assign_folds(reference)
  for name, example in found.items():
    np.testing.assert_array_equal(example["label"], reference_label(name))
    assert example["first_label"] == reference[name][0] - 1
    # The fold is the one of the whole label file, whatever subset of records is present.
    assert example["strat_fold"] == full_folds[name]
    assert example["split"] == labels.split_of_fold(full_folds[name])
  a1988 = found["A1988"]  # 54 s, the longest dummy record, stored at full length.
  assert a1988["ecg"].shape == (27157, 12) and a1988["ecg"].dtype == np.float32
  assert a1988["length"] == 27157
  features = info.features
  assert (features["length"].np_dtype, features["strat_fold"].np_dtype) == (np.int32, np.int32)
  assert features["first_label"].np_dtype == np.int32
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
  assert info.metadata["source_forms"] == {"wfdb": 10}
  assert info.metadata["dx_notations"] == {"snomed": 10}
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
  builder = build(original, tmp_path / "data_original")
  (found,) = examples(builder).values()
  np.testing.assert_array_equal(found["label"], [0, 0, 0, 0, 1, 1, 0, 0, 1])
  # The first label is REFERENCE.csv's First_label (STE), not the lowest positive class (RBBB),
  # and the input pipeline hands it to the MVKT other_class negatives.
  assert found["first_label"] == labels.CLASS_NAMES.index("STE")
  data_cfg = ml_collections.ConfigDict(
    {
      "name": "icbeb2018/500hz",
      "data_dir": str(tmp_path / "data_original"),
      "manual_dir": "",
      "worker_count": 0,
      "cv_test_fold": 0,
    }
  )
  (split,) = builder.info.splits
  assert input_pipeline.split_first_labels(data_cfg, split).tolist() == [8]
  wfdb = copy_records(tmp_path / "wfdb" / "records", WFDB, {"A0001"})
  edit_header(os.path.join(wfdb, "A0001.hea"), "#Dx: 59118001", "#Dx: 59118001,164889003,999")
  plan = sources.plan_records(wfdb)
  assert plan.unknown_dx == {"999": 1}
  (found,) = examples(build(wfdb, tmp_path / "data_wfdb")).values()
  np.testing.assert_array_equal(found["label"], [0, 1, 0, 0, 1, 0, 0, 0, 0])
  assert found["first_label"] == labels.CLASS_NAMES.index("RBBB")  # The first #Dx label.


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
  assert plan.dropped == {sources.DROP_NO_KNOWN_DX: ("A0002",), sources.DROP_NO_DX: ("A0003",)}
  assert plan.unknown_dx == {"251146004": 1}
  copy_records(tmp_path / "original", ORIGINAL, {"A1980"}, rename={"A1980": "A9999"})
  copy_records(tmp_path / "original", ORIGINAL, {"A1981"})
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  plan = sources.plan_records(tmp_path / "original")
  assert [record.name for record in plan.records] == ["A1981"]
  assert plan.dropped == {sources.DROP_NO_REFERENCE_ROW: ("A9999",)}


def test_reference_labels_every_form_even_headers_without_known_labels(tmp_path):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  manual_dir = copy_records(tmp_path / "wfdb", WFDB, {"A0001", "A0002", "A0003"})
  edit_header(os.path.join(manual_dir, "A0001.hea"), "#Dx: 59118001", "#Dx: 59118001,999")
  edit_header(os.path.join(manual_dir, "A0002.hea"), "#Dx: 426783006", "#Dx: 251146004")
  edit_header(os.path.join(manual_dir, "A0003.hea"), "#Dx: 164889003\n", "")
  plan = sources.plan_records(manual_dir)
  assert plan.reference_path == str(tmp_path / labels.REFERENCE_FILENAME)
  assert plan.dropped == {} and plan.unknown_dx == {"999": 1, "251146004": 1}
  assert [record.classes for record in plan.records] == [(4,), (0,), (1,)]  # RBBB, NORM, AF


# --- The first Challenge 2020 release: #Dx in CPSC abbreviations (real files) ---


@needs_shared
@pytest.mark.parametrize("with_reference", [False, True], ids=["headers", "reference"])
def test_abbreviation_form_builds_the_same_records_as_the_snomed_form(tmp_path, with_reference):
  names = {f"A{i:04d}" for i in range(1, 11)}  # In both forms.
  built = {}
  for notation, source in (("abbreviation", EARLY), ("snomed", SHARED_CPSC2018 / "wfdb")):
    manual_dir = copy_records(tmp_path / notation / "records", source, names)
    if with_reference:
      shutil.copyfile(REFERENCE, tmp_path / notation / labels.REFERENCE_FILENAME)
    builder = build(manual_dir, tmp_path / notation / "data")
    assert builder.info.metadata["dx_notations"] == {notation: 10}
    built[notation] = (builder, examples(builder))
  (early_builder, early), (snomed_builder, snomed) = built["abbreviation"], built["snomed"]
  assert sorted(early) == sorted(snomed) == sorted(names)
  assert list(early_builder.info.splits) == list(snomed_builder.info.splits)
  for name in names:
    assert early[name].keys() == snomed[name].keys()
    for key, value in early[name].items():
      np.testing.assert_array_equal(value, snomed[name][key], err_msg=f"{name} {key}")
    np.testing.assert_array_equal(early[name]["label"], reference_label(name))


@needs_shared
def test_a_folder_mixing_all_forms_builds(tmp_path):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  manual_dir = copy_records(tmp_path / "records", WFDB, {"A0001", "A0002", "A0003"})
  copy_records(manual_dir, ORIGINAL, {"A1980", "A1981"})
  copy_records(manual_dir, EARLY, {"A0011", "A0012", "A0043"})
  copy_records(manual_dir / "more", EARLY, {"A0013"})
  edit_header(manual_dir / "A0011.hea", "#Dx: LBBB", "#Dx: LBBB,LQT")
  plan = sources.plan_records(manual_dir)
  assert plan.dx_notations == {"snomed": 3, "abbreviation": 4}
  assert plan.unknown_dx == {"LQT": 1}
  builder = build(manual_dir, tmp_path / "data")
  assert builder.info.metadata["source_forms"] == {"wfdb": 7, "original": 2}
  found = examples(builder)
  assert sorted(found) == [
    *("A0001", "A0002", "A0003", "A0011", "A0012", "A0013", "A0043", "A1980", "A1981")
  ]
  full_folds = labels.assign_folds(labels.read_reference(REFERENCE))
  for name, example in found.items():
    np.testing.assert_array_equal(example["label"], reference_label(name))
    assert example["strat_fold"] == full_folds[name]
  # A0043's header says AF,RBBB; REFERENCE.csv's row 5,2 puts RBBB first.
  assert found["A0043"]["first_label"] == labels.CLASS_NAMES.index("RBBB")
  np.testing.assert_array_equal(found["A0013"]["ecg"], read_record(EARLY / "A0013").signal)


@needs_shared
def test_headers_disagreeing_with_reference_stop_the_build_naming_both_label_sets(tmp_path):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  manual_dir = copy_records(tmp_path / "records", EARLY, {"A0001", "A0043", "A0044"})
  copy_records(manual_dir, WFDB, {"A0002"})
  edit_header(manual_dir / "A0001.hea", "#Dx: RBBB", "#Dx: AF")
  edit_header(manual_dir / "A0043.hea", "#Dx: AF,RBBB", "#Dx: AF")
  edit_header(manual_dir / "A0002.hea", "#Dx: 426783006", "#Dx: 426783006,164931005")
  with pytest.raises(Icbeb2018SourceError, match="of 3 WFDB headers disagree") as error:
    build(manual_dir, tmp_path / "data")
  message = str(error.value)
  assert message.startswith(str(tmp_path / labels.REFERENCE_FILENAME))
  assert f"A0001 ({manual_dir / 'A0001.hea'}): #Dx AF, REFERENCE.csv RBBB" in message
  assert f"A0043 ({manual_dir / 'A0043.hea'}): #Dx AF, REFERENCE.csv RBBB, AF" in message
  assert f"A0002 ({manual_dir / 'A0002.hea'}): #Dx NORM, STE, REFERENCE.csv NORM" in message
  assert "A0044" not in message
  assert_no_dataset(tmp_path / "data")


# --- The MVKT authors' split (mvkt_split/) ---


def test_mvkt_split_lists_hold_the_authors_records_with_reference_labels():
  split_of_record = labels.read_mvkt_split()
  assert Counter(split_of_record.values()) == {"train": 5501, "validation": 688, "test": 687}
  reference = labels.read_reference(REFERENCE)
  assert set(reference) - set(split_of_record) == {"A1215"}
  for file_name in labels.MVKT_SPLIT_FILES.values():
    listed = labels.read_reference(os.path.join(labels.MVKT_SPLIT_DIR, file_name))
    for name, numbers in listed.items():
      # The lists read REFERENCE.csv's label 10 as 1 (Normal), first label first.
      assert labels.reference_classes(numbers) == labels.reference_classes(reference[name], "norm")


def test_mvkt_split_rejects_a_record_in_two_lists(tmp_path):
  for split, file_name in labels.MVKT_SPLIT_FILES.items():
    name = "A0002" if split == "test" else {"train": "A0001", "validation": "A0003"}[split]
    rows = f"{name},1,,\n" + ("A0001,1,,\n" if split == "test" else "")
    (tmp_path / file_name).write_text("Recording,First_label,Second_label,Third_label\n" + rows)
  with pytest.raises(Icbeb2018SourceError, match="record A0001 is also listed in") as error:
    labels.read_mvkt_split(tmp_path)
  assert str(tmp_path / "TEST_reference.csv") in str(error.value)
  assert str(tmp_path / "TRAIN_reference.csv") in str(error.value)


def test_mvkt_split_build_skips_missing_records_and_reports_unlisted_ones(tmp_path):
  shutil.copyfile(REFERENCE, tmp_path / labels.REFERENCE_FILENAME)
  manual_dir = copy_records(tmp_path / "records", WFDB, {f"A{i:04d}" for i in range(1, 11)})
  # A1215 is in none of the lists; A0716 is labelled 10 in REFERENCE.csv.
  copy_records(
    manual_dir, ORIGINAL, {"A1980", "A1981"}, rename={"A1980": "A1215", "A1981": "A0716"}
  )
  split_of_record = labels.read_mvkt_split()
  full_folds = labels.assign_folds(labels.read_reference(REFERENCE))
  for config in ("500hz_mvkt_split", "500hz_label10_norm_mvkt_split"):
    builder = build(manual_dir, tmp_path / "data", config)
    metadata = builder.info.metadata
    assert metadata["split"] == labels.MVKT_SPLIT
    assert metadata["missing_listed_records"] == 6876 - 11
    found = examples(builder)
    if config == "500hz_mvkt_split":
      assert metadata["dropped_records"] == {
        sources.DROP_LABEL10: 1,
        sources.DROP_NOT_IN_MVKT_SPLIT: 1,
      }
      assert sorted(found) == [f"A{i:04d}" for i in range(1, 11)]
    else:
      assert metadata["dropped_records"] == {sources.DROP_NOT_IN_MVKT_SPLIT: 1}
      np.testing.assert_array_equal(found["A0716"]["label"], labels.multi_hot([0]))
    for name, example in found.items():
      assert example["split"] == split_of_record[name]
      assert example["strat_fold"] == full_folds[name]  # The seeded fold, for cross-validation.
  # The seeded folds put the same records elsewhere: the option changes the splits.
  assert any(labels.split_of_fold(full_folds[name]) != split_of_record[name] for name in found)


# --- The authors' preprocessing: db6 denoising, 20 s records (preprocessing.py) ---


def test_centre_crop_or_tile():
  signal = np.arange(10.0)[:, None] * [1, -1]
  np.testing.assert_array_equal(preprocessing.centre_crop_or_tile(signal, 4)[:, 0], [3, 4, 5, 6])
  np.testing.assert_array_equal(preprocessing.centre_crop_or_tile(signal, 10), signal)
  tiled = preprocessing.centre_crop_or_tile(signal[:4], 10)
  np.testing.assert_array_equal(tiled[:, 1], [0, -1, -2, -3, 0, -1, -2, -3, 0, -1])


def test_wavelet_denoise_removes_baseline_wander_and_high_frequencies_per_lead():
  t = np.arange(7501) / 500.0  # An odd length: waverec returns one sample more.
  ecg_band = np.sin(2 * np.pi * 8 * t)
  wander, noise = 0.8 * np.sin(2 * np.pi * 0.1 * t), 0.3 * np.sin(2 * np.pi * 150 * t)
  signal = np.stack([ecg_band, wander + noise, 0.5 * ecg_band], axis=1).astype(np.float32)
  denoised = preprocessing.wavelet_denoise(signal)
  assert denoised.shape == signal.shape and denoised.dtype == np.float32
  middle = slice(500, -500)  # Away from the record's ends.
  assert np.corrcoef(denoised[middle, 0], ecg_band[middle])[0, 1] > 0.998
  assert np.abs(denoised[middle, 1]).max() < 0.03  # From amplitudes 0.8 and 0.3.
  # Each lead is filtered on its own.
  np.testing.assert_allclose(denoised[:, 2], 0.5 * denoised[:, 0], atol=1e-6)


def test_db6_20s_config_stores_denoised_records_of_20_s(tmp_path):
  manual_dir = copy_records(tmp_path / "records", WFDB, {"A0001", "A0004", "A0005"})
  builder = build(manual_dir, tmp_path / "data", "500hz_db6_20s")
  assert builder.info.features["ecg"].shape == (10000, 12)
  assert (builder.info.metadata["denoise"], builder.info.metadata["record_seconds"]) == ("db6", 20)
  found = examples(builder)
  for name in ("A0001", "A0004", "A0005"):  # 7500 (cropped), 5974 (tiled), 12500 (cropped).
    raw = read_record(os.path.join(WFDB, name)).signal
    expected = preprocessing.centre_crop_or_tile(preprocessing.wavelet_denoise(raw), 10000)
    np.testing.assert_array_equal(found[name]["ecg"], expected)
    assert found[name]["length"] == 10000


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
  with pytest.raises(
    Icbeb2018SourceError, match=r"original .mat records \(A1980\) need REFERENCE.csv"
  ):
    build(manual_dir, tmp_path / "data")
  assert_no_dataset(tmp_path / "data")


def _unreadable_mat(folder):
  copy_records(folder, ORIGINAL, {"A1980"})
  (folder / "A1981.mat").write_bytes(b"not a MATLAB file")
  return folder / "A1981.mat", "cannot read the MATLAB file"


def _unknown_lead(folder):
  copy_records(folder, WFDB, {"A0001", "A0002"})
  edit_header(folder / "A0002.hea", " V6\n", " V7\n")
  return folder / "A0002.hea", r"differ from the 12 standard leads .* read as ECG leads: V7\)\."


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
