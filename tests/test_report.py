"""lead_kt.report on fake run directories (seeded random predictions)."""

import json
import shutil

import numpy as np
import pytest

from lead_kt import report

CLASSES = ["NORM", "MI", "STTC"]
DATASET = "ptbxl/superdiagnostic_100hz"


def _write_run(
  run_dir, method, leads, noise, seed, dataset=DATASET, n_test=120, index_offset=0, history=()
):
  """A run directory in the trainer's layout; lower noise = better scores."""
  rng = np.random.default_rng(seed)
  label_rng = np.random.default_rng(0)  # same records and labels for every run
  (run_dir / "predictions").mkdir(parents=True)
  for split, n in (("validation", 80), ("test", n_test)):
    labels = (label_rng.random((n, len(CLASSES))) < 0.35).astype(np.float32)
    logits = 2 * (labels - 0.5) + noise * rng.standard_normal(labels.shape)
    np.savez(
      run_dir / "predictions" / f"{split}.npz",
      scores=1 / (1 + np.exp(-logits)),
      labels=labels,
      index=np.arange(n) + index_offset,
    )
  results = {
    "method": method,
    "dataset": dataset,
    "backbone": "resnet1d",
    "student_leads": leads,
    "best_epoch": 3,
    "class_names": CLASSES,
    "config": {},
    "validation": {"macro_auc": 0.5},
    "test": {},
    "wall_time_s": 1.0,
    "history": list(history),
  }
  (run_dir / "results.json").write_text(json.dumps(results))
  return run_dir


def test_report_tables_and_plots(tmp_path):
  baseline = _write_run(tmp_path / "baseline_I", "baseline", ["I"], noise=2.5, seed=1)
  mvkt = _write_run(tmp_path / "mvkt_I", "mvkt", ["I"], noise=1.0, seed=2)
  mvkt_ii = _write_run(tmp_path / "mvkt_II", "mvkt", ["II"], noise=1.2, seed=3)
  out = tmp_path / "out"
  report.main(
    ["--workdirs", str(mvkt), str(mvkt_ii), "--baseline", str(baseline), "--out", str(out)]
    + ["--n-boot", "100"]
  )
  text = (out / "report.md").read_text()
  assert "| mvkt | I | resnet1d | " in text
  assert "| mvkt | II | resnet1d | " in text
  assert "| baseline | I | resnet1d | " in text
  assert f"{DATASET} AUC | ACC | F1 |" in text
  assert "| Method | Leads | Backbone | NORM | MI | STTC | Macro F1 |" in text
  # The much better MVKT run beats the baseline: its AUC difference interval lies above 0.
  paired_row = "| mvkt | I | resnet1d | baseline (I, resnet1d) | "
  delta_auc = next(line for line in text.splitlines() if line.startswith(paired_row))
  delta_auc = delta_auc.split("|")[5].strip()
  assert delta_auc.startswith("+") and "[+" in delta_auc
  # Per class: AUCs, and the paired ΔAUC of each class (a row per run, a cell per class).
  assert "| Method | Leads | Backbone | NORM | MI | STTC | Macro AUC |" in text
  per_class_delta = text.split("### Per-class ΔAUC against the baseline")[1]
  row = next(line for line in per_class_delta.splitlines() if line.startswith(paired_row))
  cells = [cell.strip() for cell in row.split("|")[5:8]]
  assert all(cell.startswith(("+", "-")) and cell.count("[") == 1 for cell in cells), cells
  slug = "ptbxl_superdiagnostic_100hz"
  for name in (f"roc_{slug}.png", f"f1_{slug}.png", f"per_lead_{slug}.png"):
    assert (out / name).stat().st_size > 10_000
    assert f"({name})" in text


def test_folds_are_pooled(tmp_path):
  for fold in (1, 2):
    _write_run(tmp_path / "cv" / f"fold_{fold}", "mvkt", ["I"], noise=1.0, seed=fold)
  run = report.load_run(tmp_path / "cv")
  assert run.folds == ("fold_1", "fold_2")
  assert run.scores.shape == (240, 3)
  assert run.keys[0] == "fold_1/0" and run.keys[-1] == "fold_2/119"
  out = tmp_path / "out"
  report.main(["--workdirs", str(tmp_path / "cv"), "--out", str(out), "--n-boot", "50"])
  assert "pooled over fold_1, fold_2" in (out / "report.md").read_text()


