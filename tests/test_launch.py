"""Dry runs of the cloud launchers (launch/): the printed commands, argument errors, execution."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `launch` is not an installed package.
  sys.path.insert(0, str(REPO_ROOT))

from launch import common, gpu, tpu  # noqa: E402

BASE_TPU = ["--project=my-proj", "--zone=us-central2-b", "--accelerator-type=v4-32"]
BASE_TPU += ["--bucket=gs://my-bucket/lead"]
PASSTHROUGH = ["--", "--config.batch_size=1024", "--config.seed=3"]


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
  """A repository with pyproject.toml and configs/, made the launchers' REPO_ROOT."""
  (tmp_path / "pyproject.toml").write_text('[project]\nname = "lead_kt"\nversion = "9.8.7"\n')
  (tmp_path / "configs").mkdir()
  for name in ("mvkt.py", "bench.py"):
    (tmp_path / "configs" / name).write_text("def get_config():\n  return None\n")
  monkeypatch.setattr(common, "REPO_ROOT", tmp_path)
  return tmp_path


@pytest.fixture
def no_subprocess(monkeypatch):
  """Makes any attempt to start a program fail the test."""

  def forbidden(*args, **kwargs):
    raise AssertionError(f"a dry run started a program: {args}")

  for name in ("run", "Popen", "call", "check_call", "check_output"):
    monkeypatch.setattr(subprocess, name, forbidden)
  monkeypatch.setattr(os, "system", forbidden)


def dry_run(module, argv, capsys) -> list[list[str]]:
  """Runs `module.main` on `argv` with --dry-run; returns the printed commands as argv lists."""
  mode, *rest = argv
  assert module.main([mode, "--dry-run", *rest]) == 0
  return [shlex.split(line, comments=True) for line in capsys.readouterr().out.splitlines()]


def remote_words(command: list[str]) -> list[str]:
  """The words of the shell script a `gcloud ... ssh --command=SCRIPT` command runs."""
  (script,) = [word.removeprefix("--command=") for word in command if word.startswith("--command=")]
  return shlex.split(script)


def test_tpu_vm_train_dry_run_prints_every_step(fake_repo, no_subprocess, capsys):
  commands = dry_run(tpu, ["train", *BASE_TPU, *PASSTHROUGH], capsys)
  create, build, upload_wheel, upload_configs, install, stage, run = commands
  assert create == [
    "gcloud", "compute", "tpus", "tpu-vm", "create", "lead-kt-v4-32",
    "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
    "--project=my-proj", "--zone=us-central2-b",
  ]  # fmt: skip
  wheel = "lead_kt-9.8.7-py3-none-any.whl"
  assert build[1:4] == ["-m", "pip", "wheel"] and build[-1] == str(fake_repo)
  code = "gs://my-bucket/lead/code/lead-kt-v4-32"
  assert upload_wheel == ["gcloud", "storage", "cp", f"{fake_repo}/dist/{wheel}", f"{code}/{wheel}"]
  assert upload_configs[-2:] == [f"{fake_repo}/configs", f"{code}/configs"]
  for ssh in (install, stage, run):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lead-kt-v4-32"]
    assert "--worker=all" in ssh and "--zone=us-central2-b" in ssh
  assert f"/tmp/lead_kt/{wheel}" in remote_words(install)
  assert "jax[tpu]" in remote_words(install)
  assert "gs://my-bucket/lead/tensorflow_datasets" in remote_words(stage)
  entry = remote_words(run)
  main_at = entry.index("/tmp/lead_kt/venv/bin/python")
  assert entry[main_at:] == [
    "/tmp/lead_kt/venv/bin/python", "-m", "lead_kt.main", "--config=configs/mvkt.py",
    "--workdir=gs://my-bucket/lead/workdirs/lead-kt-v4-32", "--multiprocess=true",
    "--config.data.data_dir=/tmp/lead_kt/tensorflow_datasets",
    "--config.batch_size=1024", "--config.seed=3",
  ]  # fmt: skip


def test_tpu_queued_spot_waits_and_deletes(fake_repo, no_subprocess, capsys):
  argv = ["train", *BASE_TPU, "--queued", "--spot", "--delete-after", "--name=exp1"]
  commands = dry_run(tpu, argv + ["--skip-install", "--runtime-version=v2-alpha-tpuv5"], capsys)
  create, wait, stage, run, delete = commands
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "exp1"]
  assert {"--node-id=exp1", "--accelerator-type=v4-32", "--spot"} <= set(create)
  assert "--runtime-version=v2-alpha-tpuv5" in create
  assert wait[3:6] == ["queued-resources", "describe", "exp1"]
  assert "--format=value(state.state)" in wait
  assert "--worker=all" in stage and "--worker=all" in run
  assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "exp1"]
  assert "--force" in delete
  steps, _, _ = tpu.build_plan([*argv, "--poll-interval=7"])
  assert (steps[1].poll_until, steps[1].poll_interval_s) == ("ACTIVE", 7)
  assert "FAILED" in steps[1].failure_outputs


