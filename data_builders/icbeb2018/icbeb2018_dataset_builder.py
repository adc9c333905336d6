"""TFDS builder `icbeb2018`: the China Physiological Signal Challenge 2018 (CPSC2018) 12-lead ECGs.

6,877 records of 6 to 60 s at 500 Hz, 9 classes (up to three per record). Built from a manual_dir
holding the records in any released form, mixed or not: the original `.mat` files, the Challenge
2020 WFDB files with SNOMED-CT `#Dx:` codes, or those of the first Challenge 2020 release with CPSC
abbreviations. See `sources.py` for how records, REFERENCE.csv, labels, folds and splits are
decided, and `labels.py` for the label mappings, the fold assignment and the MVKT authors' split.

Examples are written in (split, record name) order with no shuffling, so position i of a split
holds `index` i. A split without records (only possible for a subset) is left out with a warning.

Configs `<rate>hz[_label10_norm][_mvkt_split][_db6][_20s]`: `500hz` or `100hz` (polyphase
resampling of the 500 Hz signal); `_label10_norm` reads REFERENCE.csv's out-of-scheme label 10 as
NORM instead of dropping those 18 records; splits are the seeded folds (1-8 train, 9 validation, 10
test) or, with `_mvkt_split`, the MVKT authors' own lists (5,501 / 688 / 687 records; their labels
read label 10 as NORM). `_db6` denoises each record at 500 Hz with the authors' db6 wavelet
filter, and `_20s` stores each record centre-cropped, or tiled when shorter, to 20 s (10,000
samples at 500 Hz), as their code did (`preprocessing.py`); so
`500hz_label10_norm_mvkt_split_db6_20s` is the authors' setting. Otherwise records are stored at
full length (`ecg` [T, 12], `length` T) and the input pipeline crops. `first_label` is the class
index of the first label (REFERENCE.csv's First_label), for the MVKT `other_class` negatives.
"""

import contextlib
import dataclasses
import itertools
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from data_builders.icbeb2018 import labels, preprocessing, sources
from data_builders.manual_builder import ManualDirBuilder, record_example, record_features
from lead_kt import ecg_io
from lead_kt.ecg_io import STANDARD_LEADS, EcgReadError

SOURCE_RATE = 500
_PROGRESS_EVERY = 1000

_logger = logging.getLogger(__name__)

_CITATION = """\
@article{liu2018open,
  title={An Open Access Database for Evaluating the Algorithms of Electrocardiogram Rhythm and
         Morphology Abnormality Detection},
  author={Liu, Feifei and Liu, Chengyu and Zhao, Lina and Zhang, Xiangyu and Wu, Xiaoling and
          Xu, Xiaoyan and Liu, Yulin and Ma, Caiyun and Wei, Shoushui and He, Zhiqiang and Li,
          Jianqing and Yin Kwee, Eddie Ng},
  journal={Journal of Medical Imaging and Health Informatics},
  volume={8}, number={7}, pages={1368--1373}, year={2018}
}
"""


@dataclasses.dataclass(eq=False)
class Icbeb2018Config(tfds.core.BuilderConfig):
  """sampling_rate: stored rate in Hz. label10: "drop" or "norm" (labels.reference_classes).
  split: labels.FOLDS_SPLIT (seeded folds) or labels.MVKT_SPLIT (the MVKT authors' lists).
  denoise: the db6 wavelet filter (preprocessing.wavelet_denoise). record_seconds: 0 for full-length
  records, else every record centre-cropped or tiled to this many seconds."""

  sampling_rate: int = SOURCE_RATE
  label10: str = "drop"
  split: str = labels.FOLDS_SPLIT
  denoise: bool = False
  record_seconds: int = 0

  @property
  def record_length(self) -> int | None:
    """Samples per stored record; None when records keep their own length."""
    return self.record_seconds * self.sampling_rate or None