def test_cross_validated_runs_are_reported_on_the_folds_all_have_finished(tmp_path, capsys):
  for fold in (1, 2, 3):
    _write_run(tmp_path / "baseline" / f"fold_{fold}", "baseline", ["I"], noise=2.0, seed=fold)
  for fold in (1, 2):  # fold_3 of mvkt is still training
    _write_run(tmp_path / "mvkt" / f"fold_{fold}", "mvkt", ["I"], noise=1.0, seed=10 + fold)
  out = tmp_path / "out"
  report.main(
    ["--workdirs", str(tmp_path / "mvkt"), "--baseline", str(tmp_path / "baseline")]
    + ["--out", str(out), "--n-boot", "50"]
  )
  text = (out / "report.md").read_text()
  assert (
    "baseline (I, resnet1d) on ptbxl/superdiagnostic_100hz: pooled over fold_1, fold_2." in text
  )
  assert "fold_3 left out" in capsys.readouterr().err
  # Per fold: every run's own AUC, and the much better MVKT above the baseline in both folds.
  per_fold = text.split("### Test macro-AUC per fold")[1]
  mvkt_row = next(line for line in per_fold.splitlines() if line.startswith("| mvkt | I |"))
  cells = [cell.strip() for cell in mvkt_row.split("|")[1:-1]]
  mvkt_run = report.restrict_to_folds(report.load_run(tmp_path / "mvkt"), ["fold_1", "fold_2"])
  assert cells[3] == f"{report.fold_macro_auc(mvkt_run, 'fold_1'):.3f}"
  assert cells[-1] == "2 of 2"
  restricted = report.restrict_to_folds(report.load_run(tmp_path / "baseline"), ["fold_2"])
  assert restricted.folds == ("fold_2",) and restricted.scores.shape == (120, 3)
  assert all(key.startswith("fold_2/") for key in restricted.keys)


def test_validation_history_is_the_mean_over_folds_by_epoch(tmp_path):
  def history(fold, every, last, kl=True):
    return [
      {
        "epoch": e,
        "macro_auc": 0.5 + e / 1000 + fold / 100,
        **({"teacher_kl": 1 / e} if kl else {}),
      }
      for e in range(every, last + 1, every)
    ]

  for fold in (1, 2):
    _write_run(
      tmp_path / "kd" / f"fold_{fold}", "kd", ["I"], 1.0, fold, history=history(fold, 5, 20)
    )
    _write_run(
      tmp_path / "baseline" / f"fold_{fold}",
      "baseline",
      ["I"],
      2.0,
      fold,
      history=history(fold, 1, 10, kl=False),
    )
  curve = report.validation_history(report.load_run(tmp_path / "kd"))
  assert sorted(curve) == [5, 10, 15, 20]
  assert curve[10]["macro_auc"] == pytest.approx(0.5 + 0.01 + 0.015)
  assert curve[20]["teacher_kl"] == pytest.approx(0.05)
  assert report.validation_history(
    report.restrict_to_folds(report.load_run(tmp_path / "kd"), ["fold_2"])
  )[5]["macro_auc"] == pytest.approx(0.525)
  out = tmp_path / "out"
  report.main(
    ["--workdirs", str(tmp_path / "kd"), "--baseline", str(tmp_path / "baseline")]
    + ["--out", str(out), "--n-boot", "20"]
  )
  table = (out / "report.md").read_text().split("### Validation by epoch")[1].split("###")[0]
  lines = [line for line in table.splitlines() if line.startswith("|")]
  assert lines[0] == "| Epoch | kd AUC | kd KL to teacher | baseline AUC |"
  # Rows are the longest schedule's epochs; the baseline, validated every epoch, fills 5 and 10.
  assert [line.split("|")[1].strip() for line in lines[2:]] == ["5", "10", "15", "20"]
  assert lines[3] == "| 10 | 0.525 | 0.100 | 0.525 |"
  assert lines[4].endswith("| - |")


