"""Reading and checking a PTB-XL source folder (the official extracted layout) into split plans.

A source folder holds `ptbxl_database.csv`, `scp_statements.csv`, `records100/` and/or `records500/`
and, optionally, `SHA256SUMS.txt`. `plan_splits` checks everything the build will read (columns,
listed record files present, checksums) before a single example is written, and returns one
`RecordPlan` per labelled record, per split.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import math
import os
import pathlib

import numpy as np
import pandas as pd

from data_builders.ptbxl import labels

DATABASE_FILE = "ptbxl_database.csv"
STATEMENTS_FILE = "scp_statements.csv"
CHECKSUMS_FILE = "SHA256SUMS.txt"
DATABASE_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold")
# Sampling rate -> (records folder, database column with the record path, samples per record).
RATES: dict[int, tuple[str, str, int]] = {
  100: ("records100", "filename_lr", 1000),
  500: ("records500", "filename_hr", 5000),
}
SPLIT_FOLDS: dict[str, tuple[int, ...]] = {
  "train": (1, 2, 3, 4, 5, 6, 7, 8),
  "validation": (9,),
  "test": (10,),
}
# At most this many missing files are named in an error (the count is always given).
_MAX_NAMED_MISSING = 20

_logger = logging.getLogger(__name__)


class PtbxlSourceError(ValueError):
  """The PTB-XL source folder is incomplete or inconsistent; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RecordPlan:
  """One record to write: where it is and the values of its non-signal features."""

  index: int
  ecg_id: int
  patient_id: int
  age: float
  sex: int
  strat_fold: int
  label: np.ndarray  # float32 [C]
  path: str  # the WFDB record, without extension


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """The records of each split and how many were left out for lack of a label."""

  records: dict[str, list[RecordPlan]]
  excluded_without_label: dict[str, int]


def load_statements(path: pathlib.Path) -> pd.DataFrame:
  """Reads scp_statements.csv, indexed by SCP code, checking its columns."""
  statements = _read_csv(path, index_col=0)
  _require_columns(statements, labels.STATEMENT_COLUMNS, path)
  statements.index = statements.index.astype(str)
  return statements


@functools.lru_cache(maxsize=1)
def official_class_names(statements_path: pathlib.Path) -> dict[str, list[str]]:
  """Task -> sorted class names from a scp_statements.csv (the bundled official one, cached)."""
  statements = load_statements(statements_path)
  return {task: labels.class_names(labels.task_mapping(statements, task)) for task in labels.TASKS}


def load_database(path: pathlib.Path, filename_column: str) -> pd.DataFrame:
  """Reads ptbxl_database.csv, checking the columns the build uses; sorted by ecg_id."""
  database = _read_csv(path)
  _require_columns(database, (*DATABASE_COLUMNS, filename_column), path)
  if database["ecg_id"].isna().any() or database["ecg_id"].duplicated().any():
    raise PtbxlSourceError(f"{path}: column ecg_id has missing or duplicate values")
  bad_folds = database.loc[~database["strat_fold"].isin(range(1, 11)), "ecg_id"]
  if len(bad_folds):
    raise PtbxlSourceError(
      f"{path}: strat_fold must be 1..10; it is not for ecg_id {list(bad_folds)[:10]}"
    )
  missing_names = database.loc[database[filename_column].isna(), "ecg_id"]
  if len(missing_names):
    raise PtbxlSourceError(
      f"{path}: column {filename_column} is empty for ecg_id {list(missing_names)[:10]}"
    )
  return database.sort_values("ecg_id", kind="stable").reset_index(drop=True)


