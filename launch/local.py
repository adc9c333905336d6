"""A multi-process lead_kt job on this machine, as on a pod: N processes, simulated CPU devices.

  python launch/local.py --processes=2 --devices-per-process=2 [--workdir=runs/mvkt] \\
    [--config=configs/mvkt.py] [--log-dir=DIR] [--grace-s=60] [--dry-run] -- --config.x=y

Each process runs `python -m lead_kt.main --multiprocess=true` with the coordinator address (a
free port on 127.0.0.1, picked now), the process count and its id, which lead_kt.main hands to
`jax.distributed.initialize()`, and `--xla_force_host_platform_device_count` in its own XLA_FLAGS.
Process 0's output streams here; the others' go to `--log-dir`. When a process fails, the others
get `--grace-s` seconds to notice by themselves (they do, within `--heartbeat_timeout_s` of
lead_kt.main), then are killed; the exit status is that of the first failure. SIGTERM (and
Ctrl-C) are forwarded to every process, which checkpoint and exit. See launch/README.md.
`job_commands` and `run_job` also start the jobs of lead_kt.bench's weak scaling over processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python launch/local.py`: make the `launch` package importable.
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch import common  # noqa: E402
from launch.common import Command, LaunchError  # noqa: E402

POLL_INTERVAL_S = 0.2
TIMEOUT_STATUS = 124  # as timeout(1)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="launch/local.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--processes", type=common.positive_int, default=2)
  parser.add_argument("--devices-per-process", type=common.positive_int, default=2)
  parser.add_argument("--config", default=common.DEFAULT_MAIN_CONFIG)
  parser.add_argument("--workdir", help="run directory (default: lead_kt.main's)")
  parser.add_argument("--data-dir", help="TFDS data_dir (default: the config's)")
  parser.add_argument("--dataset", help="TFDS name (default: the config's)")
  parser.add_argument("--python", default=sys.executable, help="interpreter with lead_kt")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--log-dir", help="where process_<i>.log go (default: a new temp folder)")
  parser.add_argument(
    "--grace-s",
    type=float,
    default=60.0,
    help="after a process fails, seconds the others get to exit by themselves before a kill",
  )
  parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
  """Parses and checks the arguments; entry-point flags after `--` land in `extra_flags`."""
  own, extra_flags = common.split_passthrough(argv)
  args = _parser().parse_args(own)
  args.extra_flags = extra_flags
  # The processes start in the current directory, so that is where the config must be.
  common.check_config(args.config, Path.cwd(), under_config_dir=False)
  if not 0 <= args.port < 65536:
    raise LaunchError(f"--port {args.port} is not a TCP port")
  return args


def free_port() -> int:
  """A port of 127.0.0.1 that nothing listens on now (the coordinator binds it moments later)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def simulated_cpu_env(devices: int) -> tuple[tuple[str, str], ...]:
  """Environment of a process that sees `devices` simulated CPU devices."""
  # Appended to the inherited XLA_FLAGS: the last occurrence of a flag wins.
  device_count = f"--xla_force_host_platform_device_count={devices}"
  xla_flags = f"{os.environ.get('XLA_FLAGS', '')} {device_count}".strip()
  return (("JAX_PLATFORMS", "cpu"), ("XLA_FLAGS", xla_flags))


def job_commands(
  argv: Sequence[str],
  processes: int,
  devices_per_process: int,
  port: int,
  extra_flags: Sequence[str] = (),
) -> list[Command]:
  """One command per process of a job on this machine: `argv` (an entry point that joins with
  `--multiprocess=true`), the coordinator flags, then `extra_flags` (last, so they win)."""
  env = simulated_cpu_env(devices_per_process)
  return [
    Command(
      (
        *argv,
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={processes}",
        f"--process_id={process_id}",
        *extra_flags,
      ),
      env=env,
    )
    for process_id in range(processes)
  ]


def process_commands(args: argparse.Namespace, port: int) -> list[Command]:
  """One `lead_kt.main` command per process."""
  argv = common.main_command(args, multiprocess=True, extra_flags=())
  return job_commands(argv, args.processes, args.devices_per_process, port, args.extra_flags)


def _describe(returncode: int) -> str:
  if returncode < 0:
    return f"signal {signal.Signals(-returncode).name}"
  return f"status {returncode}"


