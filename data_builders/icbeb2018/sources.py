"""Finding ICBEB2018 records in a manual_dir and deciding each one's labels and fold (no TFDS).

Rules (the builder's documentation repeats them):
- Form: a manual_dir holding `A*.hea` headers is the Challenge 2020 WFDB form (`.hea` + `.mat`); one
  holding only `A*.mat` files is the original challenge form. Only the folder itself is searched.
- REFERENCE.csv: taken from manual_dir itself, else from its parent (the official release keeps it
  beside the `.mat` files; /work/shared/data/cpsc2018 keeps it above `original_mat/` and `wfdb/`).
  The original form needs it; the WFDB form uses it when found.
- Labels: the original form takes them from REFERENCE.csv; the WFDB form from the `#Dx:` SNOMED
  codes of each header. Codes outside the 9 classes are ignored; a record left with none of the 9
  classes, or without a Dx line, is dropped and counted.
- REFERENCE.csv rows labelled 10 follow `label10` (labels.reference_classes) in both forms, so both
  forms keep the same records. When REFERENCE.csv is used, a record file without a row in it is
  dropped and counted.
- Folds: from `labels.assign_folds` over all rows of REFERENCE.csv (label-10 rows included, so the
  option does not move other records between folds); without REFERENCE.csv (WFDB form only) over the
  labels of the records present, which then depend on which records are present.
"""

import dataclasses
import os
from collections import Counter

from data_builders.icbeb2018 import labels
from data_builders.icbeb2018.labels import Icbeb2018SourceError
from lead_kt.ecg_io import EcgReadError

ORIGINAL_FORM = "original"
WFDB_FORM = "wfdb"

# Reasons for dropping a record (keys of SourcePlan.dropped).
DROP_NO_REFERENCE_ROW = "no row in REFERENCE.csv"
DROP_LABEL10 = "REFERENCE.csv label 10 (label10='drop')"
DROP_NO_DX = "no #Dx: line in the header"
DROP_NO_KNOWN_CODE = "no SNOMED code of the 9 classes"


@dataclasses.dataclass(frozen=True)
class PlannedRecord:
  """One record to store. path: the record's base path without extension."""

  name: str
  path: str
  classes: tuple[int, ...]
  fold: int


@dataclasses.dataclass(frozen=True)
class SourcePlan:
  """What a manual_dir holds and what the builder stores from it.

  records: kept records sorted by name. dropped: reason -> dropped record names.
  unmapped_codes: SNOMED code outside the 9 classes -> number of records carrying it (WFDB form).
  label_mismatches: WFDB records whose header classes differ from their REFERENCE.csv row.
  """

  form: str
  reference_path: str | None
  records: tuple[PlannedRecord, ...]
  dropped: dict[str, tuple[str, ...]]
  unmapped_codes: dict[str, int]
  label_mismatches: tuple[str, ...]


def find_reference(manual_dir: str | os.PathLike) -> str | None:
  """REFERENCE.csv in manual_dir, else in its parent; None if neither has one."""
  manual_dir = os.path.abspath(manual_dir)
  for folder in (manual_dir, os.path.dirname(manual_dir)):
    candidate = os.path.join(folder, labels.REFERENCE_FILENAME)
    if os.path.isfile(candidate):
      return candidate
  return None


def detect_form(manual_dir: str | os.PathLike) -> tuple[str, list[str]]:
  """Returns (ORIGINAL_FORM or WFDB_FORM, sorted record names) of the records in manual_dir.

  Raises Icbeb2018SourceError naming the folder if it is missing, holds no records (naming
  subfolders that do), or mixes the two forms.
  """
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise Icbeb2018SourceError(f"{manual_dir}: manual_dir does not exist or is not a folder.")
  headers, mats = _record_stems(manual_dir)
  if headers:
    without_header = sorted(mats - headers)
    if without_header:
      raise Icbeb2018SourceError(
        f"{manual_dir}: mixes the two forms: WFDB headers (A*.hea) and .mat files without a "
        f"header ({', '.join(without_header[:5])}{', ...' if len(without_header) > 5 else ''}). "
        "Keep one form per folder."
      )
    return WFDB_FORM, sorted(headers)
  if mats:
    return ORIGINAL_FORM, sorted(mats)
  holders = sorted(
    entry.name for entry in os.scandir(manual_dir) if entry.is_dir() and any(_record_stems(entry))
  )
  message = (
    f"{manual_dir}: no CPSC2018 records (A*.mat files or A*.hea WFDB headers) in this folder."
  )
  if holders:
    message += f" Subfolders holding records: {', '.join(holders)}; point manual_dir at one."
  raise Icbeb2018SourceError(message)


