"""TFDS builder `ptbxl`: PTB-XL v1.0.3, 21,799 ten-second 12-lead ECGs at 100 and 500 Hz.

Configs `<task>_<rate>`: the label tasks of the PTB-XL benchmark (Strodthoff et al., 2021; see
`labels.py`) at 100 Hz or 500 Hz. Splits: strat_fold 1-8 train, 9 validation, 10 test. A record
without a label for the task is left out of that config (the count is logged and kept in the
metadata as `excluded_without_label`). Examples are written in (split, ecg_id) order with no
shuffling, so position i of a split holds `index` i. `age` is the CSV value (PTB-XL writes 300 for
patients older than 89).

Source, in this order: the official PhysioNet download when the builder is made with
`download=True`; else `DownloadConfig(manual_dir=...)` holding the extracted release; else the
bundled 400-record, 100 Hz sample (`SAMPLE_DIR`), so that training works on a fresh machine.
"""

import dataclasses
import logging
import os
import pathlib
import socket
import time
import urllib.parse
import urllib.request

import numpy as np
import tensorflow_datasets as tfds

from data_builders.ptbxl import labels, source
from lead_kt import ecg_io

SAMPLE_DIR = pathlib.Path(__file__).parent / "sample"
PHYSIONET_URL = (
  "https://physionet.org/static/published-projects/ptb-xl/"
  "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip"
)
_RELEASE_FOLDER = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
_LAYOUT = (
  "the extracted PTB-XL release: ptbxl_database.csv, scp_statements.csv, records100/ and/or "
  "records500/, optionally SHA256SUMS.txt"
)
_SOURCE_SAMPLE = "bundled_sample"
_PROGRESS_EVERY = 2000
_CONNECT_TIMEOUT_S = 10

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class PtbxlConfig(tfds.core.BuilderConfig):
  """task: one of labels.TASKS. sampling_rate: 100 or 500 (Hz), the records folder read."""

  task: str = "superdiagnostic"
  sampling_rate: int = 100


class Builder(tfds.core.GeneratorBasedBuilder):
  """PTB-XL from the bundled sample, a manual_dir, or the PhysioNet download (download=True)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    PtbxlConfig(
      name=f"{task}_{rate}hz",
      description=f"PTB-XL {task} labels, {rate} Hz.",
      task=task,
      sampling_rate=rate,
    )
    for task in labels.TASKS
    for rate in source.RATES
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "superdiagnostic_100hz"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Optional: without a manual_dir the bundled 400-record 100 Hz sample is used. For the full data,
  download {PHYSIONET_URL}, extract it and pass
  `tfds.download.DownloadConfig(manual_dir=<the folder holding ptbxl_database.csv>)`.
  The folder must hold {_LAYOUT}.
  """

  def __init__(self, *, download: bool = False, file_format=None, **kwargs):
    """download: fetch the release from PhysioNet instead of reading a manual_dir or the sample.

    file_format defaults to array_record (random access without TensorFlow).
    """
    self._download = download
    self._manual_dir: pathlib.Path | None = None
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    class_names = self._class_names()
    length = source.RATES[config.sampling_rate][2]
    lead_count = len(ecg_io.STANDARD_LEADS)
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          # Raw bytes: serialising 12,000 floats as a proto float list is ~15x slower.
          "ecg": tfds.features.Tensor(
            shape=(length, lead_count), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
          ),
          "label": tfds.features.Tensor(
            shape=(len(class_names),), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
          ),
          "index": tfds.features.Scalar(dtype=np.int64),
          "length": tfds.features.Scalar(dtype=np.int32),
          "strat_fold": tfds.features.Scalar(dtype=np.int32),
          "age": tfds.features.Scalar(dtype=np.float32),
          "sex": tfds.features.Scalar(dtype=np.int32),
          "ecg_id": tfds.features.Scalar(dtype=np.int64),
          "patient_id": tfds.features.Scalar(dtype=np.int64),
        }
      ),
      homepage="https://physionet.org/content/ptb-xl/1.0.3/",
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(
        class_names=class_names,
        lead_names=list(ecg_io.STANDARD_LEADS),
        sampling_rate=config.sampling_rate,
        task=config.task,
      ),
    )

  def _class_names(self) -> list[str]:
    # Fixed by the official statement table, whatever subset of records is built.
    official = source.official_class_names(SAMPLE_DIR / source.STATEMENTS_FILE)
    return official[self.builder_config.task]

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
    """As TFDS's, after checking the source choice before anything is written."""
    download_config = download_config or tfds.download.DownloadConfig()
    manual_dir = download_config.manual_dir
    if manual_dir is not None and self._download:
      raise ValueError("ptbxl: give either download=True or a manual_dir, not both")
    self._manual_dir = None
    if manual_dir is not None:
      self._manual_dir = _release_root(_checked_manual_dir(manual_dir))
    self._refuse_sample_in_place_of_full_data()
    super().download_and_prepare(
      download_dir=download_dir, download_config=download_config, **kwargs
    )

  def _refuse_sample_in_place_of_full_data(self) -> None:
    """TFDS reuses a prepared dataset as it is; the full data must not silently get the sample."""
    if not (self._download or self._manual_dir) or not self.data_path.exists():
      return
    if self.info.metadata.get("source") == _SOURCE_SAMPLE:
      raise ValueError(
        f"{self.data_path} holds ptbxl built from the bundled sample, but the full data was asked "
        "for: delete that folder or use another data_dir"
      )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if self._download:
      source_dir, source_name = _release_root(_download_release(dl_manager)), "physionet"
    elif self._manual_dir is not None:
      source_dir, source_name = self._manual_dir, "manual_dir"
    else:
      source_dir, source_name = SAMPLE_DIR, _SOURCE_SAMPLE
      records_folder = source.RATES[config.sampling_rate][0]
      if not (SAMPLE_DIR / records_folder).is_dir():
        raise source.PtbxlSourceError(
          f"{SAMPLE_DIR}: the bundled PTB-XL sample holds 100 Hz records only (no "
          f"{records_folder}/), so it cannot build {config.name}; pass "
          "tfds.download.DownloadConfig(manual_dir=...) with the full PTB-XL release"
        )
    _logger.info("ptbxl/%s: reading %s (%s)", config.name, source_dir, source_name)
    plan = source.plan_splits(source_dir, config.task, config.sampling_rate, self._class_names())
    for split, records in plan.records.items():
      _logger.info(
        "ptbxl/%s: %s has %d records; %d left out without a %s label",
        config.name,
        split,
        len(records),
        plan.excluded_without_label[split],
        config.task,
      )
      if not records:
        raise source.PtbxlSourceError(
          f"{source_dir / source.DATABASE_FILE}: no record with a {config.task} label in the "
          f"{split} split (strat_fold {source.SPLIT_FOLDS[split]})"
        )
    self.info.metadata["source"] = source_name
    self.info.metadata["excluded_without_label"] = plan.excluded_without_label
    return {split: self._generate_examples(records) for split, records in plan.records.items()}

  def _generate_examples(self, records: list[source.RecordPlan]):
    config = self.builder_config
    length = source.RATES[config.sampling_rate][2]
    # Read in this process: a record takes well under a millisecond to read (ecg_io's own header
    # parser), about what writing it takes, so worker processes would cost more than they save.
    started = time.monotonic()
    for count, plan in enumerate(records, start=1):
      example = {
        "ecg": _checked_signal(ecg_io.read_record(plan.path), config, length),
        "label": plan.label,
        "index": plan.index,
        "length": length,
        "strat_fold": plan.strat_fold,
        "age": plan.age,
        "sex": plan.sex,
        "ecg_id": plan.ecg_id,
        "patient_id": plan.patient_id,
      }
      yield plan.index, example
      if count % _PROGRESS_EVERY == 0 or count == len(records):
        rate = count / max(time.monotonic() - started, 1e-9)
        _logger.info(
          "ptbxl/%s: %d/%d records read (%.0f/s)", config.name, count, len(records), rate
        )


