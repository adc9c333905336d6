"""Finding ICBEB2018 records in a manual_dir and deciding their labels, folds and splits (no TFDS).

Rules (the builder's documentation repeats them):
- Records: manual_dir and its subfolders are searched. In a folder, `A*.hea` is a Challenge 2020
  WFDB record (`.hea` + `.mat`), whichever notation its `#Dx:` line uses (SNOMED-CT codes, or the
  CPSC abbreviations of the first Challenge 2020 release), and `A*.mat` without a header beside it
  is an original challenge file. Forms may be mixed. Records are identified by name: a name found
  twice (in two forms or two folders) is an error naming both files.
- REFERENCE.csv: taken from manual_dir itself, else from its parent (the official release keeps it
  beside the `.mat` files). Original-form records need it.
- Labels: REFERENCE.csv, when found, is the label source for every form; a record without a row in
  it is dropped and counted. A header whose `#Dx:` classes differ from its row stops the build with
  an error naming the record and both label sets (rows labelled 10 are not compared, nor is a
  header naming none of the 9 classes). Without REFERENCE.csv the labels are the header's; a header
  without a Dx line, or naming none of the 9 classes, is dropped and counted. `#Dx:` entries that
  are neither a known SNOMED code nor a known abbreviation are ignored and counted.
- First label (the MVKT `other_class` negatives): REFERENCE.csv's First_label; without REFERENCE.csv
  the first class of the `#Dx:` line, whose order may differ (A0043: `#Dx: AF,RBBB`, First_label 5,
  RBBB).
- REFERENCE.csv rows labelled 10 follow `label10` (labels.reference_classes).
- Folds: from `labels.assign_folds` over all rows of REFERENCE.csv (label-10 rows included, so the
  option does not move other records between folds); without REFERENCE.csv over the labels of the
  records present, which then depend on which records are present.
- Splits: `folds` puts folds 1-8 in train, 9 in validation, 10 in test. `mvkt` follows the MVKT
  authors' lists (labels.read_mvkt_split): listed records missing from manual_dir are counted, and
  records present but in no list are dropped and counted. The stored fold stays the seeded one.
"""

import dataclasses
import os
from collections import Counter, defaultdict

from data_builders.icbeb2018 import labels
from data_builders.icbeb2018.labels import Icbeb2018SourceError
from lead_kt.ecg_io import EcgReadError

ORIGINAL_FORM = "original"
WFDB_FORM = "wfdb"

# Reasons for dropping a record (keys of SourcePlan.dropped).
DROP_NO_REFERENCE_ROW = "no row in REFERENCE.csv"
DROP_LABEL10 = "REFERENCE.csv label 10 (label10='drop')"
DROP_NO_DX = "no #Dx: line in the header"
DROP_NO_KNOWN_DX = "no #Dx: label of the 9 classes"
DROP_NOT_IN_MVKT_SPLIT = "in none of the MVKT split lists"


@dataclasses.dataclass(frozen=True)
class FoundRecord:
  """A record below manual_dir. file: its `.hea` header (WFDB form) or `.mat` file (original)."""

  name: str
  form: str
  file: str


@dataclasses.dataclass(frozen=True)
class PlannedRecord:
  """One record to store. path: the record's base path without extension. classes: indices into
  labels.CLASS_NAMES, the first label first. split: "train", "validation" or "test"."""

  name: str
  path: str
  form: str
  classes: tuple[int, ...]
  fold: int
  split: str


@dataclasses.dataclass(frozen=True)
class SourcePlan:
  """What a manual_dir holds and what the builder stores from it.

  records: kept records sorted by name. dropped: reason -> dropped record names.
  forms: form -> number of kept records. dx_notations: labels.SNOMED_NOTATION or
  ABBREVIATION_NOTATION -> number of WFDB headers using it. unknown_dx: `#Dx:` entry of no known
  class -> number of headers carrying it. missing_listed: records of the MVKT lists not found in
  manual_dir (0 for the seeded folds).
  """

  reference_path: str | None
  records: tuple[PlannedRecord, ...]
  dropped: dict[str, tuple[str, ...]]
  forms: dict[str, int]
  dx_notations: dict[str, int]
  unknown_dx: dict[str, int]
  missing_listed: int


