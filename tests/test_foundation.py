"""A foundation model as the teacher: a net1d (ECGFounder's network) converted from PyTorch with a
new head, fine-tuned from its weights (student.init_from / teacher.init_from), teaching a fcn_wang
student with MVKT; the linear probe (freeze_backbone).

The network is a narrow net1d (two stages of one block: the released 30.7M-parameter one would
take minutes per step on two cores) built by the same code, layout and loader as the released one,
with its options passed to convert. The bundled PTB-XL sample is stored at 100 Hz; ECGFounder's
contract needs 500 Hz, so a few of its records are resampled to 500 Hz (polyphase) and registered
as an in-memory dataset: the records are real, their rate is upsampled."""

import json
import pathlib
import types

import flax
import jax
import ml_collections
import numpy as np
import pytest
from train_helpers import build_method, tiny_config

from lead_kt import (
  convert,
  ecg_io,
  input_pipeline,
  interop,
  optim,
  predict,
  pretrained,
  sharding,
  train,
)
from lead_kt.data import catalog

torch = pytest.importorskip("torch")
torch_twins = pytest.importorskip("lead_kt.interop.torch_twins")

CLASSES = ("CD", "HYP", "MI", "NORM", "STTC")
RELEASED_CLASSES = 150  # ECGFounder's head
# A narrow net1d: same blocks, stem and head as the released network, two stages of one block.
SMALL = {"base_filters": 16, "filters": [16, 32], "blocks": [1, 1], "kernel_size": 8}
TWIN_SMALL = {"base_filters": 16, "filters": (16, 32), "blocks": (1, 1), "kernel": 8}
DATASET = "ptbxl_sample_500hz"
# Few records: the contract's filters cost about 0.1 s per record on a busy core.
SPLIT_RECORDS = {"train": 32, "validation": 8, "test": 8}
CROP = 1250  # 2.5 s at 500 Hz
SAMPLE = pathlib.Path(__file__).parents[1] / "data_builders" / "ptbxl" / "sample" / "records100"


@pytest.fixture(scope="module")
def sample_500hz(tmp_path_factory) -> str:
  """Registers DATASET: the first records of each split of the bundled PTB-XL sample (built with
  its TFDS builder), resampled from 100 to 500 Hz."""
  data_cfg = input_pipeline.default_data_config()
  data_cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  source = catalog.open_source(data_cfg)
  splits = {}
  for name, count in SPLIT_RECORDS.items():
    examples = source.split(name).read(range(count))
    splits[name] = [
      {**e, "ecg": ecg_io.resample(e["ecg"], 100, 500), "length": 5 * int(e["length"]), "index": i}
      for i, e in enumerate(examples)
    ]
  input_pipeline.register_memory_dataset(DATASET, splits, source.info.class_names, 500)
  assert tuple(source.info.class_names) == CLASSES
  return data_cfg.data_dir


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory):
  """A narrow net1d twin with ECGFounder's 150-class head, saved as its checkpoints are (the
  state_dict under "state_dict")."""
  torch.manual_seed(0)
  twin = torch_twins.Net1D(12, RELEASED_CLASSES, **TWIN_SMALL).eval()
  path = tmp_path_factory.mktemp("torch") / "net1d.pth"
  torch.save({"state_dict": twin.state_dict(), "epoch": 3}, path)
  return path, twin.state_dict()


def convert_twin(path, out, class_names) -> pathlib.Path:
  argv = [
    "--from-torch", str(path), "--backbone", "net1d", "--backbone-kwargs", json.dumps(SMALL),
    "--class-names", ",".join(class_names), "--sampling-rate", "500",
    "--preprocessing", "ecgfounder", "--head-seed", "0",
    "--dataset", "ptbxl/superdiagnostic_500hz", "--out", str(out),
  ]  # fmt: skip
  assert convert.main(argv) == 0
  return out


@pytest.fixture(scope="module")
def converted(twin_file, tmp_path_factory) -> pathlib.Path:
  return convert_twin(twin_file[0], tmp_path_factory.mktemp("runs") / "converted", CLASSES)


def net1d_teacher_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  config = tiny_config("teacher", data_dir, **overrides)
  config.student.backbone = config.teacher.backbone = "net1d"
  config.student.kwargs = ml_collections.ConfigDict(SMALL)
  config.data.update(name=DATASET, crop_len=CROP, preprocessing="ecgfounder", normalization="none")
  return config


def initial_state(config, num_classes: int, batch: int = 4):
  """The trainer's fresh state for ``config`` and a zero batch of its shapes."""
  method = build_method(config, num_classes)
  tx, schedule = optim.create(config.optimizer, 10, 1)
  example = {
    "teacher": np.zeros((batch, CROP, 12), np.float32),
    "student": np.zeros((batch, CROP, 1), np.float32),
    "label": np.zeros((batch, num_classes), np.float32),
    "index": np.arange(batch, dtype=np.int32),
    "mask": np.ones(batch, np.float32),
  }
  return method, train._init_state(method, tx, example, jax.random.key(0)), example


def flat(tree) -> dict:
  return flax.traverse_util.flatten_dict(jax.device_get(tree))


def test_the_converted_run_records_the_contract_and_the_new_head(converted):
  results = json.loads((converted / "results.json").read_text())
  assert results["config"]["data"]["preprocessing"] == "ecgfounder"
  assert results["config"]["data"]["normalization"] == "none"
  assert results["config"]["student"]["kwargs"] == SMALL
  assert (results["sampling_rate"], results["crop_len"]) == (500, 5000)
  assert results["converted_from"]["head"].startswith("new for 5 classes (seed 0)")
  assert json.loads((converted / "normalization.json").read_text())["kind"] == "none"


