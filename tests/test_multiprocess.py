"""Real multi-process runs (jax.distributed, gloo) on this machine, started by launch/local.py.

MVKT on the bundled PTB-XL sample (train_helpers.tiny_config: 2 epochs of 8 steps, checkpoints at
steps 8 and 16) with a teacher trained once here. 2 processes x 2 CPU devices must train exactly
as 1 process x 4 devices, with the memory bank replicated or split over the data axis; a process
killed with SIGKILL makes the survivor exit within the heartbeat timeout, and a SIGTERM to the job
checkpoints; both resume to the uninterrupted run's parameters.
"""

import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX.proto import event_pb2
from train_helpers import tiny_config

from launch import local
from launch.common import Command
from lead_kt import train

REPO = pathlib.Path(__file__).parent.parent
STEPS_PER_EPOCH = 8  # the tiny config's records over its batch size
TOTAL_STEPS = 2 * STEPS_PER_EPOCH
# A survivor must notice a dead peer within the heartbeat timeout; the test allows scheduling
# slack on a loaded machine on top of it.
HEARTBEAT_TIMEOUT_S = 10
NOTICE_BOUND_S = HEARTBEAT_TIMEOUT_S + 15
RUN_TIMEOUT_S = 600

_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
from train_helpers import tiny_config

def get_config():
  return tiny_config("mvkt", {data_dir!r}, **{overrides!r})
"""


def test_dry_run_prints_one_command_per_process(capsys):
  argv = ["--processes=3", "--devices-per-process=2", "--port=1234", "--workdir=w", "--dry-run"]
  assert local.main([*argv, "--", "--config.seed=5"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3
  for process_id, line in enumerate(lines):
    assert line.startswith("JAX_PLATFORMS=cpu XLA_FLAGS=")
    assert "--xla_force_host_platform_device_count=2 " in line
    assert line.endswith(
      "-m lead_kt.main --config=configs/mvkt.py --workdir=w --multiprocess=true "
      "--coordinator_address=127.0.0.1:1234 --num_processes=3 "
      f"--process_id={process_id} --config.seed=5"
    )


def test_a_failing_process_fails_the_job_and_the_others_are_killed_after_the_grace(tmp_path):
  commands = [
    Command((sys.executable, "-c", "import time; time.sleep(60)")),
    Command((sys.executable, "-c", "import sys; sys.exit(3)")),
  ]
  started = time.monotonic()
  assert local.run_processes(commands, tmp_path, grace_s=1) == 3
  assert time.monotonic() - started < 30


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  """A config file for lead_kt.main: tiny MVKT with a trained teacher, losses logged every step."""
  root = tmp_path_factory.mktemp("multiprocess")
  data_dir = str(root / "tfds")
  teacher = train.teacher_config(tiny_config("mvkt", data_dir))
  teacher.num_epochs = 1
  train.train_and_evaluate(teacher, str(root / "teacher"))
  overrides = {"teacher.checkpoint": str(root / "teacher"), "log_every_steps": 1}
  path = root / "tiny_mvkt.py"
  path.write_text(
    _CONFIG_FILE.format(tests=str(REPO / "tests"), data_dir=data_dir, overrides=overrides)
  )
  return path


class Job:
  """One `launch.local` job; its output (process 0's and the launcher's) goes to `log`."""

  def __init__(self, config_file, workdir, processes, devices, *flags):
    self.workdir = workdir
    self.log = workdir.parent / f"{workdir.name}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "launch.local", f"--processes={processes}"]
    command += [f"--devices-per-process={devices}", f"--config={config_file}"]
    command += [f"--workdir={workdir}", f"--log-dir={self.log.with_suffix('')}"]
    # Long enough that a survivor is seen to exit by itself, not killed by the launcher.
    command += [f"--grace-s={3 * NOTICE_BOUND_S}", "--"]
    command += [f"--heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}", *flags]
    with open(self.log, "w") as log:
      self.launcher = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)

  def text(self) -> str:
    return self.log.read_text(errors="replace")

  def pid(self, process_id: int) -> int:
    return int(re.search(rf"launch.local: process {process_id}: pid (\d+)", self.text())[1])

  def wait_for_step(self, step: int) -> None:
    """Until process 0 has logged training step `step`."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while f" step {step}/{TOTAL_STEPS} " not in self.text():
      assert self.launcher.poll() is None, self.text()[-5000:]
      assert time.monotonic() < deadline, self.text()[-5000:]
      time.sleep(0.05)

  def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
    try:
      return self.launcher.wait(timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f"the job ran past {timeout} s:\n{self.text()[-5000:]}")

  def stop(self) -> None:
    """Ends whatever is left of the job: the launcher kills its processes on the way out; only a
    launcher that has to be killed itself leaves them to us."""
    if self.launcher.poll() is not None:
      return
    self.launcher.send_signal(signal.SIGINT)
    try:
      self.launcher.wait(30)
    except subprocess.TimeoutExpired:
      self.launcher.kill()
      self.launcher.wait()
      for pid in re.findall(r"launch.local: process \d+: pid (\d+)", self.text()):
        try:
          os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
          pass


def _run(config_file, workdir, processes, devices, *flags) -> Job:
  """A job run to its end, which must be a success."""
  job = Job(config_file, workdir, processes, devices, *flags)
  try:
    assert job.wait() == 0, job.text()[-5000:]
  finally:
    job.stop()
  return job


