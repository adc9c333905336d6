"""Sweeps: the planned runs of the cross-validation and per-lead configs, and a tiny real fold."""

import json

import pytest
from etils import epath
from train_helpers import tiny_config

from configs import crossval, feature_recon_crossval, mvkt_crossval, per_lead
from lead_kt import sweep


def test_crossval_plan_trains_one_teacher_per_fold_first():
  runs = sweep.plan(crossval.get_config(), epath.Path("/runs/cv"))
  assert len(runs) == 40
  names = [(name, str(path)) for name, path, _ in runs[:4]]
  assert names == [
    ("teacher", "/runs/cv/teacher/fold_1"),
    ("baseline", "/runs/cv/baseline/fold_1"),
    ("mvkt", "/runs/cv/mvkt/fold_1"),
    ("feature_recon", "/runs/cv/feature_recon/fold_1"),
  ]
  for name, path, config in runs:
    fold = config.data.cv_test_fold
    assert path.name == f"fold_{fold}"
    assert config.method == name
    if name in ("mvkt", "feature_recon"):
      assert config.teacher.checkpoint == f"/runs/cv/teacher/fold_{fold}"
    expected = "cnn_transformer" if name == "feature_recon" else "fcn_wang"
    assert config.student.backbone == expected
  assert sorted({c.data.cv_test_fold for _, _, c in runs}) == list(range(1, 11))


def test_per_lead_plan_covers_every_lead_for_both_methods():
  runs = sweep.plan(per_lead.get_config(), epath.Path("/runs/pl"))
  assert runs[0][0] == "teacher" and str(runs[0][1]) == "/runs/pl/teacher"
  students = runs[1:]
  assert len(students) == 24
  assert {c.data.student_leads for _, _, c in students} == {
    (lead,) for lead in per_lead.default.ALL_LEADS
  }
  assert {str(p) for n, p, _ in students if n == "mvkt_aVR"} == {"/runs/pl/mvkt_aVR"}
  assert all(
    c.teacher.checkpoint == "/runs/pl/teacher" for n, _, c in students if n.startswith("mvkt")
  )


def test_unknown_method_in_a_sweep_fails_before_any_run():
  config = crossval.get_config()
  config.sweep.methods = ("baseline", "magic")
  with pytest.raises(ValueError, match="unknown method 'magic'"):
    sweep.plan(config, epath.Path("/runs/x"))


def test_a_cross_validation_fold_runs_and_is_not_repeated(tmp_path):
  config = tiny_config("baseline", str(tmp_path / "tfds"), num_epochs=1)
  config.sweep = crossval.get_config().sweep
  config.sweep.methods, config.sweep.folds = ("baseline",), (3,)
  summary = sweep.run_sweep(config, str(tmp_path / "cv"))
  results = json.loads((tmp_path / "cv" / "baseline" / "fold_3" / "results.json").read_text())
  assert results["config"]["data"]["cv_test_fold"] == 3
  # Fold 3 as test, fold 4 as validation: about a tenth of the 390 labelled records each.
  assert 25 <= results["split_sizes"]["test"] <= 55 and results["split_sizes"]["train"] > 280
  assert summary[0]["test_macro_auc"] == results["test"]["macro_auc"]
  again = sweep.run_sweep(config, str(tmp_path / "cv"))
  assert again == summary


def test_ablation_plan_pairs_every_variant_with_its_seed():
  from configs import mvkt_ablations

  runs = sweep.plan(mvkt_ablations.get_config(), epath.Path("/runs/ab"))
  assert runs[0][0] == "teacher" and len(runs) == 1 + 10 * 3
  by_path = {str(path): config for _, path, config in runs}
  assert by_path["/runs/ab/mvkt_infonce/seed_2"].clt.loss == "infonce"
  assert by_path["/runs/ab/mvkt_infonce/seed_2"].seed == 2
  assert by_path["/runs/ab/mvkt_mkd_only/seed_0"].beta == 0.0
  assert by_path["/runs/ab/baseline_whole/seed_1"].method == "baseline"
  assert by_path["/runs/ab/baseline_whole/seed_1"].data.crop_len == 0
  assert by_path["/runs/ab/mvkt/seed_1"].teacher.checkpoint == "/runs/ab/teacher"
  # Seeds outermost: every variant of seed 0 comes before any run of seed 1.
  seeds = [config.seed for name, _, config in runs[1:]]
  assert seeds == sorted(seeds)


def test_feature_recon_crossval_reuses_the_mvkt_crossval_runs():
  """Run into one workdir, the feature-reconstruction sweep finds the teacher, baseline and MVKT
  runs of configs/mvkt_crossval.py under the same names with the same settings (all but the
  fields only feature reconstruction reads), so it skips them."""
  workdir = epath.Path("/runs/cv1500")

  def settings(run_config):
    fields = json.loads(run_config.to_json_best_effort())
    for only_feature_recon in ("recon", "recon_weight", "fusion", "mkd_weight", "sweep"):
      fields.pop(only_feature_recon, None)
    return fields

  shared = {
    (name, str(run_dir)): settings(run_config)
    for name, run_dir, run_config in sweep.plan(mvkt_crossval.get_config(), workdir)
    if name in ("teacher", "baseline", "mvkt")
  }
  runs = sweep.plan(feature_recon_crossval.get_config(), workdir)
  for name, run_dir, run_config in runs:
    if name in ("teacher", "baseline", "mvkt"):
      assert shared.pop((name, str(run_dir))) == settings(run_config), run_dir
      continue
    assert run_config.student.backbone == "cnn_transformer", name
    assert run_config.optimizer.learning_rate == 1e-3, name
  assert not shared  # every run of the MVKT sweep is in this one
  variants = {name: run_config for name, _, run_config in runs if run_config.data.cv_test_fold == 1}
  assert variants["feature_recon_extractor"].method == "baseline"
  assert variants["feature_recon"].recon.target == "tokens"
  assert variants["feature_recon_pooled"].recon.target == "pooled"
  assert variants["feature_recon_pooled"].recon_weight == 0.05
  assert variants["feature_recon_no_fusion"].fusion.kind == "none"
  assert variants["feature_recon_staged"].recon.stage1_epochs == 5
  assert len(runs) == 10 * 8