def _exit_status(returncode: int) -> int:
  """A shell's exit status for a child's return code (128 + N for death by signal N)."""
  return 128 - returncode if returncode < 0 else returncode


def _report(message: str) -> None:
  print(f"launch.local: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class JobEnd:
  """How a job ended: its exit status (0, or that of the first failure), the process that failed
  first (None when all succeeded) and whether the job ran past its time limit."""

  status: int
  failed_process: int | None = None
  timed_out: bool = False


def log_path(log_dir: Path, process_id: int) -> Path:
  return log_dir / f"process_{process_id}.log"


def run_processes(commands: list[Command], log_dir: Path, grace_s: float) -> int:
  """Starts every command at once, waits for all of them and returns the job's exit status."""
  return run_job(commands, log_dir, grace_s).status


def run_job(
  commands: list[Command],
  log_dir: Path,
  grace_s: float,
  *,
  stream_first: bool = True,
  timeout_s: float | None = None,
) -> JobEnd:
  """Starts every command at once and waits for all of them, or until `timeout_s` (then every
  process still running is killed). Process 0's output streams to our stdout when
  `stream_first`; every other output goes to `log_path(log_dir, process_id)`."""
  log_dir.mkdir(parents=True, exist_ok=True)
  children = []
  signals_received = []

  def forward(signum, frame):
    # The first signal asks every process to checkpoint and exit; a second one kills them.
    signals_received.append(signum)
    again = len(signals_received) > 1
    _report(f"{signal.Signals(signum).name}: {'killing' if again else 'SIGTERM to'} every process")
    for child in children:
      if child.poll() is None:
        child.send_signal(signal.SIGKILL if again else signal.SIGTERM)

  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    for process_id, command in enumerate(commands):
      print(f"+ {command.render()}", flush=True)
      # Logs to read after a failure; process 0 may write to our stdout instead.
      streamed = stream_first and process_id == 0
      log = None if streamed else open(log_path(log_dir, process_id), "w")
      env = {**os.environ, **dict(command.env)}
      children.append(
        subprocess.Popen(list(command.argv), env=env, stdout=log, stderr=subprocess.STDOUT)
      )
      if log is not None:
        log.close()
      _report(f"process {process_id}: pid {children[-1].pid}")
    return _wait(children, grace_s, timeout_s)
  finally:
    for child in children:
      if child.poll() is None:
        child.kill()
        child.wait()
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _wait(children: list[subprocess.Popen], grace_s: float, timeout_s: float | None) -> JobEnd:
  first_failure = None
  kill_at = None
  deadline = None if timeout_s is None else time.monotonic() + timeout_s
  running = set(range(len(children)))
  while running:
    time.sleep(POLL_INTERVAL_S)
    for process_id in sorted(running):
      returncode = children[process_id].poll()
      if returncode is None:
        continue
      running.discard(process_id)
      elapsed = ""
      if first_failure is not None:
        elapsed = f", {time.monotonic() - first_failure[1]:.1f} s after the first failure"
      _report(f"process {process_id} exited with {_describe(returncode)}{elapsed}")
      if returncode != 0 and first_failure is None:
        first_failure = (returncode, time.monotonic(), process_id)
        kill_at = first_failure[1] + grace_s
    if running and kill_at is not None and time.monotonic() >= kill_at:
      for process_id in sorted(running):
        _report(f"process {process_id} still runs {grace_s:g} s after the first failure: killed")
        children[process_id].kill()
        children[process_id].wait()
      running.clear()
    if running and deadline is not None and time.monotonic() >= deadline:
      for process_id in sorted(running):
        _report(f"process {process_id} still runs after the time limit of {timeout_s:g} s: killed")
        children[process_id].kill()
        children[process_id].wait()
      if first_failure is None:
        return JobEnd(TIMEOUT_STATUS, min(running), timed_out=True)
      running.clear()
  if first_failure is None:
    return JobEnd(0)
  return JobEnd(_exit_status(first_failure[0]), first_failure[2])


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    args = parse_args(argv)
  except LaunchError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  commands = process_commands(args, args.port or free_port())
  if args.dry_run:
    for command in commands:
      print(command.render())
    return 0
  log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="lead_kt_local_"))
  _report(f"logs of processes 1..{args.processes - 1} in {log_dir}")
  return run_processes(commands, log_dir, args.grace_s)


if __name__ == "__main__":
  sys.exit(main())
