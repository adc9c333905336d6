"""The input pipeline on in-memory datasets whose samples say where they come from, and on PTB-XL.

Sample (t, lead) of record r holds r * 30000 + lead * 2000 + t, so a batch value names its record,
lead and time step exactly (float32 holds these integers exactly).
"""

import json
import pickle

import jax
import numpy as np
import pytest

from lead_kt import input_pipeline as ip
from lead_kt.data.windows import sliding_windows
from lead_kt.ecg_io import STANDARD_LEADS

NUM_CLASSES = 4
IDENTITY = ip.Normalizer("global", np.zeros(1, np.float32), np.ones(1, np.float32))


def coded_records(lengths, folds, first_id=0):
  """Stored-format records numbered first_id, first_id + 1, ... (their ecg_id - 1)."""
  records = []
  for i, (length, fold) in enumerate(zip(lengths, folds, strict=True)):
    record_id = first_id + i
    time, lead = np.arange(length)[:, None], np.arange(12)[None, :]
    label = np.zeros(NUM_CLASSES, np.float32)
    label[record_id % NUM_CLASSES] = 1
    if record_id % 7 == 0:
      label[:] = 0  # some records without any class
    records.append(
      {
        "ecg": (record_id * 30000 + lead * 2000 + time).astype(np.float32),
        "label": label,
        "index": i,
        "length": length,
        "strat_fold": fold,
        "ecg_id": record_id + 1,
      }
    )
  return records


def decode(values):
  """(record id, lead, time) of coded sample values."""
  values = np.rint(values).astype(np.int64)
  return values // 30000, values % 30000 // 2000, values % 2000


def register(name, train_lengths, validation_lengths, test_lengths, **overrides):
  """Registers a coded dataset (train folds 1..8, validation 9, test 10); returns its config."""
  train = coded_records(train_lengths, [1 + i % 8 for i in range(len(train_lengths))])
  validation = coded_records(validation_lengths, [9] * len(validation_lengths), len(train))
  test = coded_records(test_lengths, [10] * len(test_lengths), len(train) + len(validation))
  ip.register_memory_dataset(
    name,
    {"train": train, "validation": validation, "test": test},
    class_names=[f"c{i}" for i in range(NUM_CLASSES)],
    sampling_rate=100,
  )
  cfg = ip.default_data_config()
  cfg.name, cfg.crop_len = name, 50
  cfg.update(overrides)
  return cfg


@pytest.fixture
def fixed_cfg():
  """60 / 10 / 11 records of 120 samples."""
  return register("fixed", [120] * 60, [120] * 10, [120] * 11)


@pytest.fixture
def varying_cfg():
  """Records of 30..199 samples (some shorter than the 50-sample crop)."""
  rng = np.random.default_rng(1)
  return register(
    "varying", rng.integers(30, 200, 40), rng.integers(30, 200, 9), rng.integers(30, 200, 13)
  )


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_dataset_info_and_lead_selection(fixed_cfg):
  fixed_cfg.student_leads = ("v5", "ii", "AVR")
  info = ip.dataset_info(fixed_cfg)
  assert info.student_leads == ("V5", "II", "aVR")
  assert info.teacher_leads == STANDARD_LEADS
  assert info.split_sizes == {"train": 60, "validation": 10, "test": 11}
  assert (info.num_classes, info.sampling_rate, info.crop_len, info.eval_stride) == (4, 100, 50, 25)
  batch = next(ip.train_iterator(fixed_cfg, IDENTITY, 8, None, seed=0))
  _, student_leads, _ = decode(batch["student"])
  assert (student_leads == np.array([10, 1, 3])).all()
  np.testing.assert_array_equal(batch["student"], batch["teacher"][..., [10, 1, 3]])


def test_train_batches_are_random_windows_inside_records(fixed_cfg):
  iterator = ip.train_iterator(fixed_cfg, IDENTITY, 12, None, seed=3)
  starts = []
  for batch in take(iterator, 10):
    assert batch["teacher"].shape == (12, 50, 12) and batch["teacher"].dtype == np.float32
    assert batch["student"].shape == (12, 50, 1)
    assert batch["index"].dtype == np.int32 and (batch["mask"] == 1).all()
    record, lead, time = decode(batch["teacher"])
    assert (record == batch["index"][:, None, None]).all()
    assert (lead == np.arange(12)).all()
    assert (np.diff(time, axis=1) == 1).all()  # contiguous
    assert (time[:, 0] >= 0).all() and (time[:, -1] < 120).all()  # inside the record
    starts.extend(time[:, 0, 0])
    labels = np.stack([coded_records([1], [1], int(i))[0]["label"] for i in batch["index"]])
    np.testing.assert_array_equal(batch["label"], labels)
  assert len(set(starts)) > 20  # random, not a fixed offset