def test_init_from_loads_the_converted_weights_and_replaces_a_head_of_another_size(
  twin_file, converted, sample_500hz, tmp_path
):
  config = net1d_teacher_config(sample_500hz)
  mesh = sharding.make_mesh()
  # The same class count: everything loads, the head drawn by convert's seed included.
  expected = flat(interop.from_torch("net1d", twin_file[1], 5, 12, 0, model_kwargs=SMALL))
  _, state, example = initial_state(config, 5)
  info = types.SimpleNamespace(num_classes=5)
  loaded = train._with_initial_network(
    state, config, info, converted, example["teacher"].shape, mesh
  )
  assert flat({"params": loaded.params}).keys() == expected.keys()
  for path, value in flat({"params": loaded.params}).items():
    np.testing.assert_array_equal(value, expected[path], err_msg="/".join(path))
  # Three classes in the source, five here: all but the head loads, the head stays as initialised.
  three = convert_twin(twin_file[0], tmp_path / "three", ("a", "b", "c"))
  replaced = train._with_initial_network(state, config, info, three, example["teacher"].shape, mesh)
  initial = flat({"params": state.params})
  for path, value in flat({"params": replaced.params}).items():
    np.testing.assert_array_equal(value, (initial if path[1] == "dense" else expected)[path])
  config.student.kwargs.blocks = [1, 2]
  with pytest.raises(pretrained.InitError, match="backbone options are"):
    train._with_initial_network(state, config, info, converted, example["teacher"].shape, mesh)


def test_freeze_backbone_updates_only_the_head(sample_500hz):
  config = net1d_teacher_config(sample_500hz)
  method, _, example = initial_state(config, 5)
  head = pretrained.head_modules(
    lambda c: train.build_backbone(config.student, c), 5, example["teacher"].shape
  )
  assert head == {"dense"}
  frozen = pretrained.frozen_mask("teacher", head)
  tx, schedule = optim.create(config.optimizer, 10, 1, frozen=frozen)
  state = train._init_state(method, tx, example, jax.random.key(0))
  labels = np.zeros_like(example["label"])
  labels[:, 0] = 1.0
  teacher_view = np.random.default_rng(0).normal(size=(4, CROP, 12)).astype(np.float32)
  batch = {**example, "teacher": teacher_view, "label": labels}
  after, _ = jax.jit(train._make_train_step(method, tx, schedule))(state, batch)
  before, now = flat({"params": state.params}), flat({"params": after.params})
  for path, value in now.items():
    changed = not np.array_equal(value, before[path])
    assert changed == (path[1] == "dense"), "/".join(path)
  # MVKT's own heads (the contrastive embeddings) train beside the probed network's head.
  params = {"student": {"dense": {"kernel": 0}, "stem": {"kernel": 0}}, "embed": {"kernel": 0}}
  assert pretrained.frozen_mask("mvkt", head)(params) == {
    "student": {"dense": {"kernel": False}, "stem": {"kernel": True}},
    "embed": {"kernel": False},
  }


def test_a_fine_tuned_foundation_teacher_teaches_an_mvkt_student(converted, sample_500hz, tmp_path):
  config = tiny_config("mvkt", sample_500hz, num_epochs=1, batch_size=16)
  config.data.update(name=DATASET, crop_len=CROP)  # the contract comes from the converted run
  config.teacher.backbone = "net1d"
  config.teacher.kwargs = ml_collections.ConfigDict(SMALL)
  config.teacher.init_from = str(converted)
  config.teacher.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3})
  results = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= results["test"]["macro_auc"] <= 1.0 or np.isnan(results["test"]["macro_auc"])
  teacher = json.loads((tmp_path / "teacher" / "results.json").read_text())
  for run in (teacher, results):
    assert run["config"]["data"]["preprocessing"] == "ecgfounder"
    assert run["config"]["data"]["normalization"] == "none"
  assert teacher["config"]["student"]["init_from"] == str(converted)
  assert teacher["history"] and results["teacher_backbone"] == "net1d"

  record = ecg_io.find_records(SAMPLE)[0]  # 100 Hz: predict resamples it to the run's 500 Hz
  outcome = predict.Predictor(tmp_path / "teacher").predict_record(record)
  assert sorted(outcome["probabilities"]) == sorted(CLASSES) and outcome["num_windows"] == 7
  # A single-lead view of the contract's record-wide z-score has no stand-alone equivalent.
  with pytest.raises(ValueError, match="z-scores the whole 12-lead record"):
    predict.Predictor(tmp_path / "student")


def test_a_bench_case_names_a_teacher_other_than_the_student():
  from configs import bench
  from lead_kt.bench import core

  spec = "mvkt:fcn_wang:8:5000:1:bfloat16:net1d"
  case = core.Case.parse(spec)
  assert case.spec == spec and spec in bench.get_config().cases
  config = core.run_config(case, bench.get_config())
  assert (config.student.backbone, config.teacher.backbone) == ("fcn_wang", "net1d")
  assert config.teacher.dtype == "bfloat16"
  assert core.Case.parse("mvkt:fcn_wang:8:250:1:float32").spec == "mvkt:fcn_wang:8:250:1:float32"