def test_a_missing_unfinished_or_foreign_workdir_is_one_line_saying_which(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  unfinished = tmp_path / "unfinished"
  (unfinished / "checkpoints").mkdir(parents=True)
  (unfinished / "run_identity.json").write_text("{}")
  for workdir, message in (
    ("missing", "missing does not exist"),
    ("unfinished", "unfinished is a run that has not finished (no results.json yet): resume it"),
    ("empty", "empty is not a lead_kt run directory (no results.json)"),
  ):
    argv = ["--workdirs", str(tmp_path / workdir), "--out", str(tmp_path / "out")]
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_baseline_on_other_records_or_dataset_is_refused(tmp_path):
  baseline = _write_run(tmp_path / "baseline", "baseline", ["I"], noise=2.0, seed=1)
  shifted = _write_run(tmp_path / "shifted", "mvkt", ["I"], noise=1.0, seed=2, index_offset=5)
  with pytest.raises(ValueError, match="different records"):
    report.compare_to_baseline(report.load_run(shifted), report.load_run(baseline), 10, 0)
  other = _write_run(tmp_path / "other", "mvkt", ["I"], noise=1.0, seed=2, dataset="cpsc2018")
  with pytest.raises(ValueError, match="no --baseline run given for dataset"):
    report.write_report([other], tmp_path / "out", [baseline])
  with pytest.raises(ValueError, match="dataset cpsc2018"):
    report.compare_to_baseline(report.load_run(other), report.load_run(baseline), 10, 0)


def test_plot_per_lead_errors(tmp_path):
  entry = {"method": "mvkt", "dataset": DATASET, "student_leads": ["I"], "test": {"macro_auc": 0.8}}
  with pytest.raises(ValueError, match="given twice"):
    report.plot_per_lead([entry, entry], tmp_path / "x.png")
  with pytest.raises(ValueError, match="several datasets"):
    report.plot_per_lead([entry, {**entry, "dataset": "cpsc2018"}], tmp_path / "x.png")


def test_per_lead_runs_are_paired_with_the_baseline_of_their_own_lead(tmp_path):
  base_i = _write_run(tmp_path / "baseline_I", "baseline", ["I"], noise=2.5, seed=1)
  base_ii = _write_run(tmp_path / "baseline_II", "baseline", ["II"], noise=2.5, seed=4)
  mvkt_i = _write_run(tmp_path / "mvkt_I", "mvkt", ["I"], noise=1.0, seed=2)
  mvkt_ii = _write_run(tmp_path / "mvkt_II", "mvkt", ["II"], noise=1.2, seed=3)
  teacher = _write_run(tmp_path / "teacher", "teacher", [], noise=0.5, seed=5)
  out = tmp_path / "out"
  argv = ["--workdirs", str(mvkt_i), str(mvkt_ii), str(teacher), "--out", str(out)]
  report.main(argv + ["--baseline", str(base_i), str(base_ii), "--n-boot", "50"])
  rows = [line for line in (out / "report.md").read_text().splitlines() if "| baseline (" in line]
  assert any(r.startswith("| mvkt | I | ") and "| baseline (I, resnet1d) |" in r for r in rows)
  assert any(r.startswith("| mvkt | II | ") and "| baseline (II, resnet1d) |" in r for r in rows)
  # Two baselines of other leads: the 12-lead teacher has no baseline of its own to pair with.
  assert not any(r.startswith("| teacher |") for r in rows)
  again = shutil.copytree(base_i, tmp_path / "baseline_I_again")
  with pytest.raises(ValueError, match="baseline_I_again"):  # one baseline per lead set
    report.write_report([mvkt_i, mvkt_ii, teacher], out, [base_i, again])


def test_seeds_are_averaged_and_paired_seed_by_seed(tmp_path):
  for seed in (0, 1, 2):
    _write_run(tmp_path / "baseline" / f"seed_{seed}", "baseline", ["I"], noise=2.5, seed=seed)
    _write_run(tmp_path / "mvkt_infonce" / f"seed_{seed}", "mvkt", ["I"], 1.0, seed=10 + seed)
  variant = report.load_run(tmp_path / "mvkt_infonce")
  baseline = report.load_run(tmp_path / "baseline")
  assert variant.seeds == ("seed_0", "seed_1", "seed_2") and len(variant.runs) == 3
  assert variant.row == ("mvkt_infonce", "I", "resnet1d")  # the sweep's variant name
  evaluation = report.evaluate_run(variant, n_boot=50, seed=0)
  per_seed = evaluation["per_seed_macro_auc"]
  assert len(per_seed) == 3 and len(set(per_seed)) == 3
  assert evaluation["macro_auc"] == pytest.approx(np.mean(per_seed))
  low, high = evaluation["ci95"]["macro_auc"]
  assert low < evaluation["macro_auc"] < high
  paired = report.compare_to_baseline(variant, baseline, n_boot=50, seed=0)
  base_auc = np.mean(report.evaluate_run(baseline, 10, 0)["per_seed_macro_auc"])
  assert paired["runs"] == [3, 3]
  assert paired["difference"]["macro_auc"] == pytest.approx(np.mean(per_seed) - base_auc)
  assert paired["ci95"]["macro_auc"][0] > 0  # much less noise: better on every resample
  # A seed still training is left out, and pairing keeps to the seeds both runs have.
  (tmp_path / "baseline" / "seed_2" / "results.json").unlink()
  two_seeds = report.load_run(tmp_path / "baseline")
  assert two_seeds.seeds == ("seed_0", "seed_1")
  assert report.compare_to_baseline(variant, two_seeds, n_boot=10, seed=0)["runs"] == [2, 2]
  for seed in (0, 1):
    shutil.rmtree(tmp_path / "baseline" / f"seed_{seed}")
  _write_run(tmp_path / "baseline" / "seed_7", "baseline", ["I"], noise=2.5, seed=7)
  with pytest.raises(ValueError, match="no training seed in common"):
    report.compare_to_baseline(variant, report.load_run(tmp_path / "baseline"), 10, 0)


def test_runs_are_paired_with_the_baseline_of_their_own_windows(tmp_path):
  runs = {}
  for name, method, crop_len in (
    ("baseline", "baseline", 250),
    ("baseline_whole", "baseline", 0),
    ("mvkt_whole", "mvkt", 0),
    ("mvkt", "mvkt", 250),
  ):
    run_dir = _write_run(tmp_path / name, method, ["I"], noise=1.5, seed=len(runs))
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "crop_len": crop_len}))
    runs[name] = report.load_run(run_dir)
  baselines = [runs["baseline"], runs["baseline_whole"]]
  assert report._matching_baseline(runs["mvkt_whole"], baselines) is runs["baseline_whole"]
  assert report._matching_baseline(runs["mvkt"], baselines) is runs["baseline"]
  out = tmp_path / "out"
  report.main(
    ["--workdirs", str(tmp_path / "mvkt"), str(tmp_path / "mvkt_whole"), "--out", str(out)]
    + ["--baseline", str(tmp_path / "baseline"), str(tmp_path / "baseline_whole")]
    + ["--n-boot", "30"]
  )
  text = (out / "report.md").read_text()
  assert "| mvkt_whole | I | resnet1d | baseline_whole (I, resnet1d) |" in text