def test_tpu_best_effort_needs_alpha_and_a_queued_resource(fake_repo, no_subprocess, capsys):
  commands = dry_run(tpu, ["train", *BASE_TPU, "--queued", "--best-effort"], capsys)
  assert commands[0][:5] == ["gcloud", "alpha", "compute", "tpus", "queued-resources"]
  assert "--best-effort" in commands[0]
  assert tpu.main(["train", *BASE_TPU, "--best-effort", "--dry-run"]) == 2
  assert "--best-effort needs --queued" in capsys.readouterr().err


def test_tpu_bench_runs_lead_kt_bench_on_all_workers(fake_repo, no_subprocess, capsys):
  commands = dry_run(tpu, ["bench", *BASE_TPU, "--skip-create", "--skip-install"], capsys)
  (run,) = commands  # no data to stage unless asked for
  assert "--worker=all" in run
  entry = remote_words(run)
  assert entry[entry.index("-m") :] == [
    "-m", "lead_kt.bench", "--config=configs/bench.py", "--multiprocess=true",
  ]  # fmt: skip


def test_tpu_dataset_staging_and_gcs_passthrough(fake_repo, no_subprocess, capsys):
  argv = ["train", *BASE_TPU, "--skip-create", "--skip-install", "--data-dir=gs://d/tfds"]
  stage, run = dry_run(tpu, argv + ["--dataset=ptbxl/superdiagnostic_100hz:1.0.0"], capsys)
  local = "/tmp/lead_kt/tensorflow_datasets/ptbxl/superdiagnostic_100hz/1.0.0"
  assert remote_words(stage)[-2:] == ["gs://d/tfds/ptbxl/superdiagnostic_100hz/1.0.0", local]
  assert "--config.data.name=ptbxl/superdiagnostic_100hz:1.0.0" in remote_words(run)
  (run,) = dry_run(tpu, argv + ["--no-stage-data"], capsys)
  assert "--config.data.data_dir=gs://d/tfds" in remote_words(run)


def test_tpu_worker_scripts_are_valid_bash(fake_repo):
  steps, _, _ = tpu.build_plan(["train", *BASE_TPU, "--dataset=ptbxl/x", *PASSTHROUGH])
  scripts = [word for step in steps for word in step.argv if word.startswith("--command=")]
  assert len(scripts) == 3
  for script in scripts:
    check = subprocess.run(["bash", "-n", "-c", script.removeprefix("--command=")])
    assert check.returncode == 0, script


@pytest.mark.parametrize(
  ("change", "message"),
  [
    ({"--bucket": "my-bucket"}, "--bucket must be a Cloud Storage URI"),
    ({"--workdir": "/local/dir"}, "--workdir must be a Cloud Storage URI"),
    ({"--accelerator-type": "v9x-8"}, "pass --runtime-version"),
    ({"--accelerator-type": "tpu"}, "is not like v4-32"),
    ({"--config": "other/mvkt.py"}, "inside configs/"),
    ({"--config": "configs/missing.py"}, "does not exist"),
    ({"--name": "Bad_Name"}, "lowercase"),
  ],
)
def test_tpu_rejects_bad_arguments(fake_repo, no_subprocess, capsys, change, message):
  args = dict(arg.split("=", 1) for arg in BASE_TPU) | change
  assert tpu.main(["train", *(f"{k}={v}" for k, v in args.items()), "--dry-run"]) == 2
  assert message in capsys.readouterr().err


def test_missing_argument_and_stray_passthrough_fail(fake_repo, no_subprocess, capsys):
  with pytest.raises(SystemExit) as exit_info:
    tpu.main(["train", "--zone=z", "--accelerator-type=v4-8", "--bucket=gs://b", "--dry-run"])
  assert exit_info.value.code == 2
  assert "--project" in capsys.readouterr().err
  assert tpu.main(["train", *BASE_TPU, "--dry-run", "--", "batch_size=8"]) == 2
  assert "is not a flag" in capsys.readouterr().err


def test_default_runtime_versions_and_real_wheel_name():
  assert tpu.default_runtime_version("v5litepod-16") == "v2-alpha-tpuv5-lite"
  assert tpu.default_runtime_version("v6e-8") == "v2-alpha-tpuv6e"
  assert tpu.default_runtime_version("v5p-128") == "v2-alpha-tpuv5"
  wheel = tpu.wheel_filename(REPO_ROOT)
  assert wheel.startswith("lead_kt-") and wheel.endswith("-py3-none-any.whl")


def test_gpu_local_uses_one_process_for_the_chosen_gpus(
  fake_repo, no_subprocess, capsys, monkeypatch
):
  monkeypatch.chdir(fake_repo)
  argv = ["local", "--workdir=/runs/a", "--gpus=0,2", "--data-dir=/data/tfds", *PASSTHROUGH]
  (command,) = dry_run(gpu, argv, capsys)
  assert command[0] == "CUDA_VISIBLE_DEVICES=0,2"
  assert command[2:] == [
    "-m", "lead_kt.main", "--config=configs/mvkt.py", "--workdir=/runs/a",
    "--config.data.data_dir=/data/tfds", "--config.batch_size=1024", "--config.seed=3",
  ]  # fmt: skip
  assert gpu.main(["local", "--workdir=/r", "--gpus=0;1", "--dry-run"]) == 2
  assert "--gpus" in capsys.readouterr().err