def test_epochs_reshuffle_and_cover_each_record_once(fixed_cfg):
  iterator = ip.train_iterator(fixed_cfg, IDENTITY, 16, None, seed=0)
  assert iterator.steps_per_epoch == 3  # 60 // 16, remainder dropped
  epochs = []
  for epoch in range(2):
    assert iterator.epoch == epoch
    batches = take(iterator, 3)
    epochs.append(np.concatenate([b["index"] for b in batches]))
    assert len(set(epochs[-1])) == 48
  assert iterator.epoch == 2
  assert not np.array_equal(epochs[0], epochs[1])
  other_seed = ip.train_iterator(fixed_cfg, IDENTITY, 16, None, seed=1)
  assert not np.array_equal(next(other_seed)["index"], epochs[0][:16])


def test_crop_depends_on_seed_epoch_and_record_only(fixed_cfg):
  def crop_starts(batch_size):
    """Record -> window start in the first epoch."""
    iterator = ip.train_iterator(fixed_cfg, IDENTITY, batch_size, None, seed=5)
    batches = take(iterator, iterator.steps_per_epoch)
    return {
      int(i): int(decode(b["teacher"][j, 0, 0])[2])
      for b in batches
      for j, i in enumerate(b["index"])
    }

  small, large = crop_starts(4), crop_starts(20)
  assert all(small[record] == start for record, start in large.items())


def test_exact_resume(fixed_cfg):
  iterator = ip.train_iterator(fixed_cfg, IDENTITY, 16, None, seed=2)
  take(iterator, 2)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 5)  # crosses into the next epochs
  restored = ip.train_iterator(fixed_cfg, IDENTITY, 16, None, seed=2)
  restored.set_state(state)
  assert_batches_equal(take(restored, 5), expected)
  assert restored.epoch == iterator.epoch == 2
  with pytest.raises(ValueError, match="seed"):
    ip.train_iterator(fixed_cfg, IDENTITY, 16, None, seed=9).set_state(state)


def test_short_records_are_zero_padded_after_normalisation(varying_cfg):
  normalizer = ip.Normalizer(
    "per_lead", np.arange(12, dtype=np.float32), np.full(12, 2, np.float32)
  )
  iterator = ip.train_iterator(varying_cfg, normalizer, 8, None, seed=0)
  lengths = ip.load_split(varying_cfg, "train").lengths
  padded = 0
  for batch in take(iterator, 10):
    raw = batch["teacher"] * normalizer.std + normalizer.mean
    for example, record in zip(raw, batch["index"], strict=True):
      valid = min(lengths[record], 50)
      _, _, time = decode(example[:valid])
      assert (np.diff(time, axis=0) == 1).all() and time[-1, 0] < lengths[record]
      normalized_tail = (example[valid:] - normalizer.mean) / normalizer.std
      np.testing.assert_array_equal(normalized_tail, 0)
      padded += valid < 50
  assert padded > 0


def test_pad_short_false_skips_short_records_in_training(varying_cfg):
  varying_cfg.pad_short = False
  lengths = ip.load_split(varying_cfg, "train").lengths
  iterator = ip.train_iterator(varying_cfg, IDENTITY, 4, None, seed=0)
  assert iterator.steps_per_epoch == int((lengths >= 50).sum()) // 4
  seen = np.concatenate([b["index"] for b in take(iterator, iterator.steps_per_epoch)])
  assert (lengths[seen] >= 50).all()


