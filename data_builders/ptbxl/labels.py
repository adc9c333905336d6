"""PTB-XL label construction of the benchmark of Strodthoff et al. (2021), as pure functions.

Every key of a record's `scp_codes` counts, whatever its likelihood value (0 included). A task maps
the statements that belong to it onto class names:

| task            | statements kept                | class name               | classes |
|-----------------|--------------------------------|--------------------------|---------|
| all             | every statement                | the statement            | 71      |
| diagnostic      | `diagnostic == 1`              | the statement            | 44      |
| subdiagnostic   | `diagnostic == 1`              | its `diagnostic_subclass`| 23      |
| superdiagnostic | `diagnostic == 1`              | its `diagnostic_class`   | 5       |
| form            | `form == 1`                    | the statement            | 19      |
| rhythm          | `rhythm == 1`                  | the statement            | 12      |

The class list of a task comes from `scp_statements.csv` alone (sorted by name), never from the
records, so every subset of the data gives the same outputs. A code that `scp_statements.csv` does
not define is an error (`UnknownStatementError`): it means the database and statement files do not
belong together, and silently dropping it would change labels.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import pandas as pd

TASKS: tuple[str, ...] = (
  "all",
  "diagnostic",
  "subdiagnostic",
  "superdiagnostic",
  "form",
  "rhythm",
)
STATEMENT_COLUMNS: tuple[str, ...] = (
  "diagnostic",
  "form",
  "rhythm",
  "diagnostic_class",
  "diagnostic_subclass",
)
# Which statements a task keeps (a flag column, or None for all) and what it calls them.
_TASK_RULES: dict[str, tuple[str | None, str | None]] = {
  "all": (None, None),
  "diagnostic": ("diagnostic", None),
  "subdiagnostic": ("diagnostic", "diagnostic_subclass"),
  "superdiagnostic": ("diagnostic", "diagnostic_class"),
  "form": ("form", None),
  "rhythm": ("rhythm", None),
}


class UnknownStatementError(ValueError):
  """A record uses an SCP code that scp_statements.csv does not define."""


def parse_scp_codes(text: str) -> dict[str, float]:
  """Parses a `scp_codes` cell such as "{'NORM': 100.0, 'SR': 0.0}" into {code: likelihood}."""
  try:
    codes = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError) as error:
    raise ValueError(f"scp_codes {text!r} is not a dict literal") from error
  if not isinstance(codes, dict):
    raise ValueError(f"scp_codes {text!r} is not a dict literal")
  return {str(code): float(likelihood) for code, likelihood in codes.items()}


def task_mapping(statements: pd.DataFrame, task: str) -> dict[str, str]:
  """Maps each SCP code that counts for `task` to its class name.

  Args:
    statements: scp_statements.csv indexed by SCP code, with the columns of STATEMENT_COLUMNS.
    task: one of TASKS.
  """
  if task not in _TASK_RULES:
    raise ValueError(f"unknown PTB-XL task {task!r}; expected one of {', '.join(TASKS)}")
  flag_column, class_column = _TASK_RULES[task]
  kept = statements if flag_column is None else statements[statements[flag_column] == 1]
  if class_column is None:
    return {str(code): str(code) for code in kept.index}
  missing = kept.index[kept[class_column].isna()]
  if len(missing):
    raise ValueError(f"statements {list(missing)} have no {class_column}")
  return {str(code): str(name) for code, name in kept[class_column].items()}


def class_names(mapping: Mapping[str, str]) -> list[str]:
  """The sorted class names of a task mapping (from `task_mapping`)."""
  return sorted(set(mapping.values()))


def record_classes(
  codes: Iterable[str], mapping: Mapping[str, str], known_codes: Collection[str]
) -> set[str]:
  """The class names of one record: its codes that count for the task, mapped to classes.

  Raises UnknownStatementError for a code outside `known_codes` (the statements' index).
  """
  codes = list(codes)
  unknown = sorted(code for code in codes if code not in known_codes)
  if unknown:
    raise UnknownStatementError(f"SCP codes {unknown} are not defined in scp_statements.csv")
  return {mapping[code] for code in codes if code in mapping}


def multi_hot(classes: Iterable[str], names: list[str]) -> np.ndarray:
  """float32 [len(names)] with 1 at the position of every class in `classes`."""
  position = {name: i for i, name in enumerate(names)}
  vector = np.zeros(len(names), np.float32)
  for name in classes:
    vector[position[name]] = 1.0
  return vector
