"""Command line of lead_kt: parses flags and calls ``train.train_and_evaluate``.

python -m lead_kt.main --config=configs/mvkt.py --workdir=runs/mvkt [--config.key=value ...]
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file with get_config()."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Run directory (checkpoints, results.json). Default: runs/<config name>."
)
_MULTIPROCESS = flags.DEFINE_bool(
  "multiprocess", False, "Call jax.distributed.initialize() (TPU pod slices, SLURM, multi-node)."
)
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from lead_kt import logger, sharding, train

  logger.quiet_library_logs()

  if _MULTIPROCESS.value:
    sharding.initialize_distributed()
  workdir = _WORKDIR.value
  if workdir is None:
    config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", config_name)
  logging.info("workdir %s\n%s", workdir, _CONFIG.value)
  train.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main)
