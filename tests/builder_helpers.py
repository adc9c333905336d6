"""Building a manual_dir TFDS builder (icbeb2018, physionet2021) in a test and reading it back."""

import os

import tensorflow_datasets as tfds


def build(builder_class, manual_dir, data_dir, config="500hz"):
  """Builds `config` of builder_class from manual_dir (None: none given) into data_dir; returns the
  builder."""
  builder = builder_class(config=config, data_dir=str(data_dir))
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir and str(manual_dir))
  builder.download_and_prepare(download_config=download_config)
  return builder


def examples(builder):
  """{record name: example with its split added} over all splits; checks that position i of a
  split holds `index` i."""
  found = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    for position in range(len(source)):
      example = dict(source[position], split=split)
      assert example["index"] == position
      found[example["record_id"].decode()] = example
  return found


def assert_no_dataset(data_dir):
  """Nothing of a dataset (no array_record file, no dataset_info.json) was written in data_dir."""
  written = [name for _, _, files in os.walk(data_dir) for name in files]
  assert not [name for name in written if "array_record" in name or name == "dataset_info.json"]