def _config(rate: int, label10: str, split: str, denoise: bool, record_seconds: int):
  label10_suffix = "" if label10 == "drop" else f"_label10_{label10}"
  split_suffix = "" if split == labels.FOLDS_SPLIT else f"_{split}_split"
  denoise_suffix = f"_{preprocessing.WAVELET}" if denoise else ""
  length_suffix = f"_{record_seconds}s" if record_seconds else ""
  treatment = "dropped" if label10 == "drop" else "read as NORM"
  splits = "folds 1-8/9/10" if split == labels.FOLDS_SPLIT else "the MVKT authors' split lists"
  length = f"centre-cropped or tiled to {record_seconds} s" if record_seconds else "full-length"
  filtered = f", {preprocessing.WAVELET}-denoised" if denoise else ""
  return Icbeb2018Config(
    name=f"{rate}hz{label10_suffix}{split_suffix}{denoise_suffix}{length_suffix}",
    description=(
      f"{rate} Hz, {length} records{filtered}; REFERENCE.csv label-10 records {treatment}; "
      f"train/validation/test from {splits}."
    ),
    sampling_rate=rate,
    label10=label10,
    split=split,
    denoise=denoise,
    record_seconds=record_seconds,
  )


class Builder(ManualDirBuilder, tfds.core.GeneratorBasedBuilder):
  """ICBEB2018 / CPSC2018 from a manual_dir (original .mat files or Challenge 2020 WFDB form)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": "first_label; CPSC-abbreviation #Dx headers; mixed forms; the MVKT authors' split, "
    "db6 denoising and 20 s records as configs.",
  }
  BUILDER_CONFIGS = [
    _config(rate, label10, split, denoise, record_seconds)
    for denoise, record_seconds in itertools.product(
      (False, True), (0, preprocessing.MVKT_RECORD_SECONDS)
    )
    for split in labels.SPLIT_SCHEMES
    for label10 in labels.LABEL10_TREATMENTS
    for rate in (SOURCE_RATE, 100)
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "500hz"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  This builder has no bundled sample: a manual_dir must be given, e.g.
  `tfds.builder("icbeb2018/500hz", data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=FOLDER))`.
  FOLDER (and its subfolders) holds the records, in any released form or a mix: the original
  challenge files A0001.mat ... (struct ECG) with REFERENCE.csv in FOLDER or its parent
  (http://2018.icbeb.org/Challenge.html), or the PhysioNet/CinC Challenge 2020 WFDB files
  A0001.hea + A0001.mat ... with SNOMED-CT codes or CPSC abbreviations in `#Dx:` (REFERENCE.csv
  optional; when present in FOLDER or its parent it gives the labels and folds). Each record once.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=record_features(
        self.builder_config.record_length,
        len(labels.CLASS_NAMES),
        # Class index of the first label (REFERENCE.csv's First_label, else the first #Dx
        # label), for the MVKT other_class negatives.
        first_label=tfds.features.Scalar(dtype=np.int32),
      ),
      homepage="http://2018.icbeb.org/Challenge.html",
      citation=_CITATION,
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(
        class_names=list(labels.CLASS_NAMES),
        lead_names=list(STANDARD_LEADS),
        sampling_rate=self.builder_config.sampling_rate,
        label10=self.builder_config.label10,
        split=self.builder_config.split,
        denoise=preprocessing.WAVELET if self.builder_config.denoise else "",
        record_seconds=self.builder_config.record_seconds,
        fold_seed=labels.FOLD_SEED,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download; the records come from self._manual_dir.
    manual_dir = _checked_manual_dir(self._manual_dir)
    config = self.builder_config
    plan = sources.plan_records(manual_dir, config.label10, config.split)
    _log_plan(plan)
    if not plan.records:
      raise labels.Icbeb2018SourceError(
        f"{manual_dir}: no record left to store after dropping (see the log)."
      )
    self.info.metadata["source_forms"] = plan.forms
    self.info.metadata["dx_notations"] = plan.dx_notations
    self.info.metadata["dropped_records"] = {
      reason: len(names) for reason, names in plan.dropped.items()
    }
    if config.split == labels.MVKT_SPLIT:
      self.info.metadata["missing_listed_records"] = plan.missing_listed
    splits = sources.split_records(plan.records)
    empty = [split for split, entries in splits.items() if not entries]
    if empty:  # TFDS cannot write an empty split; only a subset of the records can cause this.
      _logger.warning("icbeb2018: no records for split(s) %s; not created.", ", ".join(empty))
    return {split: self._generate_examples(entries) for split, entries in splits.items() if entries}

  def _generate_examples(self, entries: list[tuple[int, sources.PlannedRecord]]):
    config = self.builder_config
    started = time.monotonic()
    reads = ecg_io.read_records([planned.path for _, planned in entries])
    with contextlib.closing(reads):
      for count, ((index, planned), record) in enumerate(zip(entries, reads, strict=True), 1):
        ecg = _checked_signal(record)
        if config.denoise:  # At the source rate: the filter's bands are set for 500 Hz.
          ecg = preprocessing.wavelet_denoise(ecg)
        if config.sampling_rate != SOURCE_RATE:
          ecg = ecg_io.resample(ecg, SOURCE_RATE, config.sampling_rate)
        if config.record_length:
          ecg = preprocessing.centre_crop_or_tile(ecg, config.record_length)
        label = labels.multi_hot(planned.classes)
        example = record_example(ecg, label, index, planned, record, first_label=planned.classes[0])
        yield planned.name, example
        if count % _PROGRESS_EVERY == 0 or count == len(entries):
          rate = count / max(time.monotonic() - started, 1e-9)
          _logger.info(
            "icbeb2018/%s: %d/%d records read (%.0f/s)", config.name, count, len(entries), rate
          )


def _checked_manual_dir(manual_dir: str | None) -> str:
  """manual_dir if it is a non-empty folder; else an error saying a manual_dir must be given."""
  if manual_dir is None:
    problem = "no manual_dir was given"
  elif not os.path.isdir(manual_dir):
    problem = f"manual_dir {manual_dir} does not exist or is not a folder"
  elif not os.listdir(manual_dir):
    problem = f"manual_dir {manual_dir} is empty"
  else:
    return manual_dir
  raise labels.Icbeb2018SourceError(
    f"icbeb2018: {problem}. A manual_dir holding the records must be given (this builder has no "
    "bundled sample): pass tfds.download.DownloadConfig(manual_dir=FOLDER) with FOLDER holding "
    "(or subfolders holding) the original A*.mat files or the Challenge 2020 WFDB files A*.hea + "
    "A*.mat."
  )


def _checked_signal(record: ecg_io.Record) -> np.ndarray:
  """The signal as float32 [T, 12] in the standard lead order.

  Raises EcgReadError naming the file unless the record has exactly the 12 standard leads at 500 Hz.
  """
  if sorted(record.lead_names) != sorted(STANDARD_LEADS):
    ignored = ecg_io.ignored_channels_note(record)
    raise EcgReadError(
      f"{record.path}: leads {', '.join(record.lead_names)} differ from the 12 standard leads "
      f"{', '.join(STANDARD_LEADS)}" + (f" ({ignored})." if ignored else ".")
    )
  if record.fs != SOURCE_RATE:
    raise EcgReadError(f"{record.path}: sampling rate {record.fs:g} Hz, expected {SOURCE_RATE} Hz.")
  return ecg_io.select_leads(record, STANDARD_LEADS)


def _log_plan(plan: sources.SourcePlan) -> None:
  _logger.info(
    "icbeb2018: %d records kept (forms %s; WFDB #Dx notations %s), REFERENCE.csv: %s",
    len(plan.records),
    plan.forms,
    plan.dx_notations,
    plan.reference_path or "not found (labels and folds from the headers of the records present)",
  )
  for reason, names in plan.dropped.items():
    _logger.warning(
      "icbeb2018: dropped %d records, %s: %s", len(names), reason, sources.first_names(names)
    )
  if plan.missing_listed:
    _logger.warning(
      "icbeb2018: %d records of the MVKT split lists are not in the manual_dir; skipped.",
      plan.missing_listed,
    )
  if plan.unknown_dx:
    _logger.warning(
      "icbeb2018: #Dx entries that are neither a SNOMED code nor a CPSC abbreviation of the 9 "
      "classes, ignored (entry: headers): %s",
      plan.unknown_dx,
    )
