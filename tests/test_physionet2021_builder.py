"""The physionet2021 TFDS builder: the challenge's classes, databases, folds, the records' quirks,
bad input, and the input pipeline (no TensorFlow).

Real records: the Challenge 2021 release of PTB-XL and CPSC 2018 from the project's real-data
folder (`../shared/data`, tests marked `needs_shared`), and one Georgia and one Ningbo record in
`data_builders/physionet2021/dummy_data`. The quirks of the other databases (257 Hz, 1000 Hz,
30-minute and 5-second records, other gains and units, a record line naming the `.mat`, flat,
missing and missing-sample leads) are written as header variants of a real record's samples.
"""

import csv
import functools
import os
import pathlib
from collections import Counter

import builder_helpers
import numpy as np
import pytest
import scipy.io
from builder_helpers import assert_no_dataset, examples

from data_builders.icbeb2018.labels import parse_dx_codes
from data_builders.physionet2021 import Builder, labels, sources
from data_builders.physionet2021 import physionet2021_dataset_builder as builder_module
from data_builders.physionet2021.labels import Physionet2021SourceError
from lead_kt import input_pipeline
from lead_kt.ecg_io import STANDARD_LEADS, read_record, resample

DUMMY = pathlib.Path(labels.__file__).parent / "dummy_data"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
PTBXL_2021 = SHARED / "ptb-xl-cinc2021"
CPSC_2021 = SHARED / "cpsc2018" / "wfdb"
needs_shared = pytest.mark.skipif(
  not PTBXL_2021.is_dir() or not CPSC_2021.is_dir(),
  reason=f"needs the real-data folder {SHARED} beside the repository",
)
SPLITS = ("train", "validation", "test")
NSR = "426783006"
# 30 minutes at 257 Hz, as the INCART records.
INCART_SAMPLES = 462600
build = functools.partial(builder_helpers.build, Builder)


def real_digital(name="HR00001"):
  """int16 [T, 12]: the stored samples of a real Challenge record."""
  return scipy.io.loadmat(PTBXL_2021 / f"{name}.mat")["val"].T


def write_record(folder, name, digital, fs, gain="1000/mV", dx=NSR, record_name=None, leads=None):
  """A record in the Challenge form (`.mat` as the challenge writes it, format 16 at byte 24)."""
  leads = leads or STANDARD_LEADS
  os.makedirs(folder, exist_ok=True)
  scipy.io.savemat(os.path.join(folder, f"{name}.mat"), {"val": digital.T}, format="4")
  lines = [f"{record_name or name} {len(leads)} {fs} {len(digital)}"]
  for column, lead in enumerate(leads):
    lines.append(f"{name}.mat 16+24 {gain} 16 0 {digital[0, column]} 0 0 {lead}")
  lines += ["#Age: 61", "#Sex: Female", f"#Dx: {dx}", "#Rx: Unknown", "#Hx: Unknown"]
  pathlib.Path(folder, f"{name}.hea").write_text("\n".join(lines) + "\n")


def link_records(folder, source_dir, names=None):
  os.makedirs(folder, exist_ok=True)
  for path in sorted(pathlib.Path(source_dir).iterdir()):
    if names is None or path.stem in names:
      os.symlink(path, os.path.join(folder, path.name))


def quirks(folder):
  """Header variants of HR00001's samples, one per quirk of the collection."""
  digital = real_digital()
  flat_v1 = digital.copy()
  flat_v1[:, 6] = 500
  missing_samples = digital.copy()
  missing_samples[100:110, 2] = -32768
  write_record(folder, "I0001", digital, 257)  # INCART's rate, 19.5 s.
  write_record(folder, "S0001", digital, 1000)  # PTB's rate: 5 s, under 10 s.
  # The first Georgia release: a record line naming the .mat, another gain, units "mv".
  write_record(folder, "E00001", digital * 2, 500, gain="2000/mv", record_name="E00001.mat")
  write_record(folder, "Q0001", flat_v1, 500, dx="164884008,59118001,17338001")
  write_record(folder, "Q0002", missing_samples, 500)
  write_record(folder, "Q0003", digital[:, :11], 500, leads=STANDARD_LEADS[:11])
  write_record(folder, "Q0004", np.full_like(digital, 7), 500)
  write_record(folder, "Q0005", digital, 500, dx="164884008,164884008,429622005")