def test_normalizer_is_fitted_on_train_only(fixed_cfg, tmp_path):
  train = np.stack([r["ecg"] for r in coded_records([120] * 60, [1] * 60)]).astype(np.float64)
  path = tmp_path / "run" / "normalizer.json"
  fitted = ip.load_or_fit_normalizer(fixed_cfg, str(path))
  np.testing.assert_allclose(fitted.mean, [train.mean()], rtol=1e-6)
  np.testing.assert_allclose(fitted.std, [train.std()], rtol=1e-6)
  assert json.loads(path.read_text())["kind"] == "global"
  reloaded = ip.load_or_fit_normalizer(fixed_cfg, str(path))
  np.testing.assert_array_equal(reloaded.std, fitted.std)
  fixed_cfg.normalization = "per_lead"
  with pytest.raises(ValueError, match="global"):
    ip.load_or_fit_normalizer(fixed_cfg, str(path))
  per_lead = ip.load_or_fit_normalizer(fixed_cfg, str(tmp_path / "per_lead.json"))
  np.testing.assert_allclose(per_lead.mean, train.mean(axis=(0, 1)), rtol=1e-6)
  np.testing.assert_allclose(per_lead.std, train.std(axis=(0, 1)), rtol=1e-6)
  x = np.random.default_rng(0).normal(size=(2, 5, 12)).astype(np.float32)
  np.testing.assert_allclose(per_lead.apply(x), (x - per_lead.mean) / per_lead.std, rtol=1e-5)


def test_fit_normalizer_does_not_depend_on_chunking():
  data = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 12))
  whole = ip.fit_normalizer([data], "per_lead")
  pieces = ip.fit_normalizer(np.array_split(data, [1, 10, 400]), "per_lead")
  np.testing.assert_allclose(pieces.mean, whole.mean, rtol=1e-6)
  np.testing.assert_allclose(pieces.std, whole.std, rtol=1e-6)
  np.testing.assert_allclose(whole.std, data.std(axis=0), rtol=1e-6)


def test_sliding_windows_cover_each_record_with_last_window_at_the_end():
  records, starts = sliding_windows(np.array([120, 50, 30, 101]), crop_len=50, stride=25)
  by_record = [starts[records == r].tolist() for r in range(4)]
  assert by_record == [[0, 25, 50, 70], [0], [0], [0, 25, 50, 51]]


def collect_eval(cfg, split, batch_size, process_count):
  """Every process's batches, per process."""
  return [
    list(ip.eval_batches(cfg, split, IDENTITY, batch_size, None, process, process_count))
    for process in range(process_count)
  ]


@pytest.mark.parametrize("process_count", [1, 3])
def test_evaluation_sees_every_window_once(varying_cfg, process_count):
  lengths = ip.load_split(varying_cfg, "test").lengths
  records, starts = sliding_windows(lengths, 50, 25)
  per_process = collect_eval(varying_cfg, "test", 12, process_count)
  assert len({len(batches) for batches in per_process}) == 1  # same number of steps everywhere
  first_id = 49  # coded id of test record 0 (after 40 train and 9 validation records)
  seen = []
  for batches in per_process:
    for batch in batches:
      assert batch["teacher"].shape == (12 // process_count, 50, 12)
      np.testing.assert_array_equal(batch["record"], batch["index"])
      real = batch["mask"] == 1
      coded_id, _, time = decode(batch["teacher"][real, 0, 0])
      np.testing.assert_array_equal(coded_id, first_id + batch["record"][real])
      seen.extend(zip(batch["record"][real].tolist(), time.tolist(), strict=True))
      labels = ip.split_labels(varying_cfg, "test")[batch["record"]]
      np.testing.assert_array_equal(batch["label"], labels)
  assert sorted(seen) == sorted(zip(records.tolist(), starts.tolist(), strict=True))
  padding = sum((b["mask"] == 0).sum() for batches in per_process for b in batches)
  assert padding == -len(records) % 12


def test_aggregate_windows_max_and_mean():
  outputs = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3], [9.0, 9.0]], np.float32)
  record = np.array([0, 0, 1, 0])
  mask = np.array([1, 1, 1, 0])
  np.testing.assert_allclose(
    ip.aggregate_windows(outputs, record, mask, 2, "max"), [[0.5, 0.9], [0.3, 0.3]]
  )
  np.testing.assert_allclose(
    ip.aggregate_windows(outputs, record, mask, 2, "mean"), [[0.3, 0.55], [0.3, 0.3]]
  )
  with pytest.raises(ValueError, match="no window"):
    ip.aggregate_windows(outputs, record, mask, 3)


