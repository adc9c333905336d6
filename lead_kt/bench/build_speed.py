"""Build speed of the TFDS dataset builders, in records per second.

  python -m lead_kt.bench.build_speed [--records=N] [--cpsc_dir=/path/to/cpsc2018/original_mat]

Builds ptbxl/superdiagnostic_100hz into a temporary data_dir, from the bundled 400-record sample
(default) or, with --records=N, from a temporary PTB-XL folder of N records that repeats the
sample's rows under new ecg_ids (symlinked record files, a SHA256SUMS.txt covering all of them, so
checksum verification costs what it would on the full data). Prints records/s and the time it
projects for the full PTB-XL at 100 Hz (21,799 records), fixed costs included. Then builds
icbeb2018/500hz from --cpsc_dir when that folder and the icbeb2018 builder exist.
"""

import hashlib
import os
import pathlib
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from absl import app, flags

import data_builders  # noqa: F401  (registers the builders)
from data_builders.ptbxl import SAMPLE_DIR
from lead_kt import ecg_io

_RECORDS = flags.DEFINE_integer(
  "records", 0, "PTB-XL records to build; 0: the bundled sample as it is (400)"
)
_CPSC_DIR = flags.DEFINE_string(
  "cpsc_dir",
  str(pathlib.Path(data_builders.__file__).parent / "icbeb2018" / "dummy_data" / "original_mat"),
  "manual_dir for icbeb2018/500hz (default: the builder's 10 real test records); skipped when "
  "missing",
)

FULL_PTBXL_RECORDS = 21_799
_PTBXL_CONFIG = "ptbxl/superdiagnostic_100hz"
_ICBEB_CONFIG = "icbeb2018/500hz"


def repeated_sample(folder: pathlib.Path, count: int) -> pathlib.Path:
  """Writes a PTB-XL folder of `count` records repeating the bundled sample; returns it."""
  sample = pd.read_csv(SAMPLE_DIR / "ptbxl_database.csv")
  database = sample.iloc[np.arange(count) % len(sample)].reset_index(drop=True)
  copy_folders = [f"records100/copy{i // len(sample):03d}" for i in range(count)]
  names = [pathlib.PurePosixPath(path).name for path in database["filename_lr"]]
  digests, checksum_lines = {}, []
  for original_name, copy_folder, name in zip(
    database["filename_lr"], copy_folders, names, strict=True
  ):
    for extension in (".hea", ".dat"):
      original = SAMPLE_DIR / (original_name + extension)
      link = folder / copy_folder / (name + extension)
      link.parent.mkdir(parents=True, exist_ok=True)
      link.symlink_to(original)
      if original not in digests:
        digests[original] = hashlib.sha256(original.read_bytes()).hexdigest()
      checksum_lines.append(f"{digests[original]}  {copy_folder}/{name}{extension}\n")
  database["ecg_id"] = np.arange(1, count + 1)
  database["filename_lr"] = [
    f"{copy_folder}/{name}" for copy_folder, name in zip(copy_folders, names, strict=True)
  ]
  database.to_csv(folder / "ptbxl_database.csv", index=False)
  os.symlink(SAMPLE_DIR / "scp_statements.csv", folder / "scp_statements.csv")
  (folder / "SHA256SUMS.txt").write_text("".join(checksum_lines))
  return folder


def timed_build(name: str, data_dir: str, manual_dir=None) -> tuple[float, dict[str, int]]:
  """Builds `name` into data_dir; returns (seconds, examples per split)."""
  builder = tfds.builder(name, data_dir=data_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  started = time.perf_counter()
  builder.download_and_prepare(download_config=download_config)
  seconds = time.perf_counter() - started
  return seconds, {split: info.num_examples for split, info in builder.info.splits.items()}


def main(argv):
  del argv
  warnings.simplefilter("ignore")  # wfdb's pandas calls; TFDS deprecations.
  print(f"CPUs available: {ecg_io.available_cpus()}")
  with tempfile.TemporaryDirectory() as scratch:
    scratch = pathlib.Path(scratch)
    if _RECORDS.value:
      manual_dir, count = repeated_sample(scratch / "ptbxl", _RECORDS.value), _RECORDS.value
    else:
      manual_dir, count = None, len(pd.read_csv(SAMPLE_DIR / "ptbxl_database.csv"))
    seconds, sizes = timed_build(_PTBXL_CONFIG, str(scratch / "tfds"), manual_dir)
    rate = count / seconds
    print(
      f"{_PTBXL_CONFIG}: {count} records in {seconds:.1f} s = {rate:.0f} records/s; splits {sizes}"
    )
    print(
      f"projected full PTB-XL at 100 Hz ({FULL_PTBXL_RECORDS} records): "
      f"{FULL_PTBXL_RECORDS / rate:.0f} s"
    )
    if not os.path.isdir(_CPSC_DIR.value):
      print(f"{_ICBEB_CONFIG}: skipped ({_CPSC_DIR.value} is missing)")
      return
    if _ICBEB_CONFIG.split("/")[0] not in tfds.list_builders(with_community_datasets=False):
      print(f"{_ICBEB_CONFIG}: skipped (no icbeb2018 builder)")
      return
    seconds, sizes = timed_build(_ICBEB_CONFIG, str(scratch / "tfds"), _CPSC_DIR.value)
    count = sum(sizes.values())
    print(
      f"{_ICBEB_CONFIG} from {_CPSC_DIR.value}: {count} records written in {seconds:.1f} s = "
      f"{count / seconds:.1f} records/s; splits {sizes}"
    )


if __name__ == "__main__":
  app.run(main)