def _checked_signal(record: ecg_io.Record, config: PtbxlConfig, length: int) -> np.ndarray:
  """The record's signal as float32 [length, 12] in the standard lead order, or EcgReadError."""
  if record.fs != config.sampling_rate:
    raise ecg_io.EcgReadError(
      f"{record.path}: sampling rate {record.fs:g} Hz, but {config.name} reads "
      f"{config.sampling_rate} Hz records"
    )
  if sorted(record.lead_names) != sorted(ecg_io.STANDARD_LEADS):
    ignored = ecg_io.ignored_channels_note(record)
    raise ecg_io.EcgReadError(
      f"{record.path}: leads {', '.join(record.lead_names)} are not the 12 standard leads "
      f"{', '.join(ecg_io.STANDARD_LEADS)}" + (f" ({ignored})" if ignored else "")
    )
  if record.num_samples != length:
    raise ecg_io.EcgReadError(
      f"{record.path}: {record.num_samples} samples, but {config.name} expects {length}"
    )
  return ecg_io.select_leads(record, ecg_io.STANDARD_LEADS)


def _checked_manual_dir(manual_dir) -> pathlib.Path:
  path = pathlib.Path(os.fspath(manual_dir)).expanduser().resolve()
  if not path.is_dir():
    raise source.PtbxlSourceError(
      f"manual_dir {path} does not exist or is not a folder; it must hold {_LAYOUT}"
    )
  if not any(path.iterdir()):
    raise source.PtbxlSourceError(f"manual_dir {path} is empty; it must hold {_LAYOUT}")
  return path


def _release_root(path: pathlib.Path) -> pathlib.Path:
  """`path`, or its release subfolder when given the folder the zip was extracted into."""
  nested = path / _RELEASE_FOLDER
  if not (path / source.DATABASE_FILE).exists() and nested.is_dir():
    return nested
  return path


def _download_release(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  try:
    # TFDS retries an unreachable host with back-off for minutes; fail at once instead (unless a
    # proxy is configured, which a direct connection would bypass).
    if not urllib.request.getproxies():
      host = urllib.parse.urlparse(PHYSIONET_URL).hostname
      socket.create_connection((host, 443), timeout=_CONNECT_TIMEOUT_S).close()
    return pathlib.Path(os.fspath(dl_manager.download_and_extract(PHYSIONET_URL)))
  except Exception as error:
    raise source.PtbxlSourceError(
      f"downloading PTB-XL v1.0.3 from {PHYSIONET_URL} failed ({type(error).__name__}: {error}); "
      "without internet access, download and extract it elsewhere and pass "
      "tfds.download.DownloadConfig(manual_dir=<the folder holding ptbxl_database.csv>)"
    ) from error