def test_eval_outputs_aggregate_to_records(fixed_cfg):
  """A fake model (the window's mean raw value) aggregated back: one row per test record."""
  outputs, records, masks = [], [], []
  for batch in ip.eval_batches(fixed_cfg, "test", IDENTITY, 8, None):
    outputs.append(batch["teacher"][:, :, :1].mean(axis=1))
    records.append(batch["record"])
    masks.append(batch["mask"])
  per_record = ip.aggregate_windows(
    np.concatenate(outputs), np.concatenate(records), np.concatenate(masks), 11, "max"
  )
  record_ids, _, time = decode(per_record[:, 0] - 24.5)  # the mean time of the last window
  np.testing.assert_array_equal(record_ids, 70 + np.arange(11))
  np.testing.assert_array_equal(time, 70)


def test_split_labels_and_first_labels(fixed_cfg):
  labels = ip.split_labels(fixed_cfg, "validation")
  assert labels.shape == (10, NUM_CLASSES)
  first = ip.split_first_labels(fixed_cfg, "validation")
  expected = [-1 if (60 + i) % 7 == 0 else (60 + i) % NUM_CLASSES for i in range(10)]
  np.testing.assert_array_equal(first, expected)
  assert first.dtype == np.int32


def evaluated_records(cfg, split):
  """(coded record id, record) of every real evaluation window."""
  batches = list(ip.eval_batches(cfg, split, IDENTITY, 4, None))
  real = np.concatenate([b["mask"] for b in batches]) == 1
  coded_ids = np.concatenate([decode(b["teacher"][:, 0, 0])[0] for b in batches])
  return coded_ids[real], np.concatenate([b["record"] for b in batches])[real]


def test_cross_validation_folds(fixed_cfg):
  fixed_cfg.cv_test_fold = 9  # test: fold 9 (the stored validation split), validation: fold 10
  info = ip.dataset_info(fixed_cfg)
  assert info.split_sizes == {"train": 60, "validation": 11, "test": 10}
  coded_ids, records = evaluated_records(fixed_cfg, "test")
  np.testing.assert_array_equal(coded_ids, 60 + records)
  np.testing.assert_array_equal(np.unique(records), np.arange(10))
  fixed_cfg.cv_test_fold = 3  # test: train's fold 3, validation: fold 4
  sizes = ip.dataset_info(fixed_cfg).split_sizes
  assert sizes == {"train": 60 - 16 + 21, "validation": 8, "test": 8}
  coded_ids, records = evaluated_records(fixed_cfg, "test")
  np.testing.assert_array_equal(coded_ids, np.arange(2, 60, 8)[records])  # fold 3, record order
  train_records = {
    int(i): int(decode(b["teacher"][j, 0, 0])[0])
    for b in take(ip.train_iterator(fixed_cfg, IDENTITY, 5, None, 0), 13)
    for j, i in enumerate(b["index"])
  }
  assert sorted(train_records) == list(range(65))  # index re-densified
  assert list(dict(sorted(train_records.items())).values()) == sorted(train_records.values())
  assert not {2, 3} & {r % 8 for r in train_records.values() if r < 60}


def test_global_batches_are_sharded_jax_arrays(fixed_cfg):
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = next(ip.train_iterator(fixed_cfg, IDENTITY, 8, sharding, seed=0))
  host = next(ip.train_iterator(fixed_cfg, IDENTITY, 8, None, seed=0))
  for key, value in batch.items():
    assert isinstance(value, jax.Array) and value.sharding == sharding
    np.testing.assert_array_equal(np.asarray(value), host[key])


def test_processes_split_each_global_batch(fixed_cfg):
  whole = take(ip.TrainIterator(fixed_cfg, IDENTITY, 12, None, 7), 6)
  shares = [take(ip.TrainIterator(fixed_cfg, IDENTITY, 12, None, 7, p, 3), 6) for p in range(3)]
  joined = [
    {key: np.concatenate([share[step][key] for share in shares]) for key in whole[0]}
    for step in range(6)
  ]
  assert_batches_equal(joined, whole)


@pytest.mark.parametrize(
  ("change", "message"),
  [
    ({"student_leads": ("V7",)}, "available leads: I, II, III, aVR"),
    ({"crop_len": 500, "pad_short": False}, "longer than every record"),
    ({"normalization": "minmax"}, "normalization"),
    ({"cv_test_fold": 11}, "cv_test_fold"),
    ({"eval_stride": 60}, "gaps"),
  ],
)
def test_bad_config_fails_before_training(fixed_cfg, change, message):
  fixed_cfg.update(change)
  with pytest.raises(ValueError, match=message):
    ip.dataset_info(fixed_cfg)
  with pytest.raises(ValueError, match=message):
    ip.train_iterator(fixed_cfg, IDENTITY, 8, None, seed=0)


