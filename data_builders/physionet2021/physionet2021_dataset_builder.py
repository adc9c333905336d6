"""TFDS builder `physionet2021`: the PhysioNet/CinC Challenge 2021 collection of 12-lead ECGs.

About 88,000 records from eight databases (CPSC 2018, CPSC-Extra, St Petersburg INCART, PTB,
PTB-XL, Georgia, Chapman-Shaoxing, Ningbo) in one WFDB form (`.hea` + `.mat`) with SNOMED-CT
`#Dx:` labels, read from a manual_dir holding any subset in any layout (`sources.py`). Labels: the
challenge's 26 scored classes with its equivalent codes merged (`labels.py`).

Configs `<rate>hz[_scored_only][_holdout_<database>]`:
- `100hz` or `500hz`: every record resampled (polyphase) from its own rate (257 Hz INCART, 1000
  Hz PTB, 500 Hz the rest) and stored at full length (`ecg` [T, 12], `length` T: under 10 s to 30
  min); the input pipeline cuts windows of data.crop_len and pads records shorter than one
  (data.pad_short).
- `_scored_only` drops the records without a scored label; by default they are kept with an
  all-zero label (as the challenge's scoring keeps them).
- `_holdout_<database>`: that database is the test split, the other databases' folds 1-9 train and
  fold 10 validation (the trainer's data.cv_test_fold re-splits all records by `strat_fold`, so it
  ignores the held-out database). Otherwise folds 1-8 train, 9 validation, 10 test. Folds are
  seeded and patient-unaware: the collection has no patient ids.

Signals are read with lead_kt.ecg_io, which applies each header's gain and baseline whatever they
are (not only 1000/mV), reads units `mV`, `mv` (and uV, V) into mV, and accepts a record line that
names the record with its `.mat` extension (`E00001.mat 12 500 5000`, the first Georgia release).
Examples are written in (split, record name) order with no shuffling, so position i of a split
holds `index` i. A record is left out, with its reason and the reader's message naming the file
in the log and in `info.metadata["unusable_records"]`, when the reader refuses it (samples marked
missing, -32768 in format 16; a truncated signal file), when it lacks one of the 12 standard leads
(nothing is filled in), or when all 12 leads are flat. A record with some flat leads (peak-to-peak
at most ecg_io.FLAT_LEAD_MV: a detached electrode) is stored as recorded, its flat leads marked in
`flat_leads` and counted per lead in the metadata.

PTB-XL is in this collection (records HR00001.., the same signals as PTB-XL's 500 Hz records;
`ptbxl_ecg_id` gives the ecg_id) and in its own release (the `ptbxl` builder). This builder keeps
them, with folds of its own, not PTB-XL's: a model trained on this collection has seen PTB-XL
test-fold records. To evaluate on PTB-XL with it, train on `<rate>hz_holdout_ptb_xl`, which
keeps every PTB-XL record out of train and validation. Within a manual_dir, a record name found
twice is an error naming both files.
"""

import dataclasses
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from data_builders.icbeb2018.sources import first_names
from data_builders.manual_builder import ManualDirBuilder, record_example, record_features
from data_builders.physionet2021 import labels, sources
from data_builders.physionet2021.labels import Physionet2021SourceError
from lead_kt import ecg_io
from lead_kt.ecg_io import STANDARD_LEADS, EcgReadError

RATES = (100, 500)
_PROGRESS_EVERY = 2000
# Reasons for leaving a record out while reading (keys of metadata["dropped"]).
DROP_UNREADABLE = "the reader refused it"
DROP_MISSING_LEADS = "lacks a standard lead"
DROP_ALL_FLAT = "all 12 leads flat"

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Physionet2021Config(tfds.core.BuilderConfig):
  """sampling_rate: stored rate in Hz. keep_unscored: keep records without a scored label (all-zero
  label) or drop them. holdout: "" for the seeded folds, else the database that is the test
  split (one of labels.DATABASES)."""

  sampling_rate: int = 500
  keep_unscored: bool = True
  holdout: str = ""


