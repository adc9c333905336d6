"""One tiny real training run shared by the predict, export and robustness tests.

`tiny_run()` trains the fcn_wang baseline (lead I) for one epoch on PTB-XL built from the bundled
sample (data_builders/ptbxl/sample) into a temporary directory, once per pytest process, and
returns the run directory. `ptbxl_test_records(run_dir)` gives the PTB-XL files of the run's test
split in index order (the order of predictions/test.npz).
"""

import atexit
import functools
import json
import os
import shutil
import tempfile

import ml_collections

from configs import default

SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "..", "data_builders", "ptbxl", "sample")


@functools.cache
def tiny_run() -> str:
  from lead_kt import train

  root = tempfile.mkdtemp(prefix="lead_kt_tiny_run_")
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  config = default.get_config()  # the baseline, 30 epochs' recipe, unaugmented
  config.data.data_dir = os.path.join(root, "tfds")
  config.student.backbone = "fcn_wang"
  config.num_epochs = 1
  config.checkpoint.async_save = False
  run_dir = os.path.join(root, "run")
  train.train_and_evaluate(config, run_dir)
  return run_dir


def run_config(run_dir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(run_dir, "results.json")) as results:
    return ml_collections.ConfigDict(json.load(results)["config"])


def ptbxl_test_records(run_dir: str) -> list[str]:
  """The bundled PTB-XL files (100 Hz, no extension) of the run's test split, in index order."""
  import pandas as pd

  from lead_kt.data import catalog

  split = catalog.open_source(run_config(run_dir).data).split("test")
  index_to_id = {int(e["index"]): int(e["ecg_id"]) for e in split.read(range(len(split)))}
  database = pd.read_csv(os.path.join(SAMPLE_DIR, "ptbxl_database.csv"), index_col="ecg_id")
  return [
    os.path.join(SAMPLE_DIR, database.loc[index_to_id[i], "filename_lr"])
    for i in range(len(index_to_id))
  ]