def collection(root):
  """The real records in the release's layouts plus the quirks, below root."""
  link_records(root / "training" / "ptb-xl" / "g1", PTBXL_2021)
  link_records(root / "training" / "cpsc_2018" / "g1", CPSC_2021)
  link_records(root / "flat", DUMMY, {"E07500", "JS20000"})
  quirks(root / "quirks")
  return root


@pytest.fixture(scope="module")
def built_500(tmp_path_factory):
  root = tmp_path_factory.mktemp("p21_500")
  return build(collection(root / "manual"), root / "data")


@pytest.fixture(scope="module")
def built_holdout(tmp_path_factory):
  """100 Hz, records without a scored label dropped, PTB-XL held out; a 30-minute record added."""
  root = tmp_path_factory.mktemp("p21_holdout")
  manual_dir = collection(root / "manual")
  write_record(manual_dir / "quirks", "I0002", np.resize(real_digital(), (INCART_SAMPLES, 12)), 257)
  return build(manual_dir, root / "data", "100hz_scored_only_holdout_ptb_xl")


# --- The challenge's classes, databases and folds (pure functions) ---


def test_scored_classes_are_the_challenges_26_with_its_equivalent_codes_merged():
  assert len(labels.CLASS_NAMES) == 26
  merged = {scored.codes: scored.name for scored in labels.SCORED_CLASSES if len(scored.codes) > 1}
  assert merged == {
    ("713427006", "59118001"): "CRBBB|RBBB",
    ("284470004", "63593006"): "PAC|SVPB",
    ("427172004", "17338001"): "PVC|VPB",
    ("733534002", "164909002"): "CLBBB|LBBB",
  }
  with open(labels.DX_MAPPING_FILE, newline="") as handle:
    mapping = {row["SNOMEDCTCode"]: row["Abbreviation"] for row in csv.DictReader(handle)}
  assert len(mapping) == 30
  scored_codes = [code for codes in labels.CLASS_CODES for code in codes.split("|")]
  assert sorted(scored_codes) == sorted(mapping)
  assert labels.CLASS_NAMES[:4] == ("AF", "AFL", "BBB", "Brady")  # weights.csv's order.


def test_a_challenge_table_disagreeing_with_the_other_is_an_error_naming_it(tmp_path):
  weights = tmp_path / "weights.csv"
  text = pathlib.Path(labels.WEIGHTS_FILE).read_text()
  weights.write_text(text.replace(",59931005\n", ",59931005|999\n", 1))
  with pytest.raises(Physionet2021SourceError, match="lacks the scored codes 999") as error:
    labels.read_scored_classes(str(weights), labels.DX_MAPPING_FILE)
  assert labels.DX_MAPPING_FILE in str(error.value)


def test_dx_labels_merge_equivalents_and_keep_unscored_codes_once():
  crbbb, pac = labels.CLASS_NAMES.index("CRBBB|RBBB"), labels.CLASS_NAMES.index("PAC|SVPB")
  irbbb = labels.CLASS_NAMES.index("IRBBB")  # Incomplete RBBB: a class of its own.
  assert labels.dx_labels(["713426002", "59118001"], "h").classes == (crbbb, irbbb)
  assert labels.dx_labels(["713427006", "59118001"], "h") == labels.DxLabels((crbbb,), ())
  # Trailing and doubled commas (JS00344, JS03287) are no codes; Georgia headers repeat codes.
  assert parse_dx_codes(["Age: 50", "Dx: 164889003,,59118001,"]) == ("164889003", "59118001")
  found = labels.dx_labels(["284470004", "63593006", "55930002", "284470004", "55930002"], "h")
  assert found == labels.DxLabels((pac,), ("55930002",))
  with pytest.raises(Physionet2021SourceError, match="'AF' is not a SNOMED-CT code") as error:
    labels.dx_labels(["AF"], "/data/A0001.hea")
  assert "/data/A0001.hea" in str(error.value)


def test_database_of_record_names():
  names = ["A0001", "Q3581", "I0074", "S0549", "HR21837", "E10344", "JS00001", "JS10646", "JS10647"]
  assert [labels.database_of(name) for name in names] == [
    "cpsc_2018",
    "cpsc_2018_extra",
    "st_petersburg_incart",
    "ptb",
    "ptb_xl",
    "georgia",
    "chapman_shaoxing",
    "chapman_shaoxing",
    "ningbo",
  ]
  for name in ("00001_hr", "HR00001.mat", "X1", "A"):
    assert labels.database_of(name) is None
  assert (labels.ptbxl_ecg_id("HR00042"), labels.ptbxl_ecg_id("A0042")) == (42, -1)