def _config(rate: int, keep_unscored: bool, holdout: str) -> Physionet2021Config:
  scored_suffix = "" if keep_unscored else "_scored_only"
  holdout_suffix = f"_holdout_{holdout}" if holdout else ""
  unscored = "kept with an all-zero label" if keep_unscored else "dropped"
  splits = (
    f"test = {holdout}, train/validation = the other databases' folds 1-9/10"
    if holdout
    else "seeded folds 1-8/9/10"
  )
  return Physionet2021Config(
    name=f"{rate}hz{scored_suffix}{holdout_suffix}",
    description=f"{rate} Hz, full-length records; records without a scored label {unscored}; "
    f"{splits}.",
    sampling_rate=rate,
    keep_unscored=keep_unscored,
    holdout=holdout,
  )


class Builder(ManualDirBuilder, tfds.core.GeneratorBasedBuilder):
  """The PhysioNet/CinC Challenge 2021 collection, or any part of it, from a manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    _config(rate, keep_unscored, holdout)
    for holdout in ("", *labels.DATABASES)
    for keep_unscored in (True, False)
    for rate in RATES
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "500hz"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the collection from https://physionet.org/content/challenge-2021/ (e.g.
  `wget -r -N -c -np https://physionet.org/files/challenge-2021/1.0.3/`) and pass
  `tfds.download.DownloadConfig(manual_dir=FOLDER)`, FOLDER holding the `training/` folder, one
  database folder of it, several, or the records (`<name>.hea` + `<name>.mat`) in flat folders.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return self.dataset_info_from_configs(
      features=record_features(
        None,
        len(labels.CLASS_NAMES),
        database=tfds.features.Text(),
        # The #Dx codes of no scored class, comma-separated in header order.
        unscored_dx=tfds.features.Text(),
        # Leads (in lead_names order) whose peak-to-peak is at most ecg_io.FLAT_LEAD_MV.
        flat_leads=tfds.features.Tensor(shape=(len(STANDARD_LEADS),), dtype=np.bool_),
        ptbxl_ecg_id=tfds.features.Scalar(dtype=np.int64),
      ),
      homepage="https://physionet.org/content/challenge-2021/",
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(
        class_names=list(labels.CLASS_NAMES),
        class_codes=list(labels.CLASS_CODES),
        lead_names=list(STANDARD_LEADS),
        sampling_rate=config.sampling_rate,
        keep_unscored=config.keep_unscored,
        holdout=config.holdout,
        fold_seed=labels.FOLD_SEED,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download; the records come from self._manual_dir.
    manual_dir = _checked_manual_dir(self._manual_dir)
    config = self.builder_config
    plan = sources.plan_records(manual_dir, config.keep_unscored, config.holdout)
    _log_plan(plan, config.name)
    metadata = self.info.metadata
    metadata["dropped"] = {reason: len(names) for reason, names in plan.dropped.items()}
    metadata["skipped_headers"] = len(plan.skipped)
    metadata["unscored_codes"] = plan.unscored_codes
    # Filled while reading: what was stored, and what was left out and why.
    metadata.update(records_per_database={}, durations_s={}, flat_leads={}, unusable_records={})
    empty = [split for split, records in plan.records.items() if not records]
    if len(empty) == len(plan.records):
      raise Physionet2021SourceError(f"{manual_dir}: no record left to store (see the log).")
    if empty:  # TFDS cannot write an empty split; only a subset of the collection can cause this.
      _logger.warning("physionet2021: no records for split(s) %s; not created.", ", ".join(empty))
    return {
      split: self._generate_examples(split, records)
      for split, records in plan.records.items()
      if records
    }

  def _generate_examples(self, split: str, records: tuple[sources.PlannedRecord, ...]):
    config = self.builder_config
    metadata = self.info.metadata
    started, index = time.monotonic(), 0
    # One record at a time in this process: ecg_io.read_records stops at the first record it
    # refuses, and the collection holds such records, which are left out here, not fatal.
    for count, planned in enumerate(records, 1):
      try:
        record, ecg, flat = _stored_signal(planned, config.sampling_rate)
      except _LeftOut as left_out:
        reason, message = left_out.args
        _logger.warning("physionet2021: %s left out, %s: %s", planned.name, reason, message)
        metadata["dropped"][reason] = metadata["dropped"].get(reason, 0) + 1
        metadata["unusable_records"][planned.name] = message
        continue
      _count_stored(metadata, planned.database, record, flat)
      yield (
        planned.name,
        record_example(
          ecg,
          labels.multi_hot(planned.classes),
          index,
          planned,
          record,
          database=planned.database,
          unscored_dx=",".join(planned.unscored),
          flat_leads=flat,
          ptbxl_ecg_id=labels.ptbxl_ecg_id(planned.name),
        ),
      )
      index += 1
      if count % _PROGRESS_EVERY == 0:
        rate = count / max(time.monotonic() - started, 1e-9)
        _logger.info(
          "physionet2021/%s: %d/%d records read (%.0f/s)", config.name, count, len(records), rate
        )
    _logger.info(
      "physionet2021/%s: %s split: %d of %d records stored in %.0f s",
      config.name,
      split,
      index,
      len(records),
      time.monotonic() - started,
    )
    if not index:  # TFDS cannot write an empty split.
      left_out = [f"{r.name} ({metadata['unusable_records'][r.name]})" for r in records]
      raise Physionet2021SourceError(
        f"physionet2021: every record of the {split} split was left out: "
        f"{first_names(left_out, sep='; ')}"
      )


class _LeftOut(Exception):
  """A record that is not stored: args (reason, message naming the file)."""


def _stored_signal(planned: sources.PlannedRecord, sampling_rate: int):
  """(record, ecg float32 [T, 12] at sampling_rate, flat bool [12]); _LeftOut for a record left
  out (module docstring)."""
  try:
    record = ecg_io.read_record(planned.path)
  except EcgReadError as error:
    raise _LeftOut(DROP_UNREADABLE, str(error)) from None
  missing = [lead for lead in STANDARD_LEADS if lead not in record.lead_names]
  if missing:
    raise _LeftOut(DROP_MISSING_LEADS, f"{record.path}: lacks lead {', '.join(missing)}")
  ecg = ecg_io.select_leads(record, STANDARD_LEADS)
  flat = np.ptp(ecg, axis=0) <= ecg_io.FLAT_LEAD_MV
  if flat.all():
    raise _LeftOut(DROP_ALL_FLAT, f"{record.path}: every lead is flat (no ECG signal)")
  return record, ecg_io.resample(ecg, record.fs, sampling_rate), flat


def _count_stored(metadata, database: str, record: ecg_io.Record, flat: np.ndarray) -> None:
  per_database = metadata["records_per_database"]
  per_database[database] = per_database.get(database, 0) + 1
  seconds = record.num_samples / record.fs
  low, high = metadata["durations_s"].get(database, (seconds, seconds))
  metadata["durations_s"][database] = [min(low, seconds), max(high, seconds)]
  for lead in np.asarray(STANDARD_LEADS)[flat]:
    metadata["flat_leads"][lead] = metadata["flat_leads"].get(lead, 0) + 1


def _checked_manual_dir(manual_dir: str | None) -> str:
  """manual_dir if it is a folder; else an error saying where to get the collection."""
  if manual_dir is None:
    problem = "no manual_dir was given"
  elif not os.path.isdir(manual_dir):
    problem = f"manual_dir {manual_dir} does not exist or is not a folder"
  else:
    return manual_dir
  raise Physionet2021SourceError(
    f"physionet2021: {problem}. {' '.join(Builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
  )


def _log_plan(plan: sources.SourcePlan, config_name: str) -> None:
  _logger.info(
    "physionet2021/%s: %s records planned (%s)",
    config_name,
    sum(len(records) for records in plan.records.values()),
    ", ".join(f"{split} {len(records)}" for split, records in plan.records.items()),
  )
  for reason, names in plan.dropped.items():
    _logger.warning(
      "physionet2021: dropped %d records, %s: %s", len(names), reason, first_names(names)
    )
  if plan.skipped:
    _logger.warning(
      "physionet2021: skipped %d .hea files not named like a record of the collection: %s",
      len(plan.skipped),
      first_names(plan.skipped),
    )
