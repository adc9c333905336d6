"""What the builders that read a manual_dir (`icbeb2018`, `physionet2021`) share: array_record as
the default file format, the manual_dir remembered for `_split_generators`, and the features and
example fields every record has."""

import os

import numpy as np
import tensorflow_datasets as tfds

from lead_kt.ecg_io import STANDARD_LEADS


class ManualDirBuilder:
  """Mixin before tfds.core.GeneratorBasedBuilder: file_format defaults to array_record, and
  `self._manual_dir` holds download_config.manual_dir (a str, or None when none was given)."""

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


def record_features(
  ecg_length: int | None, class_count: int, **extra
) -> tfds.features.FeaturesDict:
  """The features of a stored record: `ecg` float32 [ecg_length, 12] (None: each record's own
  length), multi-hot `label` [class_count], `index`, `length`, `strat_fold`, `age`, `sex`,
  `record_id`; and `extra` (name -> feature)."""
  return tfds.features.FeaturesDict(
    {
      # Raw bytes: much faster to serialise than a proto float list (as in ptbxl).
      "ecg": tfds.features.Tensor(
        shape=(ecg_length, len(STANDARD_LEADS)),
        dtype=np.float32,
        encoding=tfds.features.Encoding.BYTES,
      ),
      "label": tfds.features.Tensor(
        shape=(class_count,), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
      ),
      "index": tfds.features.Scalar(dtype=np.int64),
      "length": tfds.features.Scalar(dtype=np.int32),
      "strat_fold": tfds.features.Scalar(dtype=np.int32),
      "age": tfds.features.Scalar(dtype=np.float32),
      "sex": tfds.features.Scalar(dtype=np.int32),
      "record_id": tfds.features.Text(),
      **extra,
    }
  )


def record_example(ecg, label, index: int, planned, record, **extra) -> dict:
  """An example of record_features: `planned` (the builder's PlannedRecord) gives the fold and the
  name (`record_id`), `record` (the ecg_io.Record read) the age and sex; and `extra`."""
  return {
    "ecg": ecg,
    "label": label,
    "index": index,
    "length": ecg.shape[0],
    "strat_fold": planned.fold,
    "age": record.meta["age"],
    "sex": record.meta["sex"],
    "record_id": planned.name,
    **extra,
  }
