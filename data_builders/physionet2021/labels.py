"""The challenge's scored classes, its databases, and seeded folds and splits (pure; no TFDS).

Classes: the 26 scored classes of the PhysioNet/CinC Challenge 2021, read from the files of its
evaluation code (physionetchallenges/evaluation-2021, `evaluation_2021/`): `weights.csv` names them
in the scoring order, with equivalent SNOMED-CT codes joined by `|` (713427006|59118001,
284470004|63593006, 427172004|17338001, 733534002|164909002), which the scoring counts as one class,
as this builder does; `dx_mapping_scored.csv` gives each code's abbreviation. A class is named by
its codes' abbreviations joined the same way ("CRBBB|RBBB").

Databases: the eight of the collection, keyed like the release's `training/` folders; a record's
database follows from its name, so any layout works (flat folders included).

Folds: the collection has no patient ids, so folds are patient-unaware: a record's fold is a seeded
hash of its name alone, the same whichever other records are built (a record in the test fold of a
one-database build is in the test fold of the whole collection's). Not stratified: on the whole
collection a fold holds 10 % of each class give or take sampling noise.
"""

import csv
import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from data_builders.icbeb2018 import labels as icbeb_labels

CHALLENGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluation_2021")
WEIGHTS_FILE = os.path.join(CHALLENGE_DIR, "weights.csv")
DX_MAPPING_FILE = os.path.join(CHALLENGE_DIR, "dx_mapping_scored.csv")

# Database -> the record-name prefix it uses. Chapman-Shaoxing and Ningbo share `JS`: Chapman-
# Shaoxing holds JS00001-JS10646, Ningbo JS10647-JS45551.
DATABASE_PREFIXES = {
  "cpsc_2018": "A",
  "cpsc_2018_extra": "Q",
  "st_petersburg_incart": "I",
  "ptb": "S",
  "ptb_xl": "HR",
  "georgia": "E",
  "chapman_shaoxing": "JS",
  "ningbo": "JS",
}
DATABASES = tuple(DATABASE_PREFIXES)
LAST_CHAPMAN_SHAOXING = 10646
_RECORD_NAME = re.compile(r"^(A|Q|I|S|HR|E|JS)(\d+)$")

NUM_FOLDS = icbeb_labels.NUM_FOLDS
FOLD_SEED = 2021


class Physionet2021SourceError(ValueError):
  """The manual_dir, a header or a challenge table is missing or malformed; names the file."""


@dataclasses.dataclass(frozen=True)
class ScoredClass:
  """One scored class: its SNOMED-CT codes (equivalents of the scoring) and abbreviations."""

  codes: tuple[str, ...]
  abbreviations: tuple[str, ...]

  @property
  def name(self) -> str:
    return "|".join(self.abbreviations)


def read_scored_classes(
  weights_file: str = WEIGHTS_FILE, dx_mapping_file: str = DX_MAPPING_FILE
) -> tuple[ScoredClass, ...]:
  """The scored classes in weights.csv's order, named from dx_mapping_scored.csv.

  Raises Physionet2021SourceError naming the file when a code of one file is missing from the
  other, or a code is scored twice.
  """
  rows = _read_csv(weights_file)
  groups = [tuple(cell.strip().split("|")) for cell in rows[0][1:] if cell.strip()]
  abbreviations = {
    row["SNOMEDCTCode"].strip(): row["Abbreviation"].strip()
    for row in csv.DictReader(_lines(dx_mapping_file))
  }
  codes = [code for group in groups for code in group]
  if len(set(codes)) != len(codes):
    raise Physionet2021SourceError(f"{weights_file}: a SNOMED-CT code is scored twice.")
  for missing, in_file, from_file in (
    (set(codes) - set(abbreviations), dx_mapping_file, weights_file),
    (set(abbreviations) - set(codes), weights_file, dx_mapping_file),
  ):
    if missing:
      raise Physionet2021SourceError(
        f"{in_file}: lacks the scored codes {', '.join(sorted(missing))} of {from_file}."
      )
  return tuple(ScoredClass(group, tuple(abbreviations[code] for code in group)) for group in groups)