def test_folds_are_seeded_hashes_of_the_name_and_splits_follow_them():
  names = [f"JS{number:05d}" for number in range(20000)]
  folds = [labels.fold_of(name) for name in names]
  assert folds == [labels.fold_of(name) for name in names]  # Deterministic.
  assert folds != [labels.fold_of(name, seed=labels.FOLD_SEED + 1) for name in names]
  counts = Counter(folds)
  assert sorted(counts) == list(range(1, 11))
  assert all(abs(count - 2000) < 150 for count in counts.values())  # 2000 +- 3.4 sd.
  assert [labels.split_of(fold, "ptb") for fold in (1, 8, 9, 10)] == [
    "train",
    "train",
    "validation",
    "test",
  ]
  assert [labels.split_of(fold, "ptb", holdout="ptb") for fold in (1, 9, 10)] == ["test"] * 3
  assert [labels.split_of(fold, "georgia", holdout="ptb") for fold in (1, 9, 10)] == [
    "train",
    "train",
    "validation",
  ]


# --- Finding and planning records ---


@needs_shared
def test_records_are_found_in_any_layout_and_other_headers_skipped(tmp_path):
  link_records(tmp_path / "training" / "ptb-xl" / "g1", PTBXL_2021, {"HR00001", "HR00002"})
  link_records(tmp_path / "flat", CPSC_2021, {"A0001"})
  ptbxl_release = SHARED / "ptb-xl" / "records500" / "00000"
  link_records(tmp_path / "ptb-xl-release", ptbxl_release, {"00001_hr"})
  found, skipped = sources.find_records(str(tmp_path))
  assert [(record.name, record.database) for record in found] == [
    ("A0001", "cpsc_2018"),
    ("HR00001", "ptb_xl"),
    ("HR00002", "ptb_xl"),
  ]
  assert found[1].header == str(tmp_path / "training" / "ptb-xl" / "g1" / "HR00001.hea")
  assert skipped == [str(tmp_path / "ptb-xl-release" / "00001_hr.hea")]
  # One database folder alone is a manual_dir as good as the whole tree.
  found, _ = sources.find_records(str(tmp_path / "training" / "ptb-xl"))
  assert [record.name for record in found] == ["HR00001", "HR00002"]


@needs_shared
def test_plan_keeps_or_drops_records_without_a_scored_label(tmp_path):
  link_records(tmp_path, CPSC_2021, {"A0001", "A0005"})  # A0005: 164884008, an unscored code.
  kept = sources.plan_records(str(tmp_path))
  by_name = {record.name: record for records in kept.records.values() for record in records}
  assert by_name["A0005"].classes == () and by_name["A0005"].unscored == ("164884008",)
  assert by_name["A0001"].classes == (labels.CLASS_NAMES.index("CRBBB|RBBB"),)
  assert kept.unscored_codes == {"164884008": 1} and kept.dropped == {}
  dropped = sources.plan_records(str(tmp_path), keep_unscored=False)
  assert [r.name for records in dropped.records.values() for r in records] == ["A0001"]
  assert dropped.dropped == {sources.DROP_NO_SCORED_LABEL: ("A0005",)}


def test_a_held_out_database_must_be_present(tmp_path):
  write_record(tmp_path, "A0001", np.ones((10, 12), np.int16), 500)
  assert sources.plan_records(str(tmp_path), holdout="cpsc_2018").records["test"]
  with pytest.raises(Physionet2021SourceError, match="no record of ptb, the database held out"):
    sources.plan_records(str(tmp_path), holdout="ptb")


# --- Builds ---


