"""Runs lead_kt training on GPUs: one machine (`local`) or several under SLURM (`slurm`).

  python launch/gpu.py local --workdir=runs/mvkt [--gpus=0,1,2,3] [--dry-run] -- --config.x=y
  python launch/gpu.py slurm --nodes=4 --gpus-per-node=8 --workdir=/shared/runs/mvkt \\
    --setup='source ~/venvs/lead_kt/bin/activate' [--partition=P] [--dry-run] -- --config.x=y

`local` starts one process that drives every visible GPU (no jax.distributed). `slurm` submits a
batch script (through sbatch's standard input) that starts one process per node with `srun`;
each calls `jax.distributed.initialize()`, which reads the SLURM environment. Everything after
`--` is passed to lead_kt.main. See launch/README.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python launch/gpu.py`: make the `launch` package importable.
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch import common  # noqa: E402
from launch.common import Command, LaunchError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="launch/gpu.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  modes = parser.add_subparsers(dest="mode", required=True)
  local = modes.add_parser("local", help="one machine, one process, all its GPUs")
  local.add_argument("--gpus", help="comma-separated GPU indices (CUDA_VISIBLE_DEVICES)")
  local.add_argument("--python", default=sys.executable, help="interpreter with lead_kt")
  slurm = modes.add_parser("slurm", help="several machines under SLURM, one process per node")
  slurm.add_argument("--nodes", type=common.positive_int, required=True)
  slurm.add_argument("--gpus-per-node", type=common.positive_int, default=8)
  slurm.add_argument(
    "--cpus-per-task", type=common.positive_int, help="CPU cores per node's process"
  )
  slurm.add_argument("--partition")
  slurm.add_argument("--account")
  slurm.add_argument("--time", default="24:00:00", help="wall-clock limit, HH:MM:SS")
  slurm.add_argument("--job-name", default="lead_kt")
  slurm.add_argument("--setup", help="shell line run before srun, e.g. activating a venv")
  slurm.add_argument(
    "--repo-dir", default=str(common.REPO_ROOT), help="the repository on the cluster"
  )
  slurm.add_argument("--python", default="python", help="interpreter on the nodes")
  for sub in (local, slurm):
    sub.add_argument("--config", default=common.DEFAULT_MAIN_CONFIG)
    sub.add_argument("--workdir", required=True, help="run directory (shared storage for slurm)")
    sub.add_argument("--data-dir", help="TFDS data_dir (default: the config's)")
    sub.add_argument("--dataset", help="TFDS name (default: the config's)")
    sub.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
  """Parses and checks the arguments; entry-point flags after `--` land in `extra_flags`."""
  own, extra_flags = common.split_passthrough(argv)
  args = _parser().parse_args(own)
  args.extra_flags = extra_flags
  if args.mode == "local":
    if args.gpus is not None and not re.fullmatch(r"\d+(,\d+)*", args.gpus):
      raise LaunchError(f"--gpus {args.gpus!r} is not a comma-separated list like 0,1,2,3")
    # The process starts in the current directory, so that is where the config must be.
    common.check_config(args.config, Path.cwd(), under_config_dir=False)
  elif not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", args.time):
    raise LaunchError(f"--time {args.time!r} is not a SLURM time like 24:00:00 or 2-00:00:00")
  return args


def _entry(args: argparse.Namespace, *, multiprocess: bool) -> list[str]:
  return common.main_command(args, multiprocess=multiprocess, extra_flags=args.extra_flags)


def local_command(args: argparse.Namespace) -> Command:
  """One process on this machine; jax.jit shards over all GPUs it sees."""
  env = (("CUDA_VISIBLE_DEVICES", args.gpus),) if args.gpus is not None else ()
  return Command(tuple(_entry(args, multiprocess=False)), env=env)


def slurm_script(args: argparse.Namespace) -> str:
  """The sbatch script: one task per node, each task owning all of its node's GPUs."""
  directives = [
    f"--job-name={args.job_name}",
    f"--nodes={args.nodes}",
    "--ntasks-per-node=1",
    f"--gpus-per-node={args.gpus_per_node}",
    f"--time={args.time}",
    f"--output={args.job_name}-%j.out",
  ]
  step_options = ["--ntasks-per-node=1", f"--gpus-per-node={args.gpus_per_node}"]
  if args.cpus_per_task is not None:
    directives.append(f"--cpus-per-task={args.cpus_per_task}")
    # srun does not inherit --cpus-per-task from sbatch (SLURM >= 22.05).
    step_options.append(f"--cpus-per-task={args.cpus_per_task}")
  for name in ("partition", "account"):
    if getattr(args, name) is not None:
      directives.append(f"--{name}={getattr(args, name)}")
  local_ids = ",".join(str(index) for index in range(args.gpus_per_node))
  lines = [
    "#!/bin/bash",
    *(f"#SBATCH {directive}" for directive in directives),
    "set -eo pipefail",
    shlex.join(("cd", args.repo_dir)),
    *([args.setup] if args.setup else []),
    "# jax.distributed.initialize() reads SLURM_* to find the coordinator, the process count and",
    "# id; by default it would also pin each process to the GPU numbered SLURM_LOCALID. One",
    "# process per node drives all of the node's GPUs, so name them all.",
    f"export JAX_LOCAL_DEVICE_IDS={local_ids}",
    shlex.join(("srun", *step_options, *_entry(args, multiprocess=True))),
  ]
  return "\n".join(lines) + "\n"


def build_plan(argv: list[str]) -> tuple[list[Command], list[Command], bool]:
  """(steps, cleanup, dry_run) for the command line `argv` (without the program name)."""
  args = parse_args(argv)
  if args.mode == "local":
    return [local_command(args)], [], args.dry_run
  return [Command(("sbatch",), stdin=slurm_script(args))], [], args.dry_run


def main(argv: list[str] | None = None) -> int:
  return common.run_main(build_plan, argv)


if __name__ == "__main__":
  sys.exit(main())
