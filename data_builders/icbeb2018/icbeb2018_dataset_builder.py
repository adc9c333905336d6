"""TFDS builder `icbeb2018`: the China Physiological Signal Challenge 2018 (CPSC2018) 12-lead ECGs.

6,877 records of 6 to 60 s at 500 Hz, 9 classes (up to three per record). Built from a manual_dir
in either released form; see `sources.py` for how the form, REFERENCE.csv, labels and folds are
decided, and `labels.py` for the fold assignment.

Examples are written in (split, record name) order with no shuffling, so position i of a split
holds `index` i. A split without records (only possible for a subset) is left out with a warning.

Configs: `500hz` and `100hz` (polyphase resampling of the 500 Hz signal), each also as
`*_label10_norm`, which reads REFERENCE.csv's out-of-scheme label 10 as NORM instead of dropping
those 18 records. Records are stored at full length (`ecg` [T, 12], `length` T); the input pipeline
crops. Splits follow the MVKT protocol: folds 1-8 train, 9 validation, 10 test.
"""

import contextlib
import dataclasses
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from data_builders.icbeb2018 import labels, sources
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
  """sampling_rate: stored rate in Hz. label10: "drop" or "norm" (labels.reference_classes)."""

  sampling_rate: int = SOURCE_RATE
  label10: str = "drop"


def _config(rate: int, label10: str) -> Icbeb2018Config:
  suffix = "" if label10 == "drop" else f"_label10_{label10}"
  treatment = "dropped" if label10 == "drop" else "read as NORM"
  return Icbeb2018Config(
    name=f"{rate}hz{suffix}",
    description=f"{rate} Hz, full-length records; REFERENCE.csv label-10 records {treatment}.",
    sampling_rate=rate,
    label10=label10,
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """ICBEB2018 / CPSC2018 from a manual_dir (original .mat files or Challenge 2020 WFDB form)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    _config(rate, label10) for label10 in labels.LABEL10_TREATMENTS for rate in (SOURCE_RATE, 100)
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "500hz"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  This builder has no bundled sample: a manual_dir must be given, e.g.
  `tfds.builder("icbeb2018/500hz", data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=FOLDER))`.
  FOLDER holds the records of one form: the original challenge files A0001.mat ... (struct ECG)
  with REFERENCE.csv in FOLDER or its parent (http://2018.icbeb.org/Challenge.html), or the
  PhysioNet/CinC Challenge 2020 WFDB files A0001.hea + A0001.mat ... (REFERENCE.csv optional, used
  for the folds when present in FOLDER or its parent).
  """

  def __init__(self, *, file_format=None, **kwargs):
    """file_format defaults to array_record (random access without TensorFlow)."""
    self._manual_dir: str | None = None
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
    """As TFDS's; remembers download_config.manual_dir, which a build requires."""
    manual_dir = download_config and download_config.manual_dir
    self._manual_dir = os.fspath(manual_dir) if manual_dir is not None else None
    super().download_and_prepare(
      download_dir=download_dir, download_config=download_config, **kwargs
    )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          # Raw bytes: much faster to serialise than a proto float list (as in ptbxl).
          "ecg": tfds.features.Tensor(
            shape=(None, len(STANDARD_LEADS)),
            dtype=np.float32,
            encoding=tfds.features.Encoding.BYTES,
          ),
          "label": tfds.features.Tensor(
            shape=(len(labels.CLASS_NAMES),),
            dtype=np.float32,
            encoding=tfds.features.Encoding.BYTES,
          ),
          "index": tfds.features.Scalar(dtype=np.int64),
          "length": tfds.features.Scalar(dtype=np.int32),
          "strat_fold": tfds.features.Scalar(dtype=np.int32),
          "age": tfds.features.Scalar(dtype=np.float32),
          "sex": tfds.features.Scalar(dtype=np.int32),
          "record_id": tfds.features.Text(),
        }
      ),
      homepage="http://2018.icbeb.org/Challenge.html",
      citation=_CITATION,
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(
        class_names=list(labels.CLASS_NAMES),
        lead_names=list(STANDARD_LEADS),
        sampling_rate=self.builder_config.sampling_rate,
        label10=self.builder_config.label10,
        fold_seed=labels.FOLD_SEED,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download; the records come from self._manual_dir.
    manual_dir = _checked_manual_dir(self._manual_dir)
    plan = sources.plan_records(manual_dir, self.builder_config.label10)
    _log_plan(plan)
    if not plan.records:
      raise labels.Icbeb2018SourceError(
        f"{manual_dir}: no record left to store after dropping (see the log)."
      )
    self.info.metadata["source_form"] = plan.form
    self.info.metadata["dropped_records"] = {
      reason: len(names) for reason, names in plan.dropped.items()
    }
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
        if config.sampling_rate != SOURCE_RATE:
          ecg = ecg_io.resample(ecg, SOURCE_RATE, config.sampling_rate)
        yield (
          planned.name,
          {
            "ecg": ecg,
            "label": labels.multi_hot(planned.classes),
            "index": index,
            "length": ecg.shape[0],
            "strat_fold": planned.fold,
            "age": record.meta["age"],
            "sex": record.meta["sex"],
            "record_id": planned.name,
          },
        )
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
    "the original A*.mat files or the Challenge 2020 WFDB files A*.hea + A*.mat."
  )


def _checked_signal(record: ecg_io.Record) -> np.ndarray:
  """The signal as float32 [T, 12] in the standard lead order.

  Raises EcgReadError naming the file unless the record has exactly the 12 standard leads at 500 Hz.
  """
  if sorted(record.lead_names) != sorted(STANDARD_LEADS):
    raise EcgReadError(
      f"{record.path}: leads {', '.join(record.lead_names)} differ from the 12 standard leads "
      f"{', '.join(STANDARD_LEADS)}."
    )
  if record.fs != SOURCE_RATE:
    raise EcgReadError(f"{record.path}: sampling rate {record.fs:g} Hz, expected {SOURCE_RATE} Hz.")
  return ecg_io.select_leads(record, STANDARD_LEADS)


def _log_plan(plan: sources.SourcePlan) -> None:
  _logger.info(
    "icbeb2018: %s form, %d records kept, REFERENCE.csv: %s",
    plan.form,
    len(plan.records),
    plan.reference_path or "not found (folds from the header labels of the records present)",
  )
  for reason, names in plan.dropped.items():
    _logger.warning("icbeb2018: dropped %d records, %s: %s", len(names), reason, _first(names))
  if plan.unmapped_codes:
    _logger.warning(
      "icbeb2018: SNOMED codes outside the 9 classes ignored: %s", plan.unmapped_codes
    )
  if plan.label_mismatches:
    _logger.warning(
      "icbeb2018: %d WFDB headers disagree with REFERENCE.csv (header labels used): %s",
      len(plan.label_mismatches),
      _first(plan.label_mismatches),
    )


def _first(names, count: int = 10) -> str:
  return ", ".join(names[:count]) + (", ..." if len(names) > count else "")