def find_reference(manual_dir: str | os.PathLike) -> str | None:
  """REFERENCE.csv in manual_dir, else in its parent; None if neither has one."""
  manual_dir = os.path.abspath(manual_dir)
  for folder in (manual_dir, os.path.dirname(manual_dir)):
    candidate = os.path.join(folder, labels.REFERENCE_FILENAME)
    if os.path.isfile(candidate):
      return candidate
  return None


def find_records(manual_dir: str | os.PathLike) -> list[FoundRecord]:
  """The records in manual_dir and its subfolders, sorted by name.

  Raises Icbeb2018SourceError naming the folder if it is missing or holds no records, and naming
  both files if a record name is found twice.
  """
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise Icbeb2018SourceError(f"{manual_dir}: manual_dir does not exist or is not a folder.")
  found: dict[str, FoundRecord] = {}
  for folder, subfolders, files in os.walk(manual_dir):
    subfolders.sort()
    for record in _records_in(folder, files):
      if record.name in found:
        raise Icbeb2018SourceError(
          f"record {record.name} is present twice: {found[record.name].file} and {record.file}. "
          f"Keep one copy of each record below {manual_dir}."
        )
      found[record.name] = record
  if not found:
    raise Icbeb2018SourceError(
      f"{manual_dir}: no CPSC2018 records (A*.mat files or A*.hea WFDB headers) in this folder or "
      "its subfolders."
    )
  return [found[name] for name in sorted(found)]


def _records_in(folder: str, files: list[str]) -> list[FoundRecord]:
  headers, mats = set(), set()
  for file_name in files:
    stem, extension = os.path.splitext(file_name)
    if labels.is_record_name(stem):
      if extension == ".hea":
        headers.add(stem)
      elif extension == ".mat":
        mats.add(stem)
  # A .mat file beside a header of the same name is that WFDB record's signal file.
  forms = {**{stem: ORIGINAL_FORM for stem in mats}, **{stem: WFDB_FORM for stem in headers}}
  extension = {ORIGINAL_FORM: ".mat", WFDB_FORM: ".hea"}
  return [
    FoundRecord(stem, form, os.path.join(folder, stem + extension[form]))
    for stem, form in sorted(forms.items())
  ]


def header_comments(header_path: str) -> list[str]:
  """The comment lines of a WFDB header, without their leading '#'."""
  try:
    with open(header_path, encoding="utf-8", errors="replace") as handle:
      return [line.strip()[1:].strip() for line in handle if line.strip().startswith("#")]
  except OSError as error:
    raise EcgReadError(f"{header_path}: cannot read the WFDB header ({error}).") from error