def test_bad_split_batch_size_and_dataset_fail_at_the_call(fixed_cfg):
  with pytest.raises(ValueError, match="no split 'dev'.*train, validation, test"):
    ip.eval_batches(fixed_cfg, "dev", IDENTITY, 8, None)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    ip.train_iterator(fixed_cfg, IDENTITY, 64, None, seed=0)
  with pytest.raises(ValueError, match="multiple of the process count"):
    ip.eval_batches(fixed_cfg, "test", IDENTITY, 8, None, 0, 3)
  empty_cfg = register("empty_test", [120] * 20, [120] * 3, [])
  with pytest.raises(ValueError, match="'test'.*empty"):
    ip.dataset_info(empty_cfg)
  fixed_cfg.name = "no_such_dataset_xyz"
  with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
    ip.dataset_info(fixed_cfg)


@pytest.fixture(scope="session")
def ptbxl_cfg(tmp_path_factory):
  """PTB-XL superdiagnostic at 100 Hz, built from the bundled sample into a temporary data_dir."""
  cfg = ip.default_data_config()
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  ip.ensure_built(cfg)
  return cfg


def test_ptbxl_end_to_end(ptbxl_cfg, tmp_path):
  import tensorflow_datasets as tfds

  info = ip.dataset_info(ptbxl_cfg)
  assert info.class_names == ("CD", "HYP", "MI", "NORM", "STTC") and info.sampling_rate == 100
  assert info.crop_len == 250 and min(info.split_sizes.values()) > 0
  normalizer = ip.load_or_fit_normalizer(ptbxl_cfg, str(tmp_path / "normalizer.json"))
  assert 0.01 < normalizer.std[0] < 10  # millivolts
  batch = next(ip.train_iterator(ptbxl_cfg, normalizer, 16, None, seed=0))
  np.testing.assert_array_equal(batch["label"], ip.split_labels(ptbxl_cfg, "train")[batch["index"]])
  # The teacher view is a normalised 250-sample window of the stored record with that index.
  stored = tfds.builder(ptbxl_cfg.name, data_dir=ptbxl_cfg.data_dir).as_data_source("train")
  by_index = {int(example["index"]): example["ecg"] for example in stored}
  ecg = normalizer.apply(by_index[int(batch["index"][0])])
  windows = np.lib.stride_tricks.sliding_window_view(ecg, 250, axis=0).transpose(0, 2, 1)
  assert np.isclose(windows, batch["teacher"][0], atol=1e-5).all(axis=(1, 2)).sum() >= 1
  np.testing.assert_array_equal(batch["student"][..., 0], batch["teacher"][..., 0])
  # Evaluation: 7 windows (stride 125) per 1000-sample record, aggregated back to records.
  outputs, records, masks = [], [], []
  for eval_batch in ip.eval_batches(ptbxl_cfg, "validation", normalizer, 32, None):
    outputs.append(eval_batch["teacher"].mean(axis=(1, 2))[:, None])
    records.append(eval_batch["record"])
    masks.append(eval_batch["mask"])
  num_records = info.split_sizes["validation"]
  assert np.concatenate(masks).sum() == 7 * num_records
  per_record = ip.aggregate_windows(
    np.concatenate(outputs), np.concatenate(records), np.concatenate(masks), num_records, "mean"
  )
  assert per_record.shape == (num_records, 1) and np.isfinite(per_record).all()


def test_ptbxl_streamed_reads_equal_in_memory_reads(ptbxl_cfg):
  in_memory = ip.load_split(ptbxl_cfg, "test")
  streamed_cfg = ptbxl_cfg.copy_and_resolve_references()
  streamed_cfg.worker_count = 1
  # What a grain worker gets: the split pickled, re-opening the array_record files itself.
  streamed = pickle.loads(pickle.dumps(ip.load_split(streamed_cfg, "test")))
  records = np.array([3, 0, len(in_memory) - 1])
  offsets = np.array([0, 750, 10])
  for first, second in zip(
    in_memory.crops(records, offsets, 250), streamed.crops(records, offsets, 250), strict=True
  ):
    np.testing.assert_array_equal(first, second)
