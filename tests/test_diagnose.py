"""lead_kt.diagnose: a transfer run's top directory is its student run; nothing is written into a
run that cannot be diagnosed; errors are one line."""

import json
import pathlib
import shutil
import subprocess
import sys

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
  with pytest.raises(ValueError, match=r"mvkt/student: .* measures MVKT runs, this is 'baseline'"):
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
