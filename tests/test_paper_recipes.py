"""The MVKT authors' recipes (configs/paper/): each builds and trains two steps on real records."""

import functools
import pathlib

import jax
import numpy as np
import pytest

from configs.paper import mvkt_icbeb, mvkt_ptbxl
from lead_kt import input_pipeline, methods, optim, sharding, train

ICBEB_SAMPLE = pathlib.Path(__file__).parent.parent / "data_builders/icbeb2018/dummy_data"
PAPER_BACKBONES = ("cnn_hannun", "resnet1d34", "resnet1d_wang", "inception1d", "xresnet1d101_wide")


def _two_steps(config, data_dir, tmp_path):
  """Two train steps of ``config``'s method on the first real batches, as the trainer runs them
  (random teacher); returns the steps' scalars and the learning rate of the first step."""
  config.data.data_dir = data_dir
  methods.validate(config)
  info = input_pipeline.dataset_info(config.data)
  first_labels = input_pipeline.split_first_labels(config.data, "train")
  method = methods.create(config, info.num_classes, info.split_sizes["train"], first_labels)
  normalizer = input_pipeline.load_or_fit_normalizer(config.data, str(tmp_path / "norm.json"))
  mesh = sharding.make_mesh()
  batches = input_pipeline.train_iterator(
    config.data, normalizer, config.batch_size, sharding.batch_sharding(mesh), config.seed
  )
  tx, schedule = optim.create(config.optimizer, batches.steps_per_epoch, config.num_epochs)
  batch = train._model_inputs(next(batches))
  state = jax.jit(functools.partial(train._init_state, method, tx, batch))(jax.random.key(0))
  step = jax.jit(train._make_train_step(method, tx, schedule))
  scalars = []
  for _ in range(2):
    state, out = step(state, batch)
    scalars.append(jax.device_get(out))
    batch = train._model_inputs(next(batches))
  return scalars, int(state.step)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_ptbxl_recipe_trains_two_steps_on_whole_records(data_dir, tmp_path):
  # One of the paper's backbones; the largest (xresnet1d101_wide) compiles for a minute here.
  config = mvkt_ptbxl.get_config("resnet1d_wang")
  assert config.data.crop_len == 0 and config.batch_size == 32
  scalars, steps = _two_steps(config, data_dir, tmp_path)
  assert steps == 2
  for out in scalars:
    assert all(np.isfinite(float(v)) for v in out.values())
    assert out["clt"] > 0 and out["mkd"] >= 0 and out["bce"] > 0
  assert np.isclose(scalars[0]["learning_rate"], 1e-4)  # the student's first warm-up epoch


def test_ptbxl_recipe_teacher_warms_up_to_its_own_rate():
  teacher = train.teacher_config(mvkt_ptbxl.get_config())
  schedule = optim.learning_rate_schedule(teacher.optimizer, steps_per_epoch=10, num_epochs=100)
  assert np.isclose(float(schedule(14 * 10)), 1.5e-2) and np.isclose(float(schedule(150)), 1e-3)
  assert teacher.method == "teacher" and teacher.student.backbone == "xresnet1d101_wide"


@pytest.mark.parametrize("backbone", PAPER_BACKBONES)
def test_ptbxl_recipe_accepts_every_backbone_of_the_papers_table(backbone):
  config = mvkt_ptbxl.get_config(backbone)
  methods.validate(config)
  assert config.student.backbone == config.teacher.backbone == backbone
  # Building the method looks each network up in the registry (an unknown name raises).
  method = methods.create(config, 5, 32, train_first_labels=None)
  assert method.student.module.__class__.__name__ == method.teacher.module.__class__.__name__


def test_icbeb_recipe_trains_two_steps_on_denoised_20_second_records(data_dir, tmp_path):
  config = mvkt_icbeb.get_config("resnet1d_wang")
  assert config.clt.negatives == "other_class" and config.data.name.endswith("mvkt_split_db6_20s")
  config.data.manual_dir = str(ICBEB_SAMPLE)
  config.batch_size = 4  # the bundled CPSC records leave a handful in the authors' train list
  scalars, steps = _two_steps(config, data_dir, tmp_path)
  assert steps == 2
  info = input_pipeline.dataset_info(config.data)
  assert info.num_classes == 9 and info.crop_len == 10_000
  for out in scalars:
    assert all(np.isfinite(float(v)) for v in out.values()) and out["clt"] > 0
