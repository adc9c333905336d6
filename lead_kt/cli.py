"""What lead_kt's commands share: one-line errors, one flag style, outputs that appear whole.

- A fault of a command's inputs or outputs (a missing or unfinished run directory, an unwritable
  output, a typo in a flag) is reported as one line, `error: <message>` on stderr, with exit
  status 2 and no traceback.
- Options are spelt with hyphens (`--num-leads`); the underscore spelling (`--num_leads`) is read
  as the same option, in the argparse commands and in the absl ones (`lead_kt.main`,
  `lead_kt.diagnose`, whose flags are defined with underscores).
- An output directory is checked before any work and written as a new directory beside itself,
  renamed into place at the end: it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

EXIT_ERROR = 2
RESULTS_FILE = "results.json"
# What a run writes when it starts, before it has results: it can be resumed.
_STARTED_MARKERS = ("run_identity.json", "checkpoints", "teacher", "student")


class CliError(Exception):
  """A fault of a command's inputs or outputs; its message is the one line the command prints."""


def one_line(error: BaseException) -> str:
  """The message of `error` on one line.

  An exception raised around another (ml_collections raises AttributeError(KeyError(...)) for a
  config field that does not exist) gives the inner one's message, and a KeyError its text rather
  than its repr (which would show the newline of "... Did you mean" escaped).
  """
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error) or type(error).__name__
  # A message that holds a traceback (absl's for a config file's get_config) keeps its first
  # line and the traceback's last, the error itself.
  before, traceback, after = text.partition("Traceback (most recent call last):")
  lines = [line.strip() for line in before.splitlines() if line.strip()]
  if traceback:
    lines += [line.strip() for line in after.splitlines() if line.strip()][-1:]
  return "; ".join(lines)


def report(error: BaseException) -> int:
  """Prints `error: <message>` to stderr; returns the exit status of a failed command."""
  print(f"error: {one_line(error)}", file=sys.stderr)
  return EXIT_ERROR


def _respelt(token: str, old: str, new: str) -> str:
  """A `--name[=value]` token with `old` replaced by `new` in the name; other tokens as given."""
  if not token.startswith("--") or token == "--":
    return token
  name, equals, value = token[2:].partition("=")
  return "--" + name.replace(old, new) + equals + value


class ArgumentParser(argparse.ArgumentParser):
  """argparse with lead_kt's flag style: options are defined with hyphens, and `--num_leads` is
  read as `--num-leads`."""

  def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
    args = sys.argv[1:] if args is None else args
    return super().parse_known_args([_respelt(arg, "_", "-") for arg in args], namespace)


def parse_absl_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing (give it to `app.run` as `flags_parser`) with `--heartbeat-timeout-s`
  read as `--heartbeat_timeout_s`; a flag that absl or a config override refuses ends the command
  with a one-line error."""
  from absl import flags

  argv = [argv[0], *(_respelt(arg, "-", "_") for arg in argv[1:])]
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(report(error))
  except (AttributeError, KeyError) as error:
    # What ml_collections' config flags raise for an override of a field that does not exist.
    sys.exit(report(CliError(_unknown_field_message(argv[1:], error))))
  except OSError as error:  # a config file that cannot be read
    sys.exit(report(error))


def _unknown_field_message(arguments: Sequence[str], error: BaseException) -> str:
  """Names the `--config.*` flag whose field does not exist (the error's first word)."""
  message = one_line(error)
  field, _, hint = message.partition(";")
  field = field.strip("'\"")
  for argument in arguments:
    name = argument.partition("=")[0]
    if name.startswith("--config.") and field in name.split("."):
      return f"{name}: the config has no field {field!r}" + (f";{hint}" if hint else "")
  return f"a config override names a field that does not exist: {message}"


def require_finished_run(path: str | os.PathLike) -> Path:
  """`path` as a Path if it holds results.json (a finished run); else raises CliError saying
  that it does not exist, that it is a run which has not finished (and how to resume it), or that
  it is not a run directory."""
  path = Path(path)
  if (path / RESULTS_FILE).is_file():
    return path
  if not path.exists():
    raise CliError(f"{path} does not exist")
  if not path.is_dir():
    raise CliError(f"{path} is not a run directory (it is a file)")
  if any((path / marker).exists() for marker in _STARTED_MARKERS):
    raise CliError(
      f"{path} is a run that has not finished (no {RESULTS_FILE} yet): resume it by running the "
      f"command that started it again (python -m lead_kt.main with the same --config, overrides "
      f"and --workdir={path}, or the same lead_kt.sweep)"
    )
  raise CliError(f"{path} is not a lead_kt run directory (no {RESULTS_FILE})")


@contextlib.contextmanager
def output_directory(
  path: str | os.PathLike, *, update: bool = False, last: str | None = None
) -> Iterator[Path]:
  """Yields a new directory beside `path` to write the command's output into, and puts it in
  place when the block ends without an error; removes it when the block raises.

  The check comes before any work: `path`'s parent (made when missing) must take a new directory,
  and `path` must be absent or an empty directory, which the new one replaces whole. With
  `update`, an existing `path` is kept and the files are moved into it one by one (`last` after
  the others), each replacing its namesake, so a reader sees every file old or new, never a
  part. Raises CliError.
  """
  out = Path(os.path.abspath(path))
  if out.exists() and (not out.is_dir() or not update and any(out.iterdir())):
    raise CliError(
      f"{path} exists and is not an empty directory: choose another --out, or remove it first "
      "(its files would mix with the new ones)"
    )
  existing = out.parent
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise CliError(f"cannot write {path}: {existing} is a file, not a directory")
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside `path`, so that the rename stays on one file system; mkdir's permissions, as out's.
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex}"
    staging.mkdir()
  except OSError as error:
    raise CliError(f"cannot write {path}: {error.strerror} ({error.filename})") from error
  try:
    yield staging
    if update and out.is_dir() and any(out.iterdir()):
      names = sorted(os.listdir(staging), key=lambda name: name == last)
      for name in names:
        os.replace(staging / name, out / name)
      staging.rmdir()
    else:
      try:
        os.rename(staging, out)  # replaces an empty directory; fails on one filled meanwhile
      except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror} ({error.filename})") from error
  finally:
    shutil.rmtree(staging, ignore_errors=True)
