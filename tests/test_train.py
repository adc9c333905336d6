"""The one trainer on real records: teacher -> MVKT, exact resume, bad input, NaN handling."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from train_helpers import tiny_config

from lead_kt import checkpoint, optim, train

REPO = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def mvkt_run(data_dir, tmp_path_factory):
  """A full teacher -> MVKT run on the bundled real PTB-XL sample (275/62/53 records)."""
  workdir = tmp_path_factory.mktemp("mvkt")
  results = train.train_and_evaluate(tiny_config("mvkt", data_dir), str(workdir))
  return workdir, results


def _latest_state(workdir) -> dict:
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state",))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, state.state


def test_teacher_then_mvkt_writes_results(mvkt_run):
  workdir, results = mvkt_run
  top = json.loads((workdir / "results.json").read_text())
  assert top["method"] == "mvkt" and top["teacher"]["method"] == "teacher"
  assert top["teacher"]["student_leads"] == list(
    ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
  )
  assert top["student_leads"] == ["I"]
  assert top["split_sizes"] == {"train": 275, "validation": 62, "test": 53}
  assert 0.0 <= top["test"]["macro_auc"] <= 1.0
  low, high = top["test"]["ci95"]["macro_auc"]
  assert low <= top["test"]["macro_auc"] <= high
  assert [h["epoch"] for h in top["history"]] == [1, 2]
  assert all(0 < h["bce"] < 2 for h in top["history"])  # the validation loss
  events = b"".join(p.read_bytes() for p in (workdir / "student" / "tensorboard").glob("events.*"))
  assert b"validation/bce" in events
  assert 1 <= top["best_epoch"] <= 2
  assert top["best_epoch"] == max(top["history"], key=lambda h: h["macro_auc"])["epoch"]
  scores = np.load(workdir / "predictions" / "test.npz")["scores"]
  assert scores.shape == (53, 5) and np.all((scores >= 0) & (scores <= 1))
  assert results["test"]["macro_auc"] == top["test"]["macro_auc"]


def test_mvkt_student_holds_the_trained_teacher_and_updated_banks(mvkt_run):
  workdir, _ = mvkt_run
  _, student = _latest_state(workdir / "student")
  _, teacher_state = _latest_state(workdir / "teacher")
  frozen = student["method_state"]["teacher"]["params"]
  trained = teacher_state["params"]
  # The frozen teacher equals the teacher run's best checkpoint (here: some epoch's params),
  # never its random initialisation: compare with the teacher's own best.
  best = checkpoint.load_best_model(
    str(workdir / "teacher"),
    jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
      {"params": trained, "method_state": teacher_state["method_state"]},
    ),
  )
  for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(best["params"]), strict=True):
    np.testing.assert_array_equal(a, b)
  memory = student["method_state"]["memory"]
  bank = np.asarray(memory["student_bank"])
  # Rows written by the momentum update are unit norm; the uniform init (+-1/sqrt(16/3)) is not.
  norms = np.linalg.norm(bank, axis=1)
  assert np.mean(np.isclose(norms, 1.0, atol=1e-4)) > 0.5
  assert float(memory["z_student"]) > 0 and float(memory["z_teacher"]) > 0


def test_resume_after_sigterm_matches_uninterrupted_run(data_dir, tmp_path, monkeypatch):
  config = tiny_config("baseline", data_dir)
  reference = train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))

  original = checkpoint.Preemption.requested

  def sigterm_at_step_5(self, step):
    if step == 5:
      os.kill(os.getpid(), signal.SIGTERM)  # the real handler sets the flag
    return original(self, step)

  monkeypatch.setattr(checkpoint.Preemption, "requested", sigterm_at_step_5)
  assert train.train_and_evaluate(config, str(tmp_path / "resumed")) is None
  step, _ = _latest_state(tmp_path / "resumed")
  assert step == 5
  monkeypatch.setattr(checkpoint.Preemption, "requested", original)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))

  assert resumed["history"] == reference["history"]
  _, a = _latest_state(tmp_path / "uninterrupted")
  _, b = _latest_state(tmp_path / "resumed")
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
    np.testing.assert_array_equal(x, y)


def test_nonfinite_update_stops_the_run_naming_the_step(data_dir, tmp_path, monkeypatch):
  create = optim.create

  def nan_from_step_11(cfg, steps_per_epoch, num_epochs, frozen=None):
    tx, schedule = create(cfg, steps_per_epoch, num_epochs, frozen)

    def poison(updates, count):
      return jax.tree.map(lambda u: u * jax.numpy.where(count >= 10, jax.numpy.nan, 1.0), updates)

    def update(updates, state, params=None):
      updates, inner = tx.update(updates, state[0], params)
      return poison(updates, state[1]), (inner, state[1] + 1)

    return optax.GradientTransformation(
      lambda p: (tx.init(p), jax.numpy.zeros((), "int32")), update
    ), schedule

  monkeypatch.setattr(optim, "create", nan_from_step_11)
  config = tiny_config("baseline", data_dir, num_epochs=3)
  with pytest.raises(train.NonFiniteLossError, match=r"at step 11\b"):
    train.train_and_evaluate(config, str(tmp_path))
  step, state = _latest_state(tmp_path)
  assert step == 8  # the epoch-1 checkpoint (8 steps per epoch) is the last good one
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))


@pytest.mark.parametrize(
  ("override", "message"),
  [
    ({"student.backbone": "resnet9000"}, "unknown backbone 'resnet9000'"),
    ({"data.name": "ptbxl/nonsense_100hz"}, "nonsense"),
    ({"data.student_leads": ("I", "V7")}, "V7"),
    ({"mkd.variant": "blend"}, "unknown mkd.variant 'blend'"),
    ({"clt.negatives": "nearest"}, "unknown clt.negatives"),
  ],
)
def test_bad_config_fails_before_training(data_dir, tmp_path, override, message):
  config = tiny_config("mvkt", data_dir, **override)
  config.teacher.checkpoint = str(tmp_path / "no_teacher_needed_to_fail")
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # a run that cannot start writes nothing


def test_teacher_of_another_architecture_is_refused(mvkt_run, data_dir, tmp_path):
  workdir, _ = mvkt_run
  config = tiny_config("mvkt", data_dir)
  config.teacher.backbone = "inception1d"
  config.teacher.kwargs = {}
  config.teacher.checkpoint = str(workdir / "teacher")
  with pytest.raises(checkpoint.CheckpointError, match="fcn_wang"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  # The corrected command starts cleanly in the same workdir (issue 29: it was refused, the
  # failed start having written run_identity.json).
  config = tiny_config("mvkt", data_dir, num_epochs=1)
  config.teacher.checkpoint = str(workdir / "teacher")
  assert train.train_and_evaluate(config, str(tmp_path / "run")) is not None


def test_teacher_with_other_widths_is_refused(mvkt_run, data_dir, tmp_path):
  workdir, _ = mvkt_run
  config = tiny_config("mvkt", data_dir)
  config.teacher.kwargs.filters = (8, 8, 8)
  config.teacher.checkpoint = str(workdir / "teacher")
  with pytest.raises(checkpoint.CheckpointError, match="filters"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_workdir_of_an_incompatible_run_is_refused(mvkt_run, data_dir):
  workdir, _ = mvkt_run
  config = tiny_config("teacher", data_dir)
  config.student.backbone = "resnet1d_wang"
  with pytest.raises(train.ConfigError, match="another run's checkpoints"):
    train.train_and_evaluate(config, str(workdir / "teacher"))


@pytest.mark.parametrize(
  ("method", "override"),
  [
    ("kd", {"kd_variant": "kd"}),
    ("kd", {"kd_variant": "kd_fitnet"}),
    ("kd", {"kd_variant": "kd_at"}),
    ("mvkt", {"clt.memory": "queue", "clt.queue_size": 128}),
    ("mvkt", {"clt.negatives": "other_class", "mkd.variant": "reference_code"}),
  ],
)
def test_transfer_variants_train_from_a_given_teacher(
  mvkt_run, data_dir, tmp_path, method, override
):
  workdir, _ = mvkt_run
  config = tiny_config(method, data_dir, num_epochs=1, **override)
  config.teacher.checkpoint = str(workdir / "teacher")
  results = train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "teacher").exists()  # the given teacher is used, none is trained
  assert 0.0 <= results["test"]["macro_auc"] <= 1.0
  expected_term = {"kd": "kd", "mvkt": "clt"}[method]
  expected_term = {"kd_fitnet": "fitnet", "kd_at": "at"}.get(
    override.get("kd_variant"), expected_term
  )
  events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").glob("events.out.*"))
  assert f"train/{expected_term}".encode() in events  # the method's own loss term was logged


def test_command_line_reports_a_bad_backbone_before_training(data_dir, tmp_path):
  command = [
    sys.executable, "-m", "lead_kt.main", "--config=configs/baseline.py",
    f"--workdir={tmp_path}", f"--config.data.data_dir={data_dir}",
    "--config.student.backbone=resnet9000",
  ]  # fmt: skip
  result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode != 0
  assert "unknown backbone 'resnet9000'" in result.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_a_nan_validation_score_never_displaces_a_real_best():
  nan = float("nan")
  assert train._improves(nan, None)  # the first epoch always yields a best checkpoint
  assert train._improves(0.7, nan) and train._improves(0.8, 0.7)
  assert not train._improves(nan, 0.7) and not train._improves(0.6, 0.7)


def test_diagnose_measures_a_finished_mvkt_run(mvkt_run):
  from lead_kt import diagnose

  workdir, _ = mvkt_run
  report = diagnose.diagnose(str(workdir / "student"), num_batches=2)
  gradient = report["gradient"]
  shares = [gradient[f"{term}_share"] for term in ("bce", "mkd", "clt")]
  assert all(0 < share < 1 for share in shares) and sum(shares) == pytest.approx(1.0)
  assert -1 <= gradient["cos_bce_mkd"] <= 1 and 0 <= gradient["clt_accuracy"] <= 1
  for split in ("train", "validation"):
    assert 0 <= report["teacher"][split]["macro_auc"] <= 1
    assert report["teacher"][split]["mean_entropy"] > 0
  assert -1 <= report["agreement"]["pearson_mean"] <= 1
  assert sorted(report["memory"]) == ["student_bank", "teacher_bank"]
  assert all(-1 <= cosine <= 1 for cosine in report["memory"].values())
  with pytest.raises(ValueError, match="measures MVKT and KD runs, this is 'teacher'"):
    diagnose.diagnose(str(workdir / "teacher"))
