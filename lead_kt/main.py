"""Command line of lead_kt: parses flags and calls ``train.train_and_evaluate``.

python -m lead_kt.main --config=configs/mvkt.py --workdir=runs/mvkt [--config.key=value ...]

A config override of a field that does not exist, a wrong value, an unknown backbone, a teacher or
init run that does not fit: one line `error: <message>` on stderr and exit status 2
(`--verbosity=1` logs the traceback too).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from lead_kt import compilation_cache, logger, sharding

  logger.quiet_library_logs()
  compilation_cache.enable()

  sharding.initialize_from_flags()
  workdir = flags.FLAGS.workdir
  if workdir is None:
    config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", config_name)
  logging.info("workdir %s\n%s", workdir, flags.FLAGS.config)
  return run(flags.FLAGS.config, workdir)


def run(config, workdir: str) -> int:
  """Trains `config` in `workdir`; returns the exit status, 2 after a one-line error."""
  from lead_kt import checkpoint, cli, train

  try:
    train.train_and_evaluate(config, workdir)
  # What the trainer raises for a config or a run directory that does not fit (ConfigError,
  # InitError and the methods' checks are ValueErrors, a field that does not exist a KeyError) and
  # for files it cannot read or write (OSError: also a --config file that could not be loaded,
  # which ml_collections reports at the config's first use).
  except (checkpoint.CheckpointError, ValueError, KeyError, OSError) as error:
    logging.debug("the run stopped", exc_info=True)
    return cli.report(error)
  return 0


def _define_flags() -> None:
  # Defined when run as a program only, so importing this module never collides with the flags of
  # another entry point (lead_kt.sweep, lead_kt.bench) in the same process.
  config_flags.DEFINE_config_file("config", None, "Path to a config file with get_config().")
  flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, results.json). Default: runs/<config name>."
  )
  from lead_kt import sharding

  sharding.define_distributed_flags()
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  from lead_kt import cli

  _define_flags()
  app.run(main, flags_parser=cli.parse_absl_flags)
