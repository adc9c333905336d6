"""Pieces shared by the launchers: commands, argument checks and a dry-run aware executor."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN_MODULE = "lead_kt.main"
BENCH_MODULE = "lead_kt.bench"
DEFAULT_MAIN_CONFIG = "configs/mvkt.py"
DEFAULT_BENCH_CONFIG = "configs/bench.py"
CONFIG_DIR = "configs"
HEREDOC_END = "LEAD_KT_EOF"


class LaunchError(ValueError):
  """A launcher argument (or a cloud resource) is unusable; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Command:
  """One program invocation, never interpreted by a local shell.

  argv: the program and its arguments.
  env: (name, value) pairs added to the inherited environment.
  poll_until: when set, the command is re-run until its stripped stdout equals this value.
  failure_outputs: stdout values that end the polling with an error.
  poll_interval_s: seconds between two runs of a polled command.
  stdin: text fed to the program's standard input (rendered as a here-document).
  """

  argv: tuple[str, ...]
  env: tuple[tuple[str, str], ...] = ()
  poll_until: str | None = None
  failure_outputs: frozenset[str] = frozenset()
  poll_interval_s: float = 30.0
  stdin: str | None = None

  def render(self) -> str:
    """The command as shell text that a POSIX shell runs the same way."""
    words = [f"{name}={shlex.quote(value)}" for name, value in self.env]
    line = " ".join([*words, shlex.join(self.argv)])
    if self.poll_until is not None:
      line += f"  # repeated until it prints {self.poll_until}"
    if self.stdin is not None:
      if HEREDOC_END in self.stdin.splitlines():
        raise LaunchError(f"standard input of {self.argv[0]} contains the line {HEREDOC_END}")
      body = self.stdin.rstrip("\n")
      line += f" <<'{HEREDOC_END}'\n{body}\n{HEREDOC_END}"
    return line


def positive_int(text: str) -> int:
  """An argparse type: an integer of at least 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits argv at the first `--`: launcher arguments before it, entry-point flags after it."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  cut = argv.index("--")
  flags = argv[cut + 1 :]
  for flag in flags:
    if not flag.startswith("--"):
      raise LaunchError(
        f"argument {flag!r} after '--' is not a flag; everything after '--' is passed to the "
        "entry point, e.g. -- --config.batch_size=1024"
      )
  return argv[:cut], flags


def check_gcs_uri(what: str, value: str) -> str:
  """Returns `value` without a trailing slash; raises unless it is gs://BUCKET[/PATH]."""
  stripped = value.rstrip("/")
  if not stripped.startswith("gs://") or len(stripped) == len("gs://"):
    raise LaunchError(f"{what} must be a Cloud Storage URI like gs://BUCKET/PATH, got {value!r}")
  return stripped


def check_config(config: str, root: Path, *, under_config_dir: bool) -> str:
  """Checks an ml_collections `--config` value (`FILE[:ARG]`) and returns it unchanged.

  FILE is resolved against `root`. With `under_config_dir`, FILE must be a relative path inside
  configs/, the folder the cloud launchers copy to the workers.
  """
  file_part = Path(config.split(":", 1)[0])
  if under_config_dir and (
    file_part.is_absolute() or file_part.parts[:1] != (CONFIG_DIR,) or ".." in file_part.parts
  ):
    raise LaunchError(
      f"--config {config!r} must be a relative path inside {CONFIG_DIR}/ (e.g. "
      f"{DEFAULT_MAIN_CONFIG}): only that folder of {root} is copied to the workers"
    )
  if not (root / file_part).is_file():
    raise LaunchError(f"--config file {root / file_part} does not exist")
  return config


def entry_command(
  python: str,
  module: str,
  config: str,
  *,
  workdir: str | None,
  data_dir: str | None,
  dataset: str | None,
  multiprocess: bool,
  extra_flags: Sequence[str],
) -> list[str]:
  """argv of `python -m MODULE`; `extra_flags` go last so they override the launcher's flags."""
  argv = [python, "-m", module, f"--config={config}"]
  if workdir is not None:
    argv.append(f"--workdir={workdir}")
  if multiprocess:
    argv.append("--multiprocess=true")
  if data_dir is not None:
    argv.append(f"--config.data.data_dir={data_dir}")
  if dataset is not None:
    argv.append(f"--config.data.name={dataset}")
  return argv + list(extra_flags)


def main_command(args, *, multiprocess: bool, extra_flags: Sequence[str]) -> list[str]:
  """argv of `lead_kt.main` from a launcher's parsed `args` (python, config, workdir, data_dir,
  dataset)."""
  return entry_command(
    args.python,
    MAIN_MODULE,
    args.config,
    workdir=args.workdir,
    data_dir=args.data_dir,
    dataset=args.dataset,
    multiprocess=multiprocess,
    extra_flags=extra_flags,
  )


def execute(
  steps: Sequence[Command],
  *,
  dry_run: bool,
  cleanup: Sequence[Command] = (),
  runner: Callable[..., subprocess.CompletedProcess] | None = None,
  sleep: Callable[[float], None] = time.sleep,
) -> None:
  """Prints the commands; unless `dry_run`, runs them in order, stopping at the first failure.

  `cleanup` (e.g. deleting a TPU) runs after `steps` whether or not they succeeded.
  `runner` defaults to `subprocess.run`, looked up at call time so tests can replace it.
  """
  if dry_run:
    for command in [*steps, *cleanup]:
      print(command.render())
    return
  run = runner or subprocess.run
  try:
    for command in steps:
      _run_one(command, run, sleep)
  finally:
    for command in cleanup:
      _run_one(command, run, sleep)


def _run_one(command: Command, run, sleep) -> None:
  print(f"+ {command.render()}", flush=True)
  env = {**os.environ, **dict(command.env)} if command.env else None
  if command.poll_until is None:
    run(list(command.argv), check=True, env=env, input=command.stdin, text=True)
    return
  while True:
    result = run(list(command.argv), check=True, env=env, capture_output=True, text=True)
    output = result.stdout.strip()
    if output == command.poll_until:
      return
    if output in command.failure_outputs:
      raise LaunchError(f"{shlex.join(command.argv)} reports {output}; giving up")
    print(f"  {output or '(no output)'}; again in {command.poll_interval_s:g} s", flush=True)
    sleep(command.poll_interval_s)


def run_main(build: Callable[[list[str]], tuple[list[Command], list[Command], bool]], argv) -> int:
  """Shared `main` of the launchers: builds the plan, executes it and maps failures to exit codes.

  `build(argv)` returns (steps, cleanup, dry_run) and raises LaunchError for bad arguments.
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    steps, cleanup, dry_run = build(argv)
    execute(steps, cleanup=cleanup, dry_run=dry_run)
  except LaunchError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except subprocess.CalledProcessError as error:
    print(f"error: command failed with exit status {error.returncode}", file=sys.stderr)
    return error.returncode
  return 0