def _record_stems(folder) -> tuple[set[str], set[str]]:
  headers, mats = set(), set()
  for entry in os.scandir(folder):
    stem, extension = os.path.splitext(entry.name)
    if entry.is_file() and labels.is_record_name(stem):
      if extension == ".hea":
        headers.add(stem)
      elif extension == ".mat":
        mats.add(stem)
  return headers, mats


def header_comments(header_path: str) -> list[str]:
  """The comment lines of a WFDB header, without their leading '#'."""
  try:
    with open(header_path, encoding="utf-8", errors="replace") as handle:
      return [line.strip()[1:].strip() for line in handle if line.strip().startswith("#")]
  except OSError as error:
    raise EcgReadError(f"{header_path}: cannot read the WFDB header ({error}).") from error


def plan_records(manual_dir: str | os.PathLike, label10: str = "drop") -> SourcePlan:
  """Detects the form of manual_dir and decides labels and folds of its records (rules above)."""
  manual_dir = os.fspath(manual_dir)
  form, names = detect_form(manual_dir)
  reference_path = find_reference(manual_dir)
  if form == ORIGINAL_FORM and reference_path is None:
    raise Icbeb2018SourceError(
      f"{manual_dir}: the original .mat form needs {labels.REFERENCE_FILENAME} (looked in this "
      "folder and its parent)."
    )
  reference = labels.read_reference(reference_path) if reference_path else None
  dropped: dict[str, list[str]] = {}
  unmapped_codes: Counter[str] = Counter()
  mismatches = []
  kept: dict[str, tuple[int, ...]] = {}
  for name in names:
    reference_classes = None
    if reference is not None:
      if name not in reference:
        dropped.setdefault(DROP_NO_REFERENCE_ROW, []).append(name)
        continue
      reference_classes = labels.reference_classes(reference[name], label10)
      if reference_classes is None:
        dropped.setdefault(DROP_LABEL10, []).append(name)
        continue
    # Label-10 rows follow the label10 option in both forms, whatever the header says.
    if form == ORIGINAL_FORM or (reference and labels.UNDEFINED_LABEL in reference[name]):
      kept[name] = reference_classes
      continue
    classes, drop_reason, unmapped = _header_classes(os.path.join(manual_dir, name + ".hea"))
    unmapped_codes.update(unmapped)
    if drop_reason:
      dropped.setdefault(drop_reason, []).append(name)
      continue
    if reference_classes is not None and set(classes) != set(reference_classes):
      mismatches.append(name)
    kept[name] = classes
  if reference is not None:
    folds = labels.assign_folds(reference)
  else:
    # Class number k + 1 for index k: the same ordering as REFERENCE.csv's numbers.
    folds = labels.assign_folds({name: [c + 1 for c in classes] for name, classes in kept.items()})
  records = tuple(
    PlannedRecord(name, os.path.join(manual_dir, name), classes, folds[name])
    for name, classes in sorted(kept.items())
  )
  return SourcePlan(
    form=form,
    reference_path=reference_path,
    records=records,
    dropped={reason: tuple(names) for reason, names in dropped.items()},
    unmapped_codes=dict(unmapped_codes),
    label_mismatches=tuple(mismatches),
  )


def _header_classes(header_path: str) -> tuple[tuple[int, ...], str | None, set[str]]:
  """(class indices, drop reason or None, codes outside the 9 classes) of a WFDB header's Dx."""
  codes = labels.parse_dx_codes(header_comments(header_path))
  if codes is None:
    return (), DROP_NO_DX, set()
  classes, unmapped = labels.snomed_classes(codes)
  return classes, None if classes else DROP_NO_KNOWN_CODE, set(unmapped)


def split_records(records) -> dict[str, list[tuple[int, PlannedRecord]]]:
  """{split: [(index, record)]}; index is dense 0..n-1 per split in record-name order."""
  splits = {"train": [], "validation": [], "test": []}
  for record in sorted(records, key=lambda record: record.name):
    split = splits[labels.split_of_fold(record.fold)]
    split.append((len(split), record))
  return splits