@needs_shared
def test_build_stores_every_usable_record_with_its_labels(built_500):
  info = built_500.info
  found = examples(built_500)
  assert info.metadata["class_names"] == list(labels.CLASS_NAMES)
  assert info.metadata["records_per_database"] == {
    "cpsc_2018": 10,
    "cpsc_2018_extra": 2,
    "georgia": 2,
    "ningbo": 1,
    "ptb": 1,
    "ptb_xl": 20,
    "st_petersburg_incart": 1,
  }
  assert sum(info.splits[split].num_examples for split in info.splits) == len(found) == 37
  for name, example in found.items():
    assert example["strat_fold"] == labels.fold_of(name)
    assert example["split"] == labels.split_of(labels.fold_of(name), labels.database_of(name))
    assert example["database"].decode() == labels.database_of(name)
    assert example["ecg"].shape == (example["length"], 12)
  # Real labels: HR00001 is `#Dx: 251146004,426783006` (LQRSV, NSR); JS20000 holds an unscored code.
  lqrsv_nsr = [labels.CLASS_NAMES.index(name) for name in ("LQRSV", "NSR")]
  np.testing.assert_array_equal(found["HR00001"]["label"], labels.multi_hot(lqrsv_nsr))
  assert found["JS20000"]["unscored_dx"] == b"55930002"
  assert found["E07500"]["unscored_dx"] == b"67741000119109"
  assert (found["HR00001"]["age"], found["HR00001"]["sex"]) == (56.0, 1)
  # Three equivalent codes of two classes; the unscored one kept.
  assert np.flatnonzero(found["Q0001"]["label"]).tolist() == [
    labels.CLASS_NAMES.index("CRBBB|RBBB"),
    labels.CLASS_NAMES.index("PVC|VPB"),
  ]
  assert found["Q0001"]["unscored_dx"] == b"164884008"
  # Without a scored label: kept with an all-zero label, its codes once each.
  assert not found["Q0005"]["label"].any()
  assert found["Q0005"]["unscored_dx"] == b"164884008,429622005"


@needs_shared
def test_ptbxl_records_are_ptbxl_samples_with_their_ecg_id(built_500):
  found = examples(built_500)
  for ecg_id in range(1, 11):
    ptbxl = read_record(SHARED / "ptb-xl" / "records500" / "00000" / f"{ecg_id:05d}_hr").signal
    np.testing.assert_array_equal(found[f"HR{ecg_id:05d}"]["ecg"], ptbxl)
    assert found[f"HR{ecg_id:05d}"]["ptbxl_ecg_id"] == ecg_id
  assert found["A0001"]["ptbxl_ecg_id"] == -1


@needs_shared
def test_rates_lengths_gains_units_and_mat_named_headers(built_500):
  found = examples(built_500)
  source = real_digital().astype(np.float32) / 1000  # HR00001 in mV.
  np.testing.assert_array_equal(found["HR00001"]["ecg"], source)
  # 257 Hz and 1000 Hz records resampled to 500 Hz; their lengths follow.
  np.testing.assert_array_equal(found["I0001"]["ecg"], resample(source, 257, 500))
  assert found["I0001"]["length"] == round(5000 * 500 / 257)
  assert found["S0001"]["length"] == 2500
  # Gain 2000/mv with doubled samples, the record line naming E00001.mat: the same millivolts.
  np.testing.assert_array_equal(found["E00001"]["ecg"], source)
  assert built_500.info.metadata["durations_s"]["ptb"] == [5.0, 5.0]
  assert built_500.info.metadata["durations_s"]["cpsc_2018"] == [10.0, 25.0]


@needs_shared
def test_flat_missing_and_unreadable_leads_are_reported_not_filled(built_500):
  found = examples(built_500)
  metadata = built_500.info.metadata
  # A flat lead is stored as recorded (0.5 mV, not zero) and marked.
  assert found["Q0001"]["flat_leads"].tolist() == [lead == "V1" for lead in STANDARD_LEADS]
  np.testing.assert_array_equal(found["Q0001"]["ecg"][:, 6], 0.5)
  assert metadata["flat_leads"] == {"V1": 1}
  assert not found["HR00001"]["flat_leads"].any()
  # Missing samples, a missing lead, every lead flat: left out, each with a message naming it.
  assert {"Q0002", "Q0003", "Q0004"}.isdisjoint(found)
  unusable = metadata["unusable_records"]
  assert sorted(unusable) == ["Q0002", "Q0003", "Q0004"]
  assert "Q0002.hea" in unusable["Q0002"] and "NaN" in unusable["Q0002"]
  assert unusable["Q0003"].endswith("Q0003.hea: lacks lead V6")
  assert "Q0004.hea: every lead is flat" in unusable["Q0004"]
  assert metadata["dropped"] == {
    builder_module.DROP_UNREADABLE: 1,
    builder_module.DROP_MISSING_LEADS: 1,
    builder_module.DROP_ALL_FLAT: 1,
  }
  for split in SPLITS:  # Dense indices despite the records left out.
    assert [e["index"] for e in examples(built_500).values() if e["split"] == split] == list(
      range(built_500.info.splits[split].num_examples)
    )


