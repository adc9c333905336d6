"""Out-of-fold and ensemble teachers: the parts, the per-record choice, the runs they come from."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from train_helpers import build_method, tiny_config

from configs import distill_crossval
from lead_kt import input_pipeline, models, sweep, train
from lead_kt.data.train import holdout_parts
from lead_kt.methods.common import Network, Teacher


def test_holdout_parts_cut_every_record_into_one_part_the_same_way():
  parts = holdout_parts(103, 5)
  np.testing.assert_array_equal(parts, holdout_parts(103, 5))
  assert sorted(np.bincount(parts)) == [20, 20, 21, 21, 21]
  assert not np.array_equal(parts, np.arange(103) % 5)  # shuffled, not by position


def _stacked_teacher(target, parts=3, num_records=10):
  net = Network(models.get("fcn_wang", 4, filters=(4, 4, 4)))
  x = jax.random.normal(jax.random.key(0), (num_records, 50, 12))
  members = [net.init(jax.random.key(k), x) for k in range(parts)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
  frozen = {"params": stacked[0], "stats": stacked[1]}
  part_of = tuple(int(p) for p in holdout_parts(num_records, parts))
  teacher = Teacher(net, target, part_of, parts)
  logits = [net.eval_apply(p, s, x).logits for p, s in members]
  return teacher, frozen, x, logits, part_of


def test_oof_teacher_gives_each_training_record_the_member_that_did_not_see_it():
  teacher, frozen, x, logits, part_of = _stacked_teacher("oof")
  index = jnp.arange(x.shape[0])
  out = teacher.frozen_apply(frozen, x, index).logits
  expected = np.stack([logits[part_of[i]][i] for i in range(x.shape[0])])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # Without training indices (validation, test) the members' mean.
  np.testing.assert_allclose(
    teacher.frozen_apply(frozen, x).logits, np.mean(logits, axis=0), rtol=1e-5, atol=1e-6
  )


def test_ensemble_teacher_is_the_mean_of_its_members():
  teacher, frozen, x, logits, _ = _stacked_teacher("ensemble")
  out = teacher.frozen_apply(frozen, x, jnp.arange(x.shape[0])).logits
  np.testing.assert_allclose(out, np.mean(logits, axis=0), rtol=1e-5, atol=1e-6)
  assert not np.allclose(logits[0], logits[1])  # the members differ


def test_distill_sweep_plans_part_teachers_once_per_fold_before_their_students():
  config = distill_crossval.get_config()
  config.sweep.folds = (1, 2)
  runs = sweep.plan(config, epath.Path("/sweep"))
  names = [str(d) for _, d, _ in runs]
  for fold in (1, 2):
    parts = [f"/sweep/teacher_oof5/fold_{fold}/part_{k}" for k in range(1, 6)]
    assert all(names.count(p) == 1 for p in parts)
    oof = names.index(f"/sweep/kd_fm_oof/fold_{fold}")
    assert max(names.index(p) for p in parts) < oof
    by_dir = {str(d): c for _, d, c in runs}
    assert by_dir[f"/sweep/kd_fm_ens/fold_{fold}"].teacher.checkpoint == (
      f"/sweep/teacher_oof5/fold_{fold}"
    )
    assert by_dir[parts[2]].data.holdout_part == 3
    assert by_dir[parts[2]].augment.mixup == 0  # teachers train as before, unaugmented
    assert by_dir[f"/sweep/baseline_fm/fold_{fold}"].augment.mixup == 1.0
    # The larger students: the same recipe and the fold's own (fcn_wang) teacher.
    larger = by_dir[f"/sweep/kd_fm_xresnet/fold_{fold}"]
    assert (larger.student.backbone, larger.teacher.backbone) == ("xresnet1d101", "fcn_wang")
    assert larger.teacher.checkpoint == f"/sweep/teacher/fold_{fold}"
    assert larger.augment.mixup == 1.0 and larger.num_epochs == 100


@pytest.fixture(scope="module")
def oof_run(tmp_path_factory):
  """KD taught by 2 out-of-fold teachers, augmented and mixed, validated every 2 of 3 epochs."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  workdir = tmp_path_factory.mktemp("kd_oof")
  config = tiny_config(
    "kd",
    data_dir,
    **{
      "teacher.target": "oof",
      "teacher.oof_parts": 2,
      "teacher.num_epochs": 1,
      "num_epochs": 3,
      "eval_every_epochs": 2,
      "augment.noise": 0.05,
      "augment.mixup": 1.0,
    },
  )
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def test_oof_run_trains_one_teacher_per_part_without_that_part(oof_run):
  config, workdir = oof_run
  num_train = input_pipeline.dataset_info(config.data).split_sizes["train"]
  parts = holdout_parts(num_train, 2)
  for part in (1, 2):
    run = workdir / "teacher" / f"part_{part}"
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["data"]["holdout_part"] == part
    iterator = input_pipeline.train_iterator(
      train.teacher_config(config, part).data, None, 32, None, 0
    )
    assert iterator.get_state()["num_records"] == int(np.sum(parts != part - 1))
  top = json.loads((workdir / "results.json").read_text())
  assert [t["method"] for t in top["teacher"]] == ["teacher", "teacher"]


def test_oof_run_validates_every_n_epochs_and_reports_agreement(oof_run):
  _, workdir = oof_run
  results = json.loads((workdir / "student" / "results.json").read_text())
  assert [h["epoch"] for h in results["history"]] == [2, 3]
  assert all(0 <= h["teacher_agreement"] <= 1 and h["teacher_kl"] >= 0 for h in results["history"])
  diagnostics = results["diagnostics"]
  assert set(diagnostics) == {"train", "validation", "test"}
  for split in diagnostics.values():
    assert 0 <= split["teacher_macro_auc"] <= 1 and 0 <= split["teacher_agreement"] <= 1
  assert results["test"]["macro_auc"] == pytest.approx(
    diagnostics["test"]["student_macro_auc"], abs=1e-3
  )


def test_kd_predict_is_the_student_alone_and_evaluation_adds_agreement(oof_run):
  """Inference and export trace ``predict``: it must not carry the teacher."""
  config, _ = oof_run
  method = build_method(config, num_classes=5)
  batch = {
    "teacher": jnp.zeros((2, 250, 12)),
    "student": jnp.zeros((2, 250, 1)),
    "label": jnp.zeros((2, 5)),
    "index": jnp.zeros(2, jnp.int32),
    "mask": jnp.ones(2),
  }
  params, state = method.init(jax.random.key(0), batch)
  predict = jax.make_jaxpr(method.predict)(params, state, batch)
  evaluation = jax.make_jaxpr(method.evaluation_outputs)(params, state, batch)
  assert set(method.predict(params, state, batch)) == {"logits"}
  assert set(method.evaluation_outputs(params, state, batch)) == {
    "logits",
    "teacher_kl",
    "teacher_agreement",
  }
  # Two teachers' forwards are in the evaluation only.
  assert len(evaluation.eqns) > 2 * len(predict.eqns)
