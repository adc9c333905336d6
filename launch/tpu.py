"""Runs lead_kt training or the benchmark on a Cloud TPU VM or pod slice.

Steps: create the TPU (a TPU VM, or a queued resource and a wait until it is ACTIVE), install the
project on every worker, copy the TFDS dataset to every worker's disk, run the entry point on all
workers at once (`--worker=all`, `--multiprocess=true`), and optionally delete the TPU.

  python launch/tpu.py train --project=P --zone=us-central2-b --accelerator-type=v4-32 \\
    --bucket=gs://my-bucket [--queued [--spot | --best-effort]] [--delete-after] [--dry-run] \\
    -- --config.batch_size=1024

Everything after `--` is passed to the entry point. See launch/README.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tomllib
from pathlib import Path

if __package__ in (None, ""):  # `python launch/tpu.py`: make the `launch` package importable.
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch import common  # noqa: E402
from launch.common import Command, LaunchError  # noqa: E402

# Runtime (software) versions Google recommends for JAX, by TPU generation.
_RUNTIME_BY_GENERATION = {
  "v2": "tpu-ubuntu2204-base",
  "v3": "tpu-ubuntu2204-base",
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
# The TPU VM images ship Python 3.10; the project needs >= 3.11, so uv provides the interpreter.
DEFAULT_REMOTE_PYTHON = "3.12"
DEFAULT_REMOTE_DIR = "/tmp/lead_kt"
# Installed next to the wheel: the TPU runtime, and gcsfs because without TensorFlow the gs://
# paths of orbax and TFDS go through etils.epath's fsspec backend.
REMOTE_EXTRA_PACKAGES = ("jax[tpu]", "gcsfs")
QUEUED_FAILURE_STATES = frozenset({"FAILED", "SUSPENDING", "SUSPENDED"})


def default_runtime_version(accelerator_type: str) -> str:
  """The recommended runtime version for e.g. 'v4-32' or 'v5litepod-16'."""
  generation = accelerator_type.rsplit("-", 1)[0]
  if generation not in _RUNTIME_BY_GENERATION:
    raise LaunchError(
      f"no default runtime version for accelerator type {accelerator_type!r}; "
      "pass --runtime-version"
    )
  return _RUNTIME_BY_GENERATION[generation]


def wheel_filename(root: Path) -> str:
  """Name of the pure-Python wheel that `pip wheel` builds from root/pyproject.toml."""
  pyproject = root / "pyproject.toml"
  if not pyproject.is_file():
    raise LaunchError(f"{pyproject} does not exist: launch/ must sit in the lead_kt repository")
  project = tomllib.loads(pyproject.read_text())["project"]
  name = re.sub(r"[-_.]+", "_", project["name"]).lower()
  return f"{name}-{project['version']}-py3-none-any.whl"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="launch/tpu.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("mode", choices=("train", "bench"), help="lead_kt.main or lead_kt.bench")
  parser.add_argument("--project", required=True, help="Google Cloud project id")
  parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
  parser.add_argument("--accelerator-type", required=True, help="e.g. v4-32, v5litepod-16")
  parser.add_argument("--runtime-version", help="TPU software version (default: by generation)")
  parser.add_argument("--bucket", required=True, help="gs://BUCKET[/PREFIX] for code and runs")
  parser.add_argument("--name", help="TPU (and queued resource) name; default lead-kt-ACCEL")
  parser.add_argument(
    "--config", help=f"default {common.DEFAULT_MAIN_CONFIG} (train), {common.DEFAULT_BENCH_CONFIG}"
  )
  parser.add_argument("--workdir", help="gs:// run directory; train default BUCKET/workdirs/NAME")
  parser.add_argument(
    "--data-dir", help="gs:// TFDS data_dir; train default BUCKET/tensorflow_datasets"
  )
  parser.add_argument("--dataset", help="TFDS name to copy and use (default: the whole data_dir)")
  parser.add_argument(
    "--no-stage-data",
    dest="stage_data",
    action="store_false",
    help="pass the gs:// data_dir to the entry point instead of copying it to the workers",
  )
  parser.add_argument("--queued", action="store_true", help="create a queued resource")
  capacity = parser.add_mutually_exclusive_group()
  capacity.add_argument("--spot", action="store_true", help="Spot TPU (preemptible)")
  capacity.add_argument("--best-effort", action="store_true", help="queued best-effort (alpha)")
  parser.add_argument("--skip-create", action="store_true", help="the TPU exists already")
  parser.add_argument("--skip-install", action="store_true", help="the workers are set up")
  parser.add_argument("--delete-after", action="store_true", help="delete the TPU at the end")
  parser.add_argument("--python-version", default=DEFAULT_REMOTE_PYTHON)
  parser.add_argument("--remote-dir", default=DEFAULT_REMOTE_DIR, help="folder on the workers")
  parser.add_argument("--poll-interval", type=float, default=30.0, help="seconds between checks")
  parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
  """Parses and checks the arguments; entry-point flags after `--` land in `extra_flags`."""
  own, extra_flags = common.split_passthrough(argv)
  args = _parser().parse_args(own)
  args.extra_flags = extra_flags
  args.repo = common.REPO_ROOT
  if not re.fullmatch(r"v\d+[a-z]*-\d+", args.accelerator_type):
    raise LaunchError(f"--accelerator-type {args.accelerator_type!r} is not like v4-32")
  args.runtime_version = args.runtime_version or default_runtime_version(args.accelerator_type)
  args.name = args.name or f"lead-kt-{args.accelerator_type}"
  if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", args.name):
    raise LaunchError(f"--name {args.name!r}: use lowercase letters, digits and '-'")
  if args.best_effort and not args.queued:
    raise LaunchError("--best-effort needs --queued (only queued resources offer it)")
  if args.dataset is not None and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?(:[\w.]+)?", args.dataset):
    raise LaunchError(f"--dataset {args.dataset!r} is not a TFDS name like ptbxl/config:1.0.0")
  if not args.remote_dir.startswith("/"):
    raise LaunchError(f"--remote-dir {args.remote_dir!r} must be an absolute path")
  args.bucket = common.check_gcs_uri("--bucket", args.bucket)
  training = args.mode == "train"
  args.config = common.check_config(
    args.config or (common.DEFAULT_MAIN_CONFIG if training else common.DEFAULT_BENCH_CONFIG),
    args.repo,
    under_config_dir=True,
  )
  if args.workdir is None and training:
    args.workdir = f"{args.bucket}/workdirs/{args.name}"
  if args.workdir is not None:
    args.workdir = common.check_gcs_uri("--workdir", args.workdir)
  if args.data_dir is None and training:
    args.data_dir = f"{args.bucket}/tensorflow_datasets"
  if args.data_dir is not None:
    args.data_dir = common.check_gcs_uri("--data-dir", args.data_dir)
  elif args.dataset is not None:
    raise LaunchError("--dataset needs --data-dir (the gs:// TFDS data_dir holding it)")
  return args


def _gcloud_tpus(args: argparse.Namespace, *words: str, alpha: bool = False) -> tuple[str, ...]:
  release = ("alpha",) if alpha else ()
  where = (f"--project={args.project}", f"--zone={args.zone}")
  return ("gcloud", *release, "compute", "tpus", *words, *where)


def _on_all_workers(args: argparse.Namespace, *shell_lines: str) -> Command:
  """`shell_lines` run by bash on every worker of the TPU, stopping at the first failure."""
  script = "; ".join(["set -e", *shell_lines])
  return Command(
    _gcloud_tpus(args, "tpu-vm", "ssh", args.name) + ("--worker=all", f"--command={script}")
  )


def create_commands(args: argparse.Namespace) -> list[Command]:
  """Creates the TPU; for a queued resource also waits until it is ACTIVE."""
  if not args.queued:
    spot = ("--spot",) if args.spot else ()
    create = _gcloud_tpus(
      args,
      "tpu-vm",
      "create",
      args.name,
      f"--accelerator-type={args.accelerator_type}",
      f"--version={args.runtime_version}",
      *spot,
    )
    return [Command(create)]
  capacity = ("--spot",) if args.spot else ("--best-effort",) if args.best_effort else ()
  create = _gcloud_tpus(
    args,
    "queued-resources",
    "create",
    args.name,
    f"--node-id={args.name}",
    f"--accelerator-type={args.accelerator_type}",
    f"--runtime-version={args.runtime_version}",
    *capacity,
    alpha=args.best_effort,
  )
  describe = _gcloud_tpus(
    args, "queued-resources", "describe", args.name, "--format=value(state.state)"
  )
  wait = Command(
    describe,
    poll_until="ACTIVE",
    failure_outputs=QUEUED_FAILURE_STATES,
    poll_interval_s=args.poll_interval,
  )
  return [Command(create), wait]


def _code_uri(args: argparse.Namespace) -> str:
  return f"{args.bucket}/code/{args.name}"


def install_commands(args: argparse.Namespace) -> list[Command]:
  """Builds the wheel here, uploads it and configs/, installs both on every worker."""
  wheel = wheel_filename(args.repo)
  local_wheel = args.repo / "dist" / wheel
  code, remote = _code_uri(args), args.remote_dir
  venv, configs = f"{remote}/venv", common.CONFIG_DIR
  sync = ("gcloud", "storage", "rsync", "--recursive", "--delete-unmatched-destination-objects")
  build = (sys.executable, "-m", "pip", "wheel", "--no-deps", f"--wheel-dir={local_wheel.parent}")
  create_venv = ("python3", "-m", "uv", "venv", f"--python={args.python_version}", venv)
  install = ("python3", "-m", "uv", "pip", "install", f"--python={venv}/bin/python")
  install += ("--reinstall-package=lead_kt", f"{remote}/{wheel}", *REMOTE_EXTRA_PACKAGES)
  setup = _on_all_workers(
    args,
    shlex.join(("mkdir", "-p", remote)),
    shlex.join(("gcloud", "storage", "cp", f"{code}/{wheel}", f"{remote}/{wheel}")),
    shlex.join((*sync, f"{code}/{configs}", f"{remote}/{configs}")),
    "python3 -m pip install --user --quiet --upgrade uv",
    f"[ -x {shlex.quote(venv)}/bin/python ] || {shlex.join(create_venv)}",
    shlex.join(install),
  )
  return [
    Command((*build, str(args.repo))),
    Command(("gcloud", "storage", "cp", str(local_wheel), f"{code}/{wheel}")),
    Command((*sync, str(args.repo / configs), f"{code}/{configs}")),
    setup,
  ]


def _local_data_dir(args: argparse.Namespace) -> str:
  return f"{args.remote_dir}/tensorflow_datasets"


def stage_data_command(args: argparse.Namespace) -> Command:
  """Copies the dataset (or the whole data_dir) from Cloud Storage to every worker's disk.

  array_record (the file format of `builder.as_data_source()`) opens local files only
  (google/array_record issue 120), so the workers read a local copy.
  """
  subdir = f"/{args.dataset.replace(':', '/')}" if args.dataset else ""
  source, target = f"{args.data_dir}{subdir}", f"{_local_data_dir(args)}{subdir}"
  return _on_all_workers(
    args,
    shlex.join(("mkdir", "-p", target)),
    shlex.join(("gcloud", "storage", "rsync", "--recursive", source, target)),
  )


def run_command(args: argparse.Namespace) -> Command:
  """Starts the entry point on all workers; JAX finds the TPU topology by itself."""
  staged = args.stage_data and args.data_dir is not None
  entry = common.entry_command(
    f"{args.remote_dir}/venv/bin/python",
    common.MAIN_MODULE if args.mode == "train" else common.BENCH_MODULE,
    args.config,
    workdir=args.workdir,
    data_dir=_local_data_dir(args) if staged else args.data_dir,
    dataset=args.dataset,
    multiprocess=True,
    extra_flags=args.extra_flags,
  )
  return _on_all_workers(args, shlex.join(("cd", args.remote_dir)), shlex.join(entry))


def delete_command(args: argparse.Namespace) -> Command:
  """Deletes the TPU; `--force` makes a queued resource take its TPU VMs along."""
  if args.queued:
    words = ("queued-resources", "delete", args.name, "--force")
  else:
    words = ("tpu-vm", "delete", args.name)
  return Command(_gcloud_tpus(args, *words, "--quiet"))


def build_plan(argv: list[str]) -> tuple[list[Command], list[Command], bool]:
  """(steps, cleanup, dry_run) for the command line `argv` (without the program name)."""
  args = parse_args(argv)
  steps = [] if args.skip_create else create_commands(args)
  if not args.skip_install:
    steps += install_commands(args)
  if args.stage_data and args.data_dir is not None:
    steps.append(stage_data_command(args))
  steps.append(run_command(args))
  cleanup = [delete_command(args)] if args.delete_after else []
  return steps, cleanup, args.dry_run


def main(argv: list[str] | None = None) -> int:
  return common.run_main(build_plan, argv)


if __name__ == "__main__":
  sys.exit(main())
