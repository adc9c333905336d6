"""Training-batch throughput of the input pipeline, in samples per second.

  python -m lead_kt.bench.pipeline_speed [--num_records=4000 --batch_size=128 --worker_count=0]
  python -m lead_kt.bench.pipeline_speed --dataset=ptbxl/superdiagnostic_100hz --data_dir=/tmp/tfds

By default it reads a synthetic PTB-XL-like dataset held in memory (100 Hz, 12 leads x 1000
samples, Gaussian noise), cut into 2.5 s crops (250 samples). It reports host batches (numpy,
what each process builds) and global batches assembled onto the local devices
(`jax.make_array_from_process_local_data`, waited for).
"""

import time

import jax
import numpy as np
from absl import app, flags

from lead_kt import input_pipeline

_DATASET = flags.DEFINE_string("dataset", "", "TFDS name; empty: the synthetic in-memory dataset")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data_dir")
_NUM_RECORDS = flags.DEFINE_integer("num_records", 4000, "synthetic training records")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "global batch size")
_CROP_LEN = flags.DEFINE_integer("crop_len", 250, "window length in samples")
_WORKER_COUNT = flags.DEFINE_integer("worker_count", 0, "grain worker processes")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "measuring time per mode")

_SYNTHETIC = "pipeline_speed_synthetic"
_RECORD_LEN = 1000
_NUM_CLASSES = 5


def synthetic_records(count: int, first: int = 0, length: int = _RECORD_LEN) -> list[dict]:
  rng = np.random.default_rng(first)
  return [
    {
      "ecg": rng.normal(size=(length, 12)).astype(np.float32),
      "label": (rng.random(_NUM_CLASSES) < 0.3).astype(np.float32),
      "index": i,
      "length": length,
      "strat_fold": 1,
      "ecg_id": first + i + 1,
    }
    for i in range(count)
  ]


def samples_per_second(batches, batch_size: int, seconds: float, finish=lambda batch: None):
  """Throughput of an iterator after two warm-up batches, measured for about `seconds`."""
  for _ in range(2):
    finish(next(batches))
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    finish(next(batches))
    count += 1
  return count * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  data_cfg = input_pipeline.default_data_config()
  data_cfg.crop_len = _CROP_LEN.value
  data_cfg.worker_count = _WORKER_COUNT.value
  data_cfg.student_leads = ("I",)
  if _DATASET.value:
    data_cfg.name, data_cfg.data_dir = _DATASET.value, _DATA_DIR.value
  else:
    data_cfg.name = _SYNTHETIC
    input_pipeline.register_memory_dataset(
      _SYNTHETIC,
      {
        "train": synthetic_records(_NUM_RECORDS.value),
        "validation": synthetic_records(8, first=_NUM_RECORDS.value),
        "test": synthetic_records(8, first=_NUM_RECORDS.value + 8),
      },
      class_names=[f"class{i}" for i in range(_NUM_CLASSES)],
      sampling_rate=100,
    )
  start = time.perf_counter()
  info = input_pipeline.dataset_info(data_cfg)
  normalizer = input_pipeline.fit_normalizer(
    input_pipeline.load_split(data_cfg, "train").chunks(), data_cfg.normalization
  )
  print(
    f"{info.name}: {info.split_sizes['train']} train records loaded and normalizer fitted "
    f"in {time.perf_counter() - start:.1f} s"
  )
  batch = _BATCH_SIZE.value
  host = input_pipeline.train_iterator(data_cfg, normalizer, batch, None, seed=0)
  host_rate = samples_per_second(host, batch, _SECONDS.value)
  host.close()
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  device = input_pipeline.train_iterator(data_cfg, normalizer, batch, sharding, seed=0)
  device_rate = samples_per_second(device, batch, _SECONDS.value, jax.block_until_ready)
  device.close()
  print(
    f"batch {batch}, crop {info.crop_len} x 12 leads, worker_count {data_cfg.worker_count}, "
    f"{jax.device_count()} {jax.default_backend()} device(s)\n"
    f"  host batches:   {host_rate:10,.0f} samples/s\n"
    f"  global batches: {device_rate:10,.0f} samples/s"
  )


if __name__ == "__main__":
  app.run(main)