def plan_records(
  manual_dir: str | os.PathLike, label10: str = "drop", split: str = labels.FOLDS_SPLIT
) -> SourcePlan:
  """Finds the records below manual_dir and decides their labels, folds and splits (rules above).

  split: labels.FOLDS_SPLIT or labels.MVKT_SPLIT.
  """
  if split not in labels.SPLIT_SCHEMES:
    raise ValueError(f"split must be one of {labels.SPLIT_SCHEMES}, got {split!r}.")
  manual_dir = os.fspath(manual_dir)
  found = find_records(manual_dir)
  reference_path = find_reference(manual_dir)
  originals = [record.name for record in found if record.form == ORIGINAL_FORM]
  if originals and reference_path is None:
    raise Icbeb2018SourceError(
      f"{manual_dir}: the original .mat records ({first_names(originals, 5)}) need "
      f"{labels.REFERENCE_FILENAME} (looked in this folder and its parent)."
    )
  reference = labels.read_reference(reference_path) if reference_path else None
  dropped: defaultdict[str, list[str]] = defaultdict(list)
  dx_notations: Counter[str] = Counter()
  unknown_dx: Counter[str] = Counter()
  mismatches = []
  kept: dict[str, tuple[FoundRecord, tuple[int, ...]]] = {}
  for record in found:
    dx = _header_dx(record.file) if record.form == WFDB_FORM else None
    if dx is not None:
      dx_notations.update(dx.notations)
      unknown_dx.update(set(dx.unknown))
    if reference is None:
      if dx is None or not dx.classes:
        dropped[DROP_NO_DX if dx is None else DROP_NO_KNOWN_DX].append(record.name)
        continue
      kept[record.name] = (record, dx.classes)
      continue
    if record.name not in reference:
      dropped[DROP_NO_REFERENCE_ROW].append(record.name)
      continue
    numbers = reference[record.name]
    row_classes = labels.reference_classes(numbers, label10)
    comparable = dx is not None and dx.classes and labels.UNDEFINED_LABEL not in numbers
    if comparable and set(dx.classes) != set(row_classes):
      mismatches.append(
        f"{record.name} ({record.file}): #Dx {labels.class_names(dx.classes)}, "
        f"REFERENCE.csv {labels.class_names(row_classes)}"
      )
    if row_classes is None:
      dropped[DROP_LABEL10].append(record.name)
      continue
    kept[record.name] = (record, row_classes)
  if mismatches:
    raise Icbeb2018SourceError(
      f"{reference_path}: the #Dx labels of {len(mismatches)} WFDB headers disagree with this "
      f"label file, the label source when present: {first_names(mismatches, sep='; ')}. "
      "Correct the headers or the label file, or build without the label file."
    )
  if reference is not None:
    folds = labels.assign_folds(reference)
  else:
    # Class number k + 1 for index k: the same ordering as REFERENCE.csv's numbers.
    folds = labels.assign_folds({n: [c + 1 for c in classes] for n, (_, classes) in kept.items()})
  missing_listed = 0
  if split == labels.MVKT_SPLIT:
    split_of_record = labels.read_mvkt_split()
    missing_listed = len(split_of_record.keys() - {record.name for record in found})
    for name in [name for name in kept if name not in split_of_record]:
      dropped[DROP_NOT_IN_MVKT_SPLIT].append(name)
      del kept[name]
  else:
    split_of_record = {name: labels.split_of_fold(folds[name]) for name in kept}
  records = tuple(
    PlannedRecord(
      name=name,
      path=os.path.splitext(record.file)[0],
      form=record.form,
      classes=classes,
      fold=folds[name],
      split=split_of_record[name],
    )
    for name, (record, classes) in sorted(kept.items())
  )
  return SourcePlan(
    reference_path=reference_path,
    records=records,
    dropped={reason: tuple(names) for reason, names in dropped.items()},
    forms=dict(Counter(record.form for record in records)),
    dx_notations=dict(dx_notations),
    unknown_dx=dict(unknown_dx),
    missing_listed=missing_listed,
  )


def _header_dx(header_path: str) -> labels.DxLabels | None:
  """What the `#Dx:` line of a WFDB header says; None if it has none."""
  entries = labels.parse_dx_codes(header_comments(header_path))
  return None if entries is None else labels.dx_labels(entries)


def split_records(records) -> dict[str, list[tuple[int, PlannedRecord]]]:
  """{split: [(index, record)]}; index is dense 0..n-1 per split in record-name order."""
  splits = {"train": [], "validation": [], "test": []}
  for record in sorted(records, key=lambda record: record.name):
    split = splits[record.split]
    split.append((len(split), record))
  return splits


def first_names(names, count: int = 10, sep: str = ", ") -> str:
  """The first `count` names joined, with "..." when there are more (log and error messages)."""
  return sep.join(names[:count]) + (f"{sep}..." if len(names) > count else "")
