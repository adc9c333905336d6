"""lead_kt.diagnose: a transfer run's top directory is its student run; nothing is written into a
run that cannot be diagnosed; errors are one line."""

import json
import pathlib
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import run_fixture

from lead_kt import diagnose

REPO = pathlib.Path(__file__).parent.parent


def _tree(root: pathlib.Path) -> dict:
  return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_a_transfer_runs_top_directory_is_its_student_and_stays_untouched(tmp_path):
  """The layout of a finished transfer run (top results.json of the method, the model in
  student/), whose student here is the tiny baseline run: diagnose reads the student run, whose
  method it refuses, and writes nothing anywhere in the run."""
  top = tmp_path / "mvkt"
  shutil.copytree(run_fixture.tiny_run(), top / "student")
  summary = json.loads((top / "student" / "results.json").read_text())
  summary["method"] = summary["config"]["method"] = "mvkt"
  (top / "results.json").write_text(json.dumps(summary))
  before = _tree(top)
  with pytest.raises(ValueError, match=r"mvkt/student: .* MVKT and KD runs, this is 'baseline'"):
    diagnose.diagnose(str(top), num_batches=1)
  assert _tree(top) == before


def test_an_unfinished_workdir_is_one_line_saying_how_to_resume(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  done = subprocess.run(
    [sys.executable, "-m", "lead_kt.diagnose", f"--workdir={tmp_path / 'run'}", "--batches=1"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 2 and "Traceback" not in done.stderr
  (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert "run is a run that has not finished (no results.json yet): resume it" in line
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


def test_the_measured_terms_and_views_are_the_runs_own():
  """KD and MVKT runs are measured on their own loss terms and weights (label_weight on BCE, as
  runs from before it had 1) and on batches augmented as their step augmented them."""
  from configs import kd, mvkt

  config = kd.get_config()
  config.label_weight, config.kd_weight = 0.5, 2.0
  assert diagnose.loss_weights(config) == {"bce": 0.5, "kd": 2.0}
  config.kd_variant = "kd_at"
  assert diagnose.loss_weights(config) == {"bce": 0.5, "kd": 2.0, "at": config.at_weight}
  config = mvkt.get_config()
  del config.label_weight
  assert diagnose.loss_weights(config) == {"bce": 1.0, "mkd": config.alpha, "clt": config.beta}

  info = types.SimpleNamespace(student_leads=("I",), sampling_rate=100.0)
  assert diagnose._step_views(config, info) is None  # no augmentation: the batches as read
  config.augment.noise = 0.5
  del config.augment.recorded_noise  # a run stored before the field existed
  views = diagnose._step_views(config, info)
  x = np.linspace(-1, 1, 2 * 100 * 12, dtype=np.float32).reshape(2, 100, 12)
  batch = {"teacher": x, "student": x[..., :1], "label": np.zeros((2, 5), np.float32)}
  out = views(jax.random.PRNGKey(0), batch)
  assert not np.allclose(out["teacher"], x)
  np.testing.assert_array_equal(out["student"], np.asarray(out["teacher"])[..., :1])