def _train_losses(workdir: pathlib.Path) -> dict[int, float]:
  """train/loss by step from the TensorBoard event files (TFRecord framing: length, CRC, data,
  CRC)."""
  losses = {}
  for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    data = path.read_bytes()
    position = 0
    while position < len(data):
      (length,) = struct.unpack("<Q", data[position : position + 8])
      event = event_pb2.Event.FromString(data[position + 12 : position + 12 + length])
      position += 12 + length + 4
      for value in event.summary.value:
        if value.tag == "train/loss":
          losses[event.step] = value.simple_value
  return losses


def _final_params(workdir: pathlib.Path):
  """The parameters of the last checkpoint, as numpy arrays (whatever devices saved them)."""
  path = workdir / "checkpoints" / str(TOTAL_STEPS) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return state["params"]


def _test_metrics(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "results.json").read_text())["test"]


def _assert_same_run(run: pathlib.Path, reference: pathlib.Path, exact: bool) -> None:
  """Final parameters and test metrics equal: bit for bit, or up to the float reordering of other
  reductions (each leaf within 1e-4 of its largest value: Adam's normalised updates amplify
  last-bit differences of tiny gradients over the steps). Test metrics within 1e-4: the
  thresholds are probabilities and move with the parameters; one record ranked or thresholded
  differently would move an AUC, accuracy or F1 on 53 records by far more."""

  def check_leaf(actual, expected):
    atol = 0 if exact else 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)

  jax.tree.map(check_leaf, _final_params(run), _final_params(reference))
  metrics, expected = _test_metrics(run), _test_metrics(reference)
  assert metrics.keys() == expected.keys()
  atol = 0 if exact else 1e-4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=atol), metrics, expected)


def _assert_same_losses(run: pathlib.Path, reference: pathlib.Path) -> None:
  losses, expected = _train_losses(run), _train_losses(reference)
  assert sorted(losses) == list(range(1, TOTAL_STEPS + 1)) == sorted(expected)
  np.testing.assert_allclose([losses[s] for s in expected], list(expected.values()), rtol=1e-5)


@pytest.fixture(scope="module")
def one_process(config_file, tmp_path_factory):
  """The reference: 1 process x 4 devices, the bank replicated."""
  return _run(config_file, tmp_path_factory.mktemp("one_process") / "run", 1, 4).workdir


@pytest.fixture(scope="module")
def two_processes_sharded_bank(config_file, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two_processes") / "run"
  return _run(config_file, workdir, 2, 2, "--config.clt.bank_sharding=data").workdir


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_bank_replicated(config_file, one_process, tmp_path):
  job = _run(config_file, tmp_path / "run", 2, 2)
  _assert_same_losses(job.workdir, one_process)
  _assert_same_run(job.workdir, one_process, exact=False)
  assert "process 0 of 2, 2 local / 4 global devices" in job.text()
  # Process 1 trained along (its log says so) but wrote no progress line and no events.
  other = (job.log.with_suffix("") / "process_1.log").read_text()
  assert "process 1 of 2" in other and f" step {TOTAL_STEPS}/" not in other
  assert len(list((job.workdir / "tensorboard").iterdir())) == 1


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_bank_sharded(one_process, two_processes_sharded_bank):
  _assert_same_losses(two_processes_sharded_bank, one_process)
  _assert_same_run(two_processes_sharded_bank, one_process, exact=False)


@pytest.mark.slow
def test_sigkill_of_a_process_stops_the_other_in_bounded_time_and_restart_resumes(
  config_file, two_processes_sharded_bank, tmp_path
):
  workdir = tmp_path / "run"
  kill_step = int(np.random.default_rng().integers(10, TOTAL_STEPS))  # after step 8's checkpoint
  job = Job(config_file, workdir, 2, 2, "--config.clt.bank_sharding=data")
  try:
    job.wait_for_step(kill_step)
    os.kill(job.pid(1), signal.SIGKILL)
    killed_at = time.monotonic()
    returncode = job.wait()
    noticed_s = time.monotonic() - killed_at
  finally:
    job.stop()
  text = job.text()
  assert returncode == 128 + signal.SIGKILL, text[-5000:]
  survivor = re.search(r"process 0 exited with (.+), ([\d.]+) s after the first failure", text)
  assert survivor and survivor[1] != "status 0", text[-5000:]  # it failed by itself ...
  assert noticed_s < NOTICE_BOUND_S, f"process 0 noticed after {noticed_s:.1f} s"  # ... in time
  print(f"process 0 noticed the dead process 1 after {noticed_s:.1f} s ({survivor[1]})")
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [8], steps  # the last complete checkpoint, nothing half-written counts

  _run(config_file, workdir, 2, 2, "--config.clt.bank_sharding=data")
  _assert_same_run(workdir, two_processes_sharded_bank, exact=True)


@pytest.mark.slow
def test_sigterm_checkpoints_every_process_and_restart_resumes_exactly(
  config_file, two_processes_sharded_bank, tmp_path
):
  workdir = tmp_path / "run"
  job = Job(config_file, workdir, 2, 2, "--config.clt.bank_sharding=data")
  try:
    job.wait_for_step(3)
    job.launcher.send_signal(signal.SIGTERM)  # forwarded to both processes
    assert job.wait() == 0, job.text()[-5000:]
  finally:
    job.stop()
  preempted = re.search(r"preempted at step (\d+)", job.text())
  assert preempted, job.text()[-5000:]
  # The processes agree on a stop step after the signal (how far they ran on depends on the
  # machine's speed); the run ends there, with that step saved beside the epoch ends before it.
  stop_step = int(preempted[1])
  assert 3 <= stop_step < TOTAL_STEPS
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == stop_step and all(s % STEPS_PER_EPOCH == 0 for s in steps[:-1]), steps

  _run(config_file, workdir, 2, 2, "--config.clt.bank_sharding=data")
  _assert_same_run(workdir, two_processes_sharded_bank, exact=True)