def test_gpu_slurm_script_runs_one_multiprocess_task_per_node(no_subprocess, capsys):
  argv = ["slurm", "--nodes=4", "--gpus-per-node=4", "--workdir=/shared/run", "--partition=a100"]
  assert gpu.main([*argv, "--setup=source /env/bin/activate", "--dry-run", *PASSTHROUGH]) == 0
  printed = capsys.readouterr().out
  first, *script, last = printed.rstrip("\n").splitlines()
  assert first == f"sbatch <<'{common.HEREDOC_END}'" and last == common.HEREDOC_END
  assert script[0] == "#!/bin/bash"
  for directive in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=4", "--partition=a100"):
    assert f"#SBATCH {directive}" in script
  assert "source /env/bin/activate" in script
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3" in script
  srun = shlex.split(script[-1])
  assert srun[:3] == ["srun", "--ntasks-per-node=1", "--gpus-per-node=4"]
  assert srun[3:] == [
    "python", "-m", "lead_kt.main", "--config=configs/mvkt.py", "--workdir=/shared/run",
    "--multiprocess=true", "--config.batch_size=1024", "--config.seed=3",
  ]  # fmt: skip


def test_printed_slurm_submission_is_valid_bash(capsys):
  assert (
    gpu.main(["slurm", "--nodes=2", "--workdir=/w", "--dry-run", "--", "--config.x='a b'"]) == 0
  )
  check = subprocess.run(["bash", "-n"], input=capsys.readouterr().out, text=True)
  assert check.returncode == 0


def test_scripts_run_as_files_and_as_modules(fake_repo):
  as_file = subprocess.run(
    [sys.executable, str(REPO_ROOT / "launch" / "gpu.py"), "local", "--workdir=/w", "--dry-run"],
    cwd=fake_repo,
    capture_output=True,
    text=True,
  )
  assert as_file.returncode == 0, as_file.stderr
  assert "-m lead_kt.main --config=configs/mvkt.py --workdir=/w" in as_file.stdout
  as_module = subprocess.run(
    [sys.executable, "-m", "launch.tpu", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
  )
  assert as_module.returncode == 0 and "--accelerator-type" in as_module.stdout


class FakeRunner:
  """Stands in for subprocess.run: records calls, answers polls from a list of outputs."""

  def __init__(self, poll_outputs=(), fail_on=None):
    self.calls, self.poll_outputs, self.fail_on = [], list(poll_outputs), fail_on

  def __call__(self, argv, **kwargs):
    self.calls.append((argv, kwargs))
    if argv[0] == self.fail_on:
      raise subprocess.CalledProcessError(1, argv)
    stdout = self.poll_outputs.pop(0) if kwargs.get("capture_output") else None
    return subprocess.CompletedProcess(argv, 0, stdout=stdout)


def test_execute_polls_until_active_then_runs_the_rest(capsys):
  runner, sleeps = FakeRunner(["WAITING_FOR_RESOURCES\n", "PROVISIONING", "ACTIVE\n"]), []
  wait = common.Command(
    ("describe",), poll_until="ACTIVE", failure_outputs=frozenset({"FAILED"}), poll_interval_s=5
  )
  steps = [common.Command(("create",)), wait, common.Command(("run",), env=(("A", "1"),))]
  common.execute(steps, dry_run=False, runner=runner, sleep=sleeps.append)
  assert [argv[0] for argv, _ in runner.calls] == [
    "create",
    "describe",
    "describe",
    "describe",
    "run",
  ]
  assert sleeps == [5, 5]
  assert runner.calls[-1][1]["env"]["A"] == "1"
  assert "+ A=1 run" in capsys.readouterr().out


def test_execute_stops_on_failed_queue_and_still_cleans_up():
  runner = FakeRunner(["FAILED"])
  wait = common.Command(("describe",), poll_until="ACTIVE", failure_outputs=frozenset({"FAILED"}))
  delete = common.Command(("delete",))
  with pytest.raises(common.LaunchError, match="reports FAILED"):
    common.execute([wait, common.Command(("run",))], cleanup=[delete], dry_run=False, runner=runner)
  assert [argv[0] for argv, _ in runner.calls] == ["describe", "delete"]
  runner = FakeRunner(fail_on="run")
  with pytest.raises(subprocess.CalledProcessError):
    common.execute([common.Command(("run",))], cleanup=[delete], dry_run=False, runner=runner)
  assert [argv[0] for argv, _ in runner.calls] == ["run", "delete"]


def test_execute_feeds_the_slurm_script_to_sbatch():
  runner = FakeRunner()
  common.execute([common.Command(("sbatch",), stdin="#!/bin/bash\n")], dry_run=False, runner=runner)
  ((argv, kwargs),) = runner.calls
  assert argv == ["sbatch"] and kwargs["input"] == "#!/bin/bash\n"
