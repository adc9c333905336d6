"""lead_kt.main: a config or run that does not fit is one line `error: ...`, exit status 2."""

import pathlib
import subprocess
import sys

import run_fixture
from train_helpers import tiny_config

from lead_kt import main

REPO = pathlib.Path(__file__).parent.parent


def _command(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "lead_kt.main", "--config=configs/baseline.py", *flags],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


def _one_error_line(err: str) -> str:
  assert "Traceback" not in err, err
  (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
  return line


def test_a_misspelt_config_override_names_the_flag_in_one_line(tmp_path):
  done = _command(f"--workdir={tmp_path / 'run'}", "--config.student.backbonee=fcn_wang")
  assert done.returncode == 2
  assert _one_error_line(done.stderr) == (
    "error: --config.student.backbonee: the config has no field 'backbonee'; "
    'Did you mean "backbone" instead of "backbonee"?'
  )
  assert not (tmp_path / "run").exists()


def test_flags_read_with_hyphens_too(tmp_path):
  done = _command(f"--workdir={tmp_path / 'run'}", "--heartbeat-timeout-s=soon")
  assert done.returncode == 2
  assert _one_error_line(done.stderr) == (
    "error: flag --heartbeat_timeout_s=soon: invalid literal for int() with base 10: 'soon'"
  )


def _data_dir() -> str:
  return run_fixture.run_config(run_fixture.tiny_run()).data.data_dir


def test_a_wrong_backbone_is_one_line(tmp_path, capsys):
  config = tiny_config("baseline", _data_dir())
  config.student.backbone = "fcn_wangg"
  config.student.kwargs = {}
  assert main.run(config, str(tmp_path / "run")) == 2
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith("error: unknown backbone 'fcn_wangg'; known backbones: cnn_hannun")


def test_a_teacher_that_does_not_fit_is_one_line(tmp_path, capsys):
  config = tiny_config("mvkt", _data_dir(), num_epochs=1)
  config.teacher.checkpoint = run_fixture.tiny_run()  # a single-lead baseline run
  assert main.run(config, str(tmp_path / "run")) == 2
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith("error: teacher checkpoint ") and "has method = 'baseline'" in line