def plan_splits(
  source_dir: pathlib.Path, task: str, sampling_rate: int, class_names: list[str]
) -> SplitPlan:
  """Checks a source folder and plans the splits of one config.

  Args:
    source_dir: a folder in the official PTB-XL layout.
    task: one of labels.TASKS.
    sampling_rate: 100 or 500.
    class_names: the task's fixed class list; the folder's scp_statements.csv must give the same.

  Raises:
    PtbxlSourceError: naming the file and what is wrong.
  """
  records_folder, filename_column, _ = RATES[sampling_rate]
  if not (source_dir / records_folder).is_dir():
    raise PtbxlSourceError(
      f"{source_dir}: has no {records_folder}/ folder, which {sampling_rate} Hz configs read"
    )
  statements_path = source_dir / STATEMENTS_FILE
  database_path = source_dir / DATABASE_FILE
  statements = load_statements(statements_path)
  database = load_database(database_path, filename_column)
  mapping = labels.task_mapping(statements, task)
  if labels.class_names(mapping) != class_names:
    raise PtbxlSourceError(
      f"{statements_path}: gives task {task} the classes {labels.class_names(mapping)}, not the "
      f"official {class_names}"
    )

  record_files = [
    name + extension for name in database[filename_column] for extension in (".hea", ".dat")
  ]
  _check_files_exist(source_dir, record_files)
  verify_checksums(source_dir, [DATABASE_FILE, STATEMENTS_FILE, *record_files])

  known_codes = set(statements.index)
  records = {split: [] for split in SPLIT_FOLDS}
  excluded = dict.fromkeys(SPLIT_FOLDS, 0)
  split_of_fold = {fold: split for split, folds in SPLIT_FOLDS.items() for fold in folds}
  for row in database.itertuples(index=False):
    split = split_of_fold[int(row.strat_fold)]
    try:
      codes = labels.parse_scp_codes(row.scp_codes)
      classes = labels.record_classes(codes, mapping, known_codes)
    except ValueError as error:
      raise PtbxlSourceError(f"{database_path}: ecg_id {row.ecg_id}: {error}") from None
    if not classes:
      excluded[split] += 1
      continue
    records[split].append(
      RecordPlan(
        index=len(records[split]),
        ecg_id=int(row.ecg_id),
        patient_id=_int_or(row.patient_id, -1),
        age=_float_or_nan(row.age),
        sex=_sex_code(row.sex),
        strat_fold=int(row.strat_fold),
        label=labels.multi_hot(classes, class_names),
        path=os.fspath(source_dir / getattr(row, filename_column)),
      )
    )
  return SplitPlan(records=records, excluded_without_label=excluded)


def verify_checksums(source_dir: pathlib.Path, relative_paths: list[str]) -> None:
  """Checks the listed files against SHA256SUMS.txt, if the folder has one.

  Files the checksum list does not cover are not checked. Raises PtbxlSourceError naming every
  mismatching file.
  """
  checksums_path = source_dir / CHECKSUMS_FILE
  if not checksums_path.is_file():
    _logger.warning("%s: no %s; files are not verified", source_dir, CHECKSUMS_FILE)
    return
  expected = read_checksums(checksums_path)
  to_check = [path for path in relative_paths if path in expected]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    digests = pool.map(lambda path: _sha256(source_dir / path), to_check)
    mismatches = [
      path for path, digest in zip(to_check, digests, strict=True) if digest != expected[path]
    ]
  if mismatches:
    raise PtbxlSourceError(
      f"{checksums_path}: checksum mismatch in {len(mismatches)} file(s): {', '.join(mismatches)}"
    )
  _logger.info("%s: %d files match %s", source_dir, len(to_check), CHECKSUMS_FILE)


def read_checksums(path: pathlib.Path) -> dict[str, str]:
  """Parses a `sha256sum` listing into {relative path: hex digest}."""
  checksums = {}
  for line_number, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split(maxsplit=1)
    if len(parts) != 2 or len(parts[0]) != 64:
      raise PtbxlSourceError(f"{path}: line {line_number} is not '<sha256> <file>': {line!r}")
    checksums[parts[1].strip().lstrip("*")] = parts[0].lower()
  return checksums


def _check_files_exist(source_dir: pathlib.Path, relative_paths: list[str]) -> None:
  missing = [path for path in relative_paths if not (source_dir / path).is_file()]
  if missing:
    named = ", ".join(str(source_dir / path) for path in missing[:_MAX_NAMED_MISSING])
    more = (
      f" and {len(missing) - _MAX_NAMED_MISSING} more" if len(missing) > _MAX_NAMED_MISSING else ""
    )
    raise PtbxlSourceError(
      f"{len(missing)} record file(s) listed in {source_dir / DATABASE_FILE} are missing: "
      f"{named}{more}"
    )


def _sha256(path: pathlib.Path) -> str:
  try:
    return hashlib.sha256(path.read_bytes()).hexdigest()
  except OSError as error:
    raise PtbxlSourceError(f"{path}: cannot be read ({error})") from error


def _read_text(path: pathlib.Path) -> str:
  try:
    return path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as error:
    raise PtbxlSourceError(f"{path}: cannot be read ({error})") from error


def _read_csv(path: pathlib.Path, **kwargs) -> pd.DataFrame:
  if not path.is_file():
    raise PtbxlSourceError(f"{path}: file is missing")
  try:
    return pd.read_csv(path, **kwargs)
  except (OSError, ValueError, UnicodeDecodeError) as error:
    raise PtbxlSourceError(f"{path}: cannot be read as CSV ({error})") from error


def _require_columns(table: pd.DataFrame, columns, path: pathlib.Path) -> None:
  missing = [column for column in columns if column not in table.columns]
  if missing:
    raise PtbxlSourceError(f"{path}: required column(s) {', '.join(missing)} missing")


def _float_or_nan(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _sex_code(value) -> int:
  """PTB-XL codes sex as 0 male, 1 female; anything else is unknown (-1)."""
  code = _int_or(value, -1)
  return code if code in (0, 1) else -1


def _int_or(value, default: int) -> int:
  number = _float_or_nan(value)
  return default if math.isnan(number) else int(number)