@needs_shared
def test_100hz_scored_only_holdout_build(built_holdout):
  found = examples(built_holdout)
  by_split = {split: {n for n, e in found.items() if e["split"] == split} for split in SPLITS}
  assert by_split["test"] == {f"HR{n:05d}" for n in (*range(1, 11), *range(6000, 6010))}
  for name in by_split["train"] | by_split["validation"]:
    expected = "validation" if labels.fold_of(name) == labels.NUM_FOLDS else "train"
    assert found[name]["split"] == expected
  # Records without a scored label dropped: Q0005, and the real A0005 and A0008, whose CPSC labels
  # PVC (164884008) and STD (429622005) the 2021 challenge does not score.
  assert {"Q0005", "A0005", "A0008"}.isdisjoint(found)
  assert built_holdout.info.metadata["dropped"][sources.DROP_NO_SCORED_LABEL] == 3
  assert all(example["label"].any() for example in found.values())
  # 100 Hz: 30 minutes at 257 Hz are 180,000 samples.
  assert found["I0002"]["length"] == 180000
  assert found["HR00001"]["length"] == 1000
  assert built_holdout.info.metadata["durations_s"]["st_petersburg_incart"][1] == pytest.approx(
    1800, abs=0.01
  )


@needs_shared
def test_the_input_pipeline_reads_the_dataset_by_name(built_500):
  data_cfg = input_pipeline.default_data_config()
  data_cfg.name = "physionet2021/500hz"
  # <data_dir>/name/config/1.0.0
  data_cfg.data_dir = str(pathlib.Path(built_500.data_dir).parents[2])
  data_cfg.crop_len = 2500
  info = input_pipeline.dataset_info(data_cfg)
  assert info.class_names == labels.CLASS_NAMES and info.num_classes == 26
  assert info.split_sizes == {s: built_500.info.splits[s].num_examples for s in SPLITS}
  train = input_pipeline.load_split(data_cfg, "train")
  assert sorted(train.lengths.tolist())[0] == 2500  # S0001: 5 s, shorter than the window.


# --- Bad input: a clear error naming the file, and nothing left in data_dir ---


def test_no_manual_dir_or_no_records_is_an_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(Physionet2021SourceError, match="no manual_dir was given.*challenge-2021"):
    build(None, tmp_path / "data")
  with pytest.raises(Physionet2021SourceError, match="no record of the Challenge 2021 collection"):
    build(tmp_path / "empty", tmp_path / "data")
  assert_no_dataset(tmp_path / "data")


def _twice(folder):
  write_record(folder / "g1", "A0001", real_digital(), 500)
  write_record(folder / "g2", "A0001", real_digital(), 500)
  return folder / "g2" / "A0001.hea", "record A0001 is present twice"


def _no_mat(folder):
  write_record(folder, "A0001", real_digital(), 500)
  os.remove(folder / "A0001.mat")
  return folder / "A0001.hea", "its signal file .* is missing"


def _abbreviations(folder):
  write_record(folder, "A0001", real_digital(), 500, dx="AF,RBBB")
  return folder / "A0001.hea", "'AF' is not a SNOMED-CT code"


def _no_dx(folder):
  write_record(folder, "A0001", real_digital(), 500)
  header = folder / "A0001.hea"
  header.write_text(header.read_text().replace(f"#Dx: {NSR}\n", ""))
  return header, "the header has no #Dx: line"


def _all_left_out(folder):
  write_record(folder, "HR00004", np.full_like(real_digital(), 3), 500)  # Fold 10: the test split.
  write_record(folder, "HR00001", real_digital(), 500)
  return folder / "HR00004.hea", "every record of the test split was left out.*every lead is flat"


@needs_shared
@pytest.mark.parametrize("make_bad", [_twice, _no_mat, _abbreviations, _no_dx, _all_left_out])
def test_bad_input_fails_naming_the_file(tmp_path, make_bad):
  bad_file, message = make_bad(tmp_path / "records")
  with pytest.raises(Physionet2021SourceError, match=message) as error:
    build(tmp_path / "records", tmp_path / "data", "100hz")
  assert str(bad_file) in str(error.value)
  assert_no_dataset(tmp_path / "data")