def test_students_of_transfer_runs_are_named_after_their_runs(tmp_path):
  """Every transfer method names its student `student`: the rows are the runs' methods, and
  runs of one method add their workdir (the flags in either spelling)."""
  mvkt = _write_run(tmp_path / "mvkt" / "student", "mvkt", ["I"], noise=1.0, seed=1)
  kd = _write_run(tmp_path / "kd" / "student", "kd", ["I"], noise=1.5, seed=2)
  again = _write_run(tmp_path / "b" / "mvkt" / "student", "mvkt", ["I"], noise=1.2, seed=3)
  out = tmp_path / "out"
  argv = ["--workdirs", str(mvkt), str(kd), str(again), "--out", str(out), "--n_boot", "20"]
  assert report.main(argv) == 0
  rows = [
    line for line in (out / "report.md").read_text().splitlines() if "| I | resnet1d |" in line
  ]
  names = {row.split("|")[1].strip() for row in rows}
  assert "kd" in names
  assert {f"mvkt ({tmp_path.name}/mvkt/student)", "mvkt (b/mvkt/student)"} <= names


def test_labels_name_the_rows(tmp_path, capsys):
  first = _write_run(tmp_path / "a" / "student", "mvkt", ["I"], noise=1.0, seed=1)
  second = _write_run(tmp_path / "b" / "student", "mvkt", ["I"], noise=1.5, seed=2)
  out = tmp_path / "out"
  argv = ["--workdirs", str(first), str(second), "--out", str(out), "--n-boot", "20"]
  assert report.main([*argv, "--labels", "MVKT tau 0.07", "MVKT tau 0.2"]) == 0
  text = (out / "report.md").read_text()
  assert "| MVKT tau 0.07 | I | resnet1d | " in text and "| MVKT tau 0.2 | I | resnet1d | " in text
  assert report.main([*argv, "--labels", "only one"]) == 2
  assert "1 --labels for 2 --workdirs" in capsys.readouterr().err


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
  run = _write_run(tmp_path / "mvkt", "mvkt", ["I"], noise=1.0, seed=1)
  (tmp_path / "a_file").write_text("")

  def no_work(path):
    raise AssertionError("the runs were read before the output was checked")

  monkeypatch.setattr(report, "load_run", no_work)
  assert report.main(["--workdirs", str(run), "--out", str(tmp_path / "a_file" / "out")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: cannot write ") and "a_file is a file" in err
  assert err.count("\n") == 1


def test_a_report_appears_whole_or_leaves_the_old_one(tmp_path, monkeypatch):
  run = _write_run(tmp_path / "mvkt", "mvkt", ["I"], noise=1.0, seed=1)
  out = tmp_path / "out"
  out.mkdir()
  (out / "report.md").write_text("the old report\n")
  (out / "notes.txt").write_text("kept")

  def broken_plot(*args):
    raise ValueError("plotting failed")

  with monkeypatch.context() as patch:
    patch.setattr(report, "plot_f1", broken_plot)
    assert report.main(["--workdirs", str(run), "--out", str(out), "--n-boot", "20"]) == 2
  assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.md"]
  assert (out / "report.md").read_text() == "the old report\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mvkt", "out"]  # nothing half-written
  assert report.main(["--workdirs", str(run), "--out", str(out), "--n-boot", "20"]) == 0
  assert (out / "report.md").read_text().startswith("# Run comparison")
  assert (out / "notes.txt").read_text() == "kept"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mvkt", "out"]
