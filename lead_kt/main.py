"""Command line of lead_kt: parses flags and calls ``train.train_and_evaluate``.

python -m lead_kt.main --config=configs/mvkt.py --workdir=runs/mvkt [--config.key=value ...]
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from lead_kt import compilation_cache, logger, sharding, train

  logger.quiet_library_logs()
  compilation_cache.enable()

  sharding.initialize_from_flags()
  workdir = flags.FLAGS.workdir
  if workdir is None:
    config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", config_name)
  logging.info("workdir %s\n%s", workdir, flags.FLAGS.config)
  train.train_and_evaluate(flags.FLAGS.config, workdir)


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
  _define_flags()
  app.run(main)
