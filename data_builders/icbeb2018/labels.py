"""Labels, folds and the MVKT authors' split of ICBEB2018 (CPSC2018): pure functions, no TFDS.

Three label sources exist:
- `REFERENCE.csv` of the original challenge: one row per record with up to three class numbers
  1..9 (k means CLASS_NAMES[k - 1]), first label first. 18 rows carry 10, which is no CPSC class.
- The `#Dx:` header comment of the PhysioNet/CinC Challenge 2020 WFDB re-release: comma-separated
  SNOMED-CT codes (`SNOMED_TO_CLASS`).
- The `#Dx:` header comment of the first Challenge 2020 release (early 2020): comma-separated CPSC
  abbreviations (`ABBREVIATION_TO_CLASS`), e.g. `#Dx: AF,RBBB`.

Fold assignment (`assign_folds`) is a seeded stratification over all label rows given to it; the
builder passes the whole REFERENCE.csv when one is found, so a record's fold does not depend on
which record files are present. `read_mvkt_split` gives the authors' own train/validation/test
lists instead (`mvkt_split/README.md`).
"""

import csv
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# The challenge's class order; class number k in REFERENCE.csv is CLASS_NAMES[k - 1].
CLASS_NAMES = ("NORM", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
# REFERENCE.csv's out-of-scheme label (18 rows); see `reference_classes`.
UNDEFINED_LABEL = 10
LABEL10_TREATMENTS = ("drop", "norm")

REFERENCE_FILENAME = "REFERENCE.csv"
REFERENCE_COLUMNS = ("Recording", "First_label", "Second_label", "Third_label")

# SNOMED-CT codes of the PhysioNet/CinC Challenge 2020 WFDB re-release. 427172004 (premature
# ventricular contractions) is the Challenge's equivalent of 164884008 (ventricular ectopics);
# both mean the CPSC class PVC.
SNOMED_TO_CLASS = {
  "426783006": "NORM",
  "164889003": "AF",
  "270492004": "I-AVB",
  "164909002": "LBBB",
  "59118001": "RBBB",
  "284470004": "PAC",
  "164884008": "PVC",
  "427172004": "PVC",
  "429622005": "STD",
  "164931005": "STE",
}
# The CPSC abbreviations that the first Challenge 2020 release wrote in `#Dx:` instead of SNOMED
# codes, spelt as there; the challenge calls its class 1 "Normal".
ABBREVIATION_TO_CLASS = {
  "Normal": "NORM",
  "AF": "AF",
  "I-AVB": "I-AVB",
  "LBBB": "LBBB",
  "RBBB": "RBBB",
  "PAC": "PAC",
  "PVC": "PVC",
  "STD": "STD",
  "STE": "STE",
}
# How a `#Dx:` entry names a class (keys of DxLabels.notations counts).
SNOMED_NOTATION = "snomed"
ABBREVIATION_NOTATION = "abbreviation"
_DX_ENTRY_TO_CLASS = {
  **{code: (name, SNOMED_NOTATION) for code, name in SNOMED_TO_CLASS.items()},
  **{entry: (name, ABBREVIATION_NOTATION) for entry, name in ABBREVIATION_TO_CLASS.items()},
}

NUM_FOLDS = 10
# Fixed so that folds are identical on every machine and rebuild.
FOLD_SEED = 20180101

_RECORD_NAME = re.compile(r"^A\d+$")


class Icbeb2018SourceError(ValueError):
  """The manual_dir or its REFERENCE.csv is missing, empty or inconsistent; names the file."""


def is_record_name(stem: str) -> bool:
  """True for CPSC2018 record names such as "A0001"."""
  return bool(_RECORD_NAME.match(stem))


def read_reference(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
  """Reads REFERENCE.csv into {record name: class numbers in file order (first label first)}.

  Class numbers are kept as written (1..9, or 10); a repeated number in one row is kept once.
  Raises Icbeb2018SourceError naming the file and row for a missing column, a duplicate record, a
  row without a first label, or a label that is not an integer in 1..10.
  """
  path = os.fspath(path)
  try:
    with open(path, newline="", encoding="utf-8-sig") as handle:
      rows = list(csv.reader(handle))
  except OSError as error:
    raise Icbeb2018SourceError(f"{path}: cannot read the label file ({error}).") from error
  if not rows or tuple(cell.strip() for cell in rows[0][: len(REFERENCE_COLUMNS)]) != (
    REFERENCE_COLUMNS
  ):
    header = rows[0] if rows else []
    raise Icbeb2018SourceError(
      f"{path}: expected the header {','.join(REFERENCE_COLUMNS)}, found {','.join(header)!r}."
    )
  reference = {}
  for line_number, row in enumerate(rows[1:], start=2):
    cells = [cell.strip() for cell in row]
    if not any(cells):
      continue
    name, label_cells = cells[0], [cell for cell in cells[1:4] if cell]
    where = f"{path}, line {line_number} ({name or 'no record name'})"
    if not is_record_name(name):
      raise Icbeb2018SourceError(f"{where}: {name!r} is not a CPSC2018 record name like A0001.")
    if name in reference:
      raise Icbeb2018SourceError(f"{where}: record {name} appears twice.")
    if not cells[1:2] or not cells[1]:
      raise Icbeb2018SourceError(f"{where}: the first label is empty.")
    numbers = []
    for cell in label_cells:
      number = _parse_label_number(cell)
      if number is None:
        raise Icbeb2018SourceError(
          f"{where}: label {cell!r} is not an integer in 1..{UNDEFINED_LABEL}."
        )
      if number not in numbers:
        numbers.append(number)
    reference[name] = tuple(numbers)
  if not reference:
    raise Icbeb2018SourceError(f"{path}: the label file has no rows.")
  return reference


def _parse_label_number(cell: str) -> int | None:
  # pandas-written copies of the file may say "5.0".
  try:
    value = float(cell)
  except ValueError:
    return None
  if not value.is_integer() or not 1 <= value <= UNDEFINED_LABEL:
    return None
  return int(value)


def reference_classes(numbers: Sequence[int], label10: str = "drop") -> tuple[int, ...] | None:
  """Maps REFERENCE.csv class numbers to class indices into CLASS_NAMES, or None to drop the record.

  label10 decides rows with the out-of-scheme number 10: "drop" (default) drops the record, "norm"
  reads 10 as NORM. The challenge never defined 10, so "drop" keeps unverified labels out of the
  data; the 18 such records are 0.3% of the set.
  """
  if label10 not in LABEL10_TREATMENTS:
    raise ValueError(f"label10 must be one of {LABEL10_TREATMENTS}, got {label10!r}.")
  if UNDEFINED_LABEL in numbers and label10 == "drop":
    return None
  indices = []
  for number in numbers:
    index = 0 if number == UNDEFINED_LABEL else number - 1
    if index not in indices:
      indices.append(index)
  return tuple(indices)


def parse_dx_codes(comments: Iterable[str]) -> tuple[str, ...] | None:
  """The entries of the `Dx:` comment of a WFDB header, in order; None if there is no Dx line.

  comments: the header's comment lines without the leading '#', e.g. ["Age: 74", "Dx: 59118001"].
  The entries are SNOMED codes or CPSC abbreviations (see `dx_labels`).
  """
  for comment in comments:
    key, separator, value = comment.partition(":")
    if separator and key.strip().lower() == "dx":
      return tuple(code.strip() for code in value.split(",") if code.strip())
  return None


@dataclasses.dataclass(frozen=True)
class DxLabels:
  """What a `Dx:` line says. classes: indices into CLASS_NAMES in entry order. unknown: entries
  that are neither a known SNOMED code nor a known abbreviation. notations: the notations
  (SNOMED_NOTATION, ABBREVIATION_NOTATION) of the known entries."""

  classes: tuple[int, ...]
  unknown: tuple[str, ...]
  notations: frozenset[str]


def dx_labels(entries: Sequence[str]) -> DxLabels:
  """Maps `Dx:` entries, SNOMED codes and CPSC abbreviations alike, to the 9 classes."""
  indices, unknown, notations = [], [], set()
  for entry in entries:
    if entry not in _DX_ENTRY_TO_CLASS:
      unknown.append(entry)
      continue
    name, notation = _DX_ENTRY_TO_CLASS[entry]
    notations.add(notation)
    if CLASS_NAMES.index(name) not in indices:
      indices.append(CLASS_NAMES.index(name))
  return DxLabels(tuple(indices), tuple(unknown), frozenset(notations))


def class_names(indices: Iterable[int]) -> str:
  """Class indices as error messages show them: (1, 4) -> "AF, RBBB"."""
  return ", ".join(CLASS_NAMES[index] for index in indices) or "none"


def multi_hot(indices: Iterable[int], num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
  """float32 [num_classes] with ones at the given class indices."""
  label = np.zeros(num_classes, np.float32)
  label[list(indices)] = 1.0
  return label


def assign_folds(
  record_labels: Mapping[str, Sequence[int]], num_folds: int = NUM_FOLDS, seed: int = FOLD_SEED
) -> dict[str, int]:
  """Seeded stratified fold assignment: {record name: fold in 1..num_folds}.

  record_labels: record name -> its labels, first label first (integers such as REFERENCE.csv's).

  The records are put in a seeded random order (a permutation of the name-sorted records), then
  stably sorted by (first label, sorted remaining labels), and dealt round-robin: the record at
  position p gets fold p % num_folds + 1. Every first-label class and every exact label combination
  is a contiguous run of that sequence, so each fold holds within +-1 of 1/num_folds of each of them
  (and of all records). Second and third labels are spread by their combination's run only: on
  the full REFERENCE.csv every fold holds every class within +-3 of its expectation (+-1 for first
  labels). A fold depends only on the whole `record_labels` mapping and the seed.
  """
  names = sorted(record_labels)
  shuffled_rank = np.random.default_rng(seed).permutation(len(names))

  def sort_key(i):
    first, *rest = record_labels[names[i]]
    return first, tuple(sorted(rest)), shuffled_rank[i]

  order = sorted(range(len(names)), key=sort_key)
  return {names[i]: position % num_folds + 1 for position, i in enumerate(order)}


def split_of_fold(fold: int) -> str:
  """The MVKT protocol: folds 1-8 train, 9 validation, 10 test."""
  if fold == NUM_FOLDS:
    return "test"
  return "validation" if fold == NUM_FOLDS - 1 else "train"


# How records go to train/validation/test: the seeded folds (split_of_fold) or the MVKT lists.
FOLDS_SPLIT = "folds"
MVKT_SPLIT = "mvkt"
SPLIT_SCHEMES = (FOLDS_SPLIT, MVKT_SPLIT)
# The MVKT authors' split (QINYZz/MVKT-ECG, commit 209abc76, datasets/*_reference.csv): one list per
# split, in REFERENCE.csv's layout; see mvkt_split/README.md.
MVKT_SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mvkt_split")
MVKT_SPLIT_FILES = {
  "train": "TRAIN_reference.csv",
  "validation": "VAL_reference.csv",
  "test": "TEST_reference.csv",
}


def read_mvkt_split(folder: str | os.PathLike = MVKT_SPLIT_DIR) -> dict[str, str]:
  """{record name: split} of the MVKT authors' lists in folder (MVKT_SPLIT_FILES).

  Raises Icbeb2018SourceError naming both files if a record is listed in two splits (and, through
  read_reference, for a malformed list).
  """
  split_of_record, list_of_record = {}, {}
  for split, file_name in MVKT_SPLIT_FILES.items():
    path = os.path.join(os.fspath(folder), file_name)
    for name in read_reference(path):
      if name in split_of_record:
        raise Icbeb2018SourceError(
          f"{path}: record {name} is also listed in {list_of_record[name]}; a record belongs to "
          "one split."
        )
      split_of_record[name], list_of_record[name] = split, path
  return split_of_record
