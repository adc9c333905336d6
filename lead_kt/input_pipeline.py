"""The input pipeline: TFDS ECG datasets (array_record, no TensorFlow) -> sharded global batches.

Config (`data`, an ml_collections.ConfigDict; `default_data_config()` lists every field):
  name, data_dir, manual_dir     the TFDS dataset and where it lives (built on first use; process 0
                                 builds, the others wait, so multi-host needs a shared data_dir)
  student_leads                  the student's leads by name, any capitalisation, order kept
  crop_len, pad_short            window length in samples (0 = whole record); records shorter than
                                 the window are zero-padded at the end (after normalisation). With
                                 pad_short=False training skips them (evaluation still pads them, so
                                 every record is scored)
  normalization                  "global" or "per_lead", fitted on the train split only; "none"
  preprocessing                  "" or a named contract applied to each record as it is read
                                 (data.preprocessing: "ecgfounder", the filter and per-record
                                 z-score that ECGFounder's weights expect; 500 Hz datasets,
                                 normalization "none")
  eval_stride, eval_aggregate    sliding evaluation windows (0 = crop_len // 2), "max" or "mean"
  worker_count                   0: splits are decoded once into host memory and batches are cut
                                 with numpy (fastest; RAM ~ the dataset's decoded size); > 0: that
                                 many grain worker processes read and decode records per batch
  cv_test_fold                   0: official splits; k in 1..10: test = fold k, validation =
                                 fold k % 10 + 1, train = the rest

Batches follow `lead_kt.methods.base` (`teacher`, `student`, `label`, `index`, `mask`; evaluation
adds `record`). Module map: data.catalog (sources), data.splits (checks, split loading),
data.normalization, data.preprocessing (named record contracts), data.windows (crop and window
positions), data.batching, data.train, data.evaluation.
"""

import ml_collections

from lead_kt.data.catalog import ensure_built, register_memory_dataset
from lead_kt.data.evaluation import eval_batches, split_first_labels, split_labels
from lead_kt.data.normalization import Normalizer, fit_normalizer, load_or_fit_normalizer
from lead_kt.data.splits import DatasetInfo, dataset_info, load_split
from lead_kt.data.train import TrainIterator, train_iterator
from lead_kt.data.windows import aggregate_windows

__all__ = [
  "DatasetInfo",
  "Normalizer",
  "TrainIterator",
  "aggregate_windows",
  "dataset_info",
  "default_data_config",
  "ensure_built",
  "eval_batches",
  "fit_normalizer",
  "load_or_fit_normalizer",
  "load_split",
  "register_memory_dataset",
  "split_first_labels",
  "split_labels",
  "train_iterator",
]


def default_data_config() -> ml_collections.ConfigDict:
  """The `data` config with its defaults (PTB-XL superdiagnostic at 100 Hz, lead I, 2.5 s)."""
  return ml_collections.ConfigDict(
    {
      "name": "ptbxl/superdiagnostic_100hz",
      "data_dir": "~/tensorflow_datasets",
      "manual_dir": "",
      "student_leads": ("I",),
      "crop_len": 250,
      "pad_short": True,
      "normalization": "global",
      "preprocessing": "",
      "eval_stride": 0,
      "eval_aggregate": "max",
      "worker_count": 0,
      "cv_test_fold": 0,
    }
  )
