"""Recovery from hard kills and damaged checkpoints, on short real runs of the bundled sample.

Every recovered run must end with the predictions of the uninterrupted run (the same 2-epoch
baseline of train_helpers.tiny_config: checkpoints at steps 8 and 16, best epoch 2).
"""

import logging
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from train_helpers import tiny_config

from lead_kt import checkpoint, export, predict, train

REPO = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  results = train.train_and_evaluate(tiny_config("baseline", data_dir), str(workdir))
  assert results["best_epoch"] == 2  # so that epoch 2 saves a best: the window of issue 20
  assert _steps(workdir / "checkpoints") == [8, 16]
  return workdir


def _steps(directory: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _test_scores(workdir: pathlib.Path) -> np.ndarray:
  return np.load(workdir / "predictions" / "test.npz")["scores"]


def _copy_run(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  shutil.copytree(source, target)
  return target


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
  """The biggest file of an Orbax item: array chunks, which every restore reads."""
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _flip_bit(path: pathlib.Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


# --- Issue 20: a kill between the best and the latest save of an epoch end ---


class _KilledBetweenSaves(Exception):
  pass


@pytest.mark.parametrize("crash_step", [8, 16])
def test_crash_between_the_best_and_the_latest_save_resumes(
  uninterrupted, data_dir, tmp_path, monkeypatch, crash_step
):
  config = tiny_config("baseline", data_dir)
  save = checkpoint.RunCheckpoints.save

  def die_before_the_latest_save(self, step, *args, **kwargs):
    if step == crash_step:
      self.wait()  # the best of this epoch end is on disk, its latest step never will be
      raise _KilledBetweenSaves
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.RunCheckpoints, "save", die_before_the_latest_save)
  with pytest.raises(_KilledBetweenSaves):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  assert _steps(tmp_path / "best") == [crash_step]
  assert _steps(tmp_path / "checkpoints") == ([] if crash_step == 8 else [8])

  resumed = train.train_and_evaluate(config, str(tmp_path))
  reference = train._finished_results(uninterrupted)
  assert resumed["history"] == reference["history"]
  assert resumed["best_epoch"] == reference["best_epoch"] == 2
  assert _steps(tmp_path / "best") == [16]
  np.testing.assert_array_equal(_test_scores(tmp_path), _test_scores(uninterrupted))


_CHILD = """
import sys
sys.path.insert(0, "tests")
from absl import logging
from train_helpers import tiny_config
from lead_kt import train
logging.set_verbosity(logging.INFO)
config = tiny_config("baseline", {data_dir!r}, **{{"checkpoint.async_save": True}})
train.train_and_evaluate(config, {workdir!r})
"""


def _start_child(data_dir: str, workdir: pathlib.Path, log_path: pathlib.Path):
  code = _CHILD.format(data_dir=data_dir, workdir=str(workdir))
  with open(log_path, "w") as log:
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log, stderr=log)


def _lines(log_path: pathlib.Path) -> int:
  return log_path.read_text(errors="replace").count("\n")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restarts_match_the_uninterrupted_run(
  uninterrupted, data_dir, tmp_path
):
  # Each start but the last is killed as soon as it has logged a random number of lines. Orbax
  # logs every step of a save or a restore, so the kills fall mostly around the writes: between
  # the best and the latest save, into unfinished (async) saves, the final evaluation and writes.
  # A fresh start logs about 185 lines, one resuming from step 8 about 140, from step 16 about
  # 50, so the first two starts are always killed.
  rng = np.random.default_rng(7)
  kill_after_lines = [int(n) for n in rng.integers(1, 121, size=4)]
  workdir = tmp_path / "run"
  killed = 0
  for attempt, kill_after in enumerate([*kill_after_lines, None]):
    log_path = tmp_path / f"attempt_{attempt}.log"
    child = _start_child(data_dir, workdir, log_path)
    deadline = time.monotonic() + 300
    while child.poll() is None:
      if kill_after is not None and _lines(log_path) >= kill_after:
        child.send_signal(signal.SIGKILL)
        break
      assert time.monotonic() < deadline, log_path.read_text()[-3000:]
      time.sleep(0.01)
    returncode = child.wait()
    assert returncode in (0, -signal.SIGKILL), log_path.read_text()[-3000:]
    killed += returncode == -signal.SIGKILL
    if returncode == 0:
      break
  assert returncode == 0 and killed >= 2, f"{killed} kills"
  np.testing.assert_array_equal(_test_scores(workdir), _test_scores(uninterrupted))


# --- Issue 21: a damaged latest checkpoint ---


@pytest.mark.parametrize(
  ("damage", "victim"),
  [
    (_truncate, "array data"),
    (_flip_bit, "array data"),  # no checksum in Orbax: caught by the run's own fingerprint
    (_flip_bit, "manifest.ocdbt"),  # checksummed by Orbax's OCDBT index
  ],
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
  uninterrupted, data_dir, tmp_path, caplog, damage, victim
):
  run = _copy_run(uninterrupted, tmp_path / "run")
  state_dir = run / "checkpoints" / "16" / "state"
  path = _largest_file(state_dir) if victim == "array data" else state_dir / victim
  damage(path)
  damaged_bytes = path.read_bytes()

  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(tiny_config("baseline", data_dir), str(run))
  assert f"cannot restore the checkpoint {run / 'checkpoints' / '16'} (" in caplog.text
  assert resumed["history"] == train._finished_results(uninterrupted)["history"]
  np.testing.assert_array_equal(_test_scores(run), _test_scores(uninterrupted))
  # The damaged step is kept aside, out of the way of the replayed epoch's new step 16.
  assert _steps(run / "checkpoints") == [8, 16]
  moved = run / "checkpoints" / "16.damaged-1" / path.relative_to(run / "checkpoints" / "16")
  assert moved.read_bytes() == damaged_bytes


def test_all_checkpoints_damaged_stop_the_run_and_stay_on_disk(uninterrupted, data_dir, tmp_path):
  run = _copy_run(uninterrupted, tmp_path / "run")
  victims = [_largest_file(run / "checkpoints" / str(step) / "state") for step in (8, 16)]
  for path in victims:
    _truncate(path)
  sizes = [path.stat().st_size for path in victims]
  for _ in range(2):  # and again: a second start does not begin from scratch either
    with pytest.raises(checkpoint.CheckpointError) as error:
      train.train_and_evaluate(tiny_config("baseline", data_dir), str(run))
    message = str(error.value)
    assert f"no checkpoint in {run / 'checkpoints'} can be restored" in message
    assert "step 16: " in message and "step 8: " in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["16", "8"]
    assert [path.stat().st_size for path in victims] == sizes


def test_damaged_teacher_best_is_refused_naming_it(data_dir, tmp_path):
  workdir = tmp_path / "mvkt"
  teacher = tiny_config("teacher", data_dir, num_epochs=1)
  train.train_and_evaluate(teacher, str(workdir / "teacher"))
  (best_step,) = (workdir / "teacher" / "best").iterdir()
  _flip_bit(_largest_file(best_step / "model"))
  files = {p: p.stat().st_mtime_ns for p in (workdir / "teacher").rglob("*")}

  student = tiny_config("mvkt", data_dir, num_epochs=1)
  with pytest.raises(checkpoint.CheckpointError) as error:
    train.train_and_evaluate(student, str(workdir))
  assert f"the checkpoint {best_step} is damaged" in str(error.value)
  assert "differs from what was saved" in str(error.value)
  # The finished teacher is neither trained again nor replaced.
  assert {p: p.stat().st_mtime_ns for p in (workdir / "teacher").rglob("*")} == files


@pytest.mark.parametrize("damage", [_truncate, _flip_bit])
def test_predict_and_export_name_the_damaged_checkpoint(uninterrupted, tmp_path, capsys, damage):
  run = _copy_run(uninterrupted, tmp_path / "run")
  (best_step,) = (run / "best").iterdir()
  damage(_largest_file(best_step / "model"))
  with pytest.raises(
    predict.RunDirError, match=re.escape(f"the checkpoint {best_step} is damaged")
  ):
    predict.Predictor(run)
  assert export.main(["--workdir", str(run), "--out", str(tmp_path / "exported")]) == 2
  assert f"the checkpoint {best_step} is damaged" in capsys.readouterr().err
