"""Finding the collection's records in a manual_dir and deciding their labels and splits (no TFDS).

Rules (the builder's documentation repeats them):
- Records: every `<name>.hea` below manual_dir whose name is a record name of the collection
  (`labels.database_of`), in any layout: `training/<database>/<group>/`, one flat folder, or a mix.
  Other `.hea` files (PTB-XL's own release, say) are skipped and counted. A header without its
  `<name>.mat` beside it is an error naming both, and so is a record name found twice (the same
  record in two folders, or two releases of it): keep one copy of each record.
- Labels: the header's `#Dx:` SNOMED-CT codes; the scored ones give the 26-class label, the others
  are kept as `unscored`. A header without a `#Dx:` line, or with an entry that is no SNOMED-CT
  code, is an error naming it. A record without a scored code is kept with an all-zero label, or
  dropped and counted when `keep_unscored` is False.
- Folds and splits: `labels.fold_of` and `labels.split_of`.
Everything here is decided from the headers before any signal is read or anything written.
"""

import dataclasses
import os
from collections import Counter, defaultdict

from data_builders.icbeb2018.labels import parse_dx_codes
from data_builders.icbeb2018.sources import header_comments
from data_builders.physionet2021 import labels
from data_builders.physionet2021.labels import Physionet2021SourceError

SPLITS = ("train", "validation", "test")
DROP_NO_SCORED_LABEL = "no scored label (keep_unscored=False)"


@dataclasses.dataclass(frozen=True)
class FoundRecord:
  """A record below manual_dir: its name, database and header (`.hea`) path."""

  name: str
  database: str
  header: str


@dataclasses.dataclass(frozen=True)
class PlannedRecord:
  """One record to read. path: the header without `.hea`. classes: indices into
  labels.CLASS_NAMES. unscored: the `#Dx:` codes that no scored class holds."""

  name: str
  database: str
  path: str
  classes: tuple[int, ...]
  unscored: tuple[str, ...]
  fold: int
  split: str


@dataclasses.dataclass(frozen=True)
class SourcePlan:
  """records: {split: records sorted by name}. dropped: reason -> record names. skipped: `.hea`
  files of no record of the collection. unscored_codes: code -> number of kept records with it."""

  records: dict[str, tuple[PlannedRecord, ...]]
  dropped: dict[str, tuple[str, ...]]
  skipped: tuple[str, ...]
  unscored_codes: dict[str, int]


def find_records(manual_dir: str) -> tuple[list[FoundRecord], list[str]]:
  """(the records below manual_dir sorted by name, the skipped `.hea` files).

  Raises Physionet2021SourceError naming the folder if it holds no record of the collection, both
  files if a record name is found twice, and the header if its `.mat` is missing.
  """
  found: dict[str, FoundRecord] = {}
  skipped = []
  for folder, subfolders, files in os.walk(manual_dir):
    subfolders.sort()
    for file_name in sorted(files):
      stem, extension = os.path.splitext(file_name)
      if extension.lower() != ".hea":
        continue
      header = os.path.join(folder, file_name)
      database = labels.database_of(stem)
      if database is None:
        skipped.append(header)
        continue
      if stem in found:
        raise Physionet2021SourceError(
          f"record {stem} is present twice: {found[stem].header} and {header}. Keep one copy of "
          f"each record below {manual_dir}."
        )
      if not os.path.isfile(os.path.join(folder, stem + ".mat")):
        raise Physionet2021SourceError(
          f"{header}: its signal file {os.path.join(folder, stem + '.mat')} is missing."
        )
      found[stem] = FoundRecord(stem, database, header)
  if not found:
    raise Physionet2021SourceError(
      f"{manual_dir}: no record of the Challenge 2021 collection (A*, Q*, I*, S*, HR*, E*, JS* "
      ".hea + .mat) in this folder or its subfolders."
    )
  return [found[name] for name in sorted(found)], skipped


def plan_records(manual_dir: str, keep_unscored: bool = True, holdout: str = "") -> SourcePlan:
  """Finds the records below manual_dir and decides their labels, folds and splits (rules above).

  holdout: "" (seeded folds) or the database that forms the test split.
  """
  if holdout and holdout not in labels.DATABASES:
    raise ValueError(f"holdout must be '' or one of {labels.DATABASES}, got {holdout!r}.")
  found, skipped = find_records(manual_dir)
  if holdout and holdout not in {record.database for record in found}:
    raise Physionet2021SourceError(
      f"{manual_dir}: no record of {holdout}, the database held out as the test split."
    )
  records = defaultdict(list)
  dropped = defaultdict(list)
  unscored_codes = Counter()
  for record in found:
    codes = parse_dx_codes(header_comments(record.header))
    if codes is None:
      raise Physionet2021SourceError(f"{record.header}: the header has no #Dx: line.")
    dx = labels.dx_labels(codes, record.header)
    if not dx.classes and not keep_unscored:
      dropped[DROP_NO_SCORED_LABEL].append(record.name)
      continue
    unscored_codes.update(dx.unscored)
    fold = labels.fold_of(record.name)
    split = labels.split_of(fold, record.database, holdout)
    records[split].append(
      PlannedRecord(
        name=record.name,
        database=record.database,
        path=os.path.splitext(record.header)[0],
        classes=dx.classes,
        unscored=dx.unscored,
        fold=fold,
        split=split,
      )
    )
  return SourcePlan(
    records={split: tuple(records[split]) for split in SPLITS},
    dropped={reason: tuple(names) for reason, names in dropped.items()},
    skipped=tuple(skipped),
    unscored_codes=dict(unscored_codes.most_common()),
  )