def _read_csv(path: str) -> list[list[str]]:
  rows = list(csv.reader(_lines(path)))
  if not rows:
    raise Physionet2021SourceError(f"{path}: the file is empty.")
  return rows


def _lines(path: str) -> list[str]:
  try:
    with open(path, newline="", encoding="utf-8-sig") as handle:
      return handle.read().splitlines()
  except OSError as error:
    raise Physionet2021SourceError(f"{path}: cannot read the challenge table ({error}).") from error


SCORED_CLASSES = read_scored_classes()
CLASS_NAMES = tuple(scored.name for scored in SCORED_CLASSES)
CLASS_CODES = tuple("|".join(scored.codes) for scored in SCORED_CLASSES)
_CLASS_OF_CODE = {code: i for i, scored in enumerate(SCORED_CLASSES) for code in scored.codes}


@dataclasses.dataclass(frozen=True)
class DxLabels:
  """A record's `#Dx:` codes: classes, indices into CLASS_NAMES (sorted); unscored, the other
  codes in header order, each once."""

  classes: tuple[int, ...]
  unscored: tuple[str, ...]


def dx_labels(codes: Sequence[str], header: str) -> DxLabels:
  """Splits `#Dx:` codes into scored classes and unscored codes.

  Raises Physionet2021SourceError naming the header for an entry that is not a SNOMED-CT code (the
  first Challenge 2020 release wrote CPSC abbreviations; the icbeb2018 builder reads those).
  """
  classes, unscored = set(), []
  for code in codes:
    if not code.isdigit():
      raise Physionet2021SourceError(
        f"{header}: #Dx entry {code!r} is not a SNOMED-CT code; this builder reads the headers of "
        "the Challenge 2021 release (CPSC abbreviations of the first 2020 release: use icbeb2018)."
      )
    if code in _CLASS_OF_CODE:
      classes.add(_CLASS_OF_CODE[code])
    elif code not in unscored:
      unscored.append(code)
  return DxLabels(tuple(sorted(classes)), tuple(unscored))


def multi_hot(classes: Iterable[int]) -> np.ndarray:
  """float32 [26] with ones at the given class indices."""
  label = np.zeros(len(CLASS_NAMES), np.float32)
  label[list(classes)] = 1.0
  return label


def database_of(name: str) -> str | None:
  """The database of a record name ("HR00001" -> "ptb_xl"); None for a name of no database."""
  match = _RECORD_NAME.match(name)
  if match is None:
    return None
  prefix, number = match.groups()
  if prefix == "JS":
    return "chapman_shaoxing" if int(number) <= LAST_CHAPMAN_SHAOXING else "ningbo"
  return next(database for database, known in DATABASE_PREFIXES.items() if known == prefix)


def ptbxl_ecg_id(name: str) -> int:
  """The PTB-XL ecg_id of a PTB-XL record of the collection (HR00001 is ecg_id 1), else -1."""
  return int(name[2:]) if database_of(name) == "ptb_xl" else -1


def fold_of(name: str, seed: int = FOLD_SEED) -> int:
  """The record's fold in 1..NUM_FOLDS: a seeded hash of its name alone."""
  digest = hashlib.sha256(f"physionet2021/{seed}/{name}".encode()).digest()
  return int.from_bytes(digest[:8], "big") % NUM_FOLDS + 1


def split_of(fold: int, database: str, holdout: str = "") -> str:
  """The split of a record of this fold and database: folds 1-8 "train", 9 "validation", 10
  "test"; with a database held out (holdout, one of DATABASES), that database is the test split
  and the other databases' folds 1-9 train, fold 10 validation."""
  if not holdout:
    return icbeb_labels.split_of_fold(fold)
  if database == holdout:
    return "test"
  return "validation" if fold == NUM_FOLDS else "train"
