"""CSV files: a header row of lead names, one column per lead (units optional, as in `V1 (uV)`),
one row per sample; the sampling rate is passed in."""

from __future__ import annotations

import csv
import math
import os
import re

import numpy as np

from lead_kt.ecg_io.core import EcgReadError, LeadNaming, Record, make_record, millivolt_factor

# CSV columns that hold time stamps or sample numbers rather than a lead (compared in lower case).
_CSV_TIME_COLUMNS = ("time", "t", "time_s", "time_ms", "timestamp", "seconds", "sample", "index")
_CSV_DELIMITERS = (",", ";", "\t")
_CSV_UNIT = re.compile(r"^(?P<name>.*?)\s*[\[(](?P<unit>[^\])]*)[\])]$")


def read_csv(path: str, fs: float | None, naming: LeadNaming) -> Record:
  """A CSV file: a header row of channel labels (units optional: `I (uV)`, `V1 [mV]`; default mV),
  then one row per sample; `,`, `;` or tab separated. Time or sample-number columns are skipped.
  A file of one column needs no header when its lead is named (naming.single_lead). Every row
  must have the header's number of fields, and every cell read must hold a finite number."""
  if fs is None:
    raise EcgReadError(f"{path}: a CSV file has no sampling rate; pass it (csv_fs / --csv-fs)")
  if not os.path.isfile(path):
    raise EcgReadError(f"{path}: no such file")
  try:
    with open(path, encoding="utf-8-sig") as csv_file:
      header_line = csv_file.readline().strip()
  except (OSError, UnicodeDecodeError) as error:
    raise EcgReadError(f"{path}: cannot read the CSV file ({error})") from error
  delimiter = max(_CSV_DELIMITERS, key=header_line.count)
  delimiter = delimiter if delimiter in header_line else ","
  fields = [f.strip().strip("'") for f in next(csv.reader([header_line], delimiter=delimiter))]
  headerless = not header_line or all(_is_number(field) for field in fields)
  if headerless and not (naming.single_lead and len(fields) == 1):
    raise EcgReadError(
      f"{path}: the CSV file has no header row of lead names (first line: {header_line[:60]!r}); "
      f"its first row must name each column's lead, e.g. I,II,V1 (a file of one column may "
      f"instead be given its lead: --lead I)"
    )
  if headerless:
    columns, labels, units = [0], ["1"], [None]
  else:
    columns, labels, units = [], [], []
    for column, field in enumerate(fields):
      match = _CSV_UNIT.match(field)
      name, unit = (match["name"], match["unit"]) if match else (field, None)
      if name.strip().lower() not in _CSV_TIME_COLUMNS:
        columns.append(column)
        labels.append(name)
        units.append(unit)
    if not columns:
      raise EcgReadError(f"{path}: the CSV header names no ECG lead ({header_line[:60]!r})")
  positions, lead_names, ignored = naming.channels(labels, path)
  columns = [columns[position] for position in positions]
  scales = [millivolt_factor(units[position], path) for position in positions]
  first_row = 1 if headerless else 2  # Rows are numbered as the file's lines.
  _check_csv_row_lengths(path, delimiter, len(fields), first_row)
  import pandas as pd  # Imported here: most callers never read CSV.

  try:
    # Every cell as text ("NA" and "" too), so that each bad one is named below.
    table = pd.read_csv(
      path,
      sep=delimiter,
      header=None,
      skiprows=first_row - 1,
      usecols=columns,
      dtype=str,
      encoding="utf-8-sig",
      skip_blank_lines=False,
      na_filter=False,
    )
  except pd.errors.EmptyDataError:
    raise EcgReadError(f"{path}: the record has no samples (a header row only)") from None
  except Exception as error:
    raise EcgReadError(f"{path}: cannot parse the CSV rows ({error})") from error
  filled = np.flatnonzero((table != "").any(axis=1).to_numpy())
  table = table.iloc[: filled[-1] + 1 if len(filled) else 0]  # Blank lines at the end are no rows.
  values = np.empty((len(table), len(columns)), np.float64)
  for position, column in enumerate(columns):
    text = table[column].str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
      cell = text.iloc[bad[0]]
      name = column + 1 if headerless else repr(fields[column])
      raise EcgReadError(
        f"{path}: row {bad[0] + first_row}, column {name}: "
        + (f"{cell!r} is not a finite number" if cell else "empty cell (a missing sample)")
      )
    values[:, position] = numbers
  signal = (values * np.array(scales)).astype(np.float32)
  meta = {
    "age": math.nan,
    "sex": -1,
    "comments": (),
    "header_fields": {},
    "ignored_channels": ignored,
  }
  return make_record(signal, lead_names, float(fs), path, meta)


def _check_csv_row_lengths(path: str, delimiter: str, num_fields: int, first_row: int) -> None:
  """Refuses the first row (from line `first_row`) whose number of fields is not `num_fields`:
  a decimal comma (`0,123`) in a comma-separated file splits a cell in two and shifts the row's
  later cells into the wrong leads. Blank lines are left to the cell checks."""
  separator = delimiter.encode()
  with open(path, "rb") as csv_file:
    for row, line in enumerate(csv_file, start=1):
      if row < first_row or not line.strip():
        continue
      # Quoted cells may hold the delimiter: only those lines need a real CSV parser.
      count = (
        len(next(csv.reader([line.decode("utf-8", "replace")], delimiter=delimiter)))
        if b'"' in line
        else line.count(separator) + 1
      )
      if count != num_fields:
        hint = " (a decimal comma?)" if delimiter == "," and count > num_fields else ""
        raise EcgReadError(
          f"{path}: row {row} has {count} field{'s' if count != 1 else ''}{hint}, but the "
          + ("first row" if first_row == 1 else "header")
          + f" has {num_fields}"
        )


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True
