"""Cross-validated evidence on PTB-XL ecg_id 1-1500: teacher (12 leads), baseline, MVKT and KD
(lead I), fcn_wang, this project's defaults (configs/mvkt.py, configs/kd.py).

Each strat_fold k in turn is the test split, fold k % 10 + 1 the validation split, the other eight
folds training (about 1,200 / 150 / 150 records). Every fold trains its own teacher; MVKT and KD of
that fold distil from it. The report pools the ten folds' test predictions, so each of the 1,500
records is scored once per method:

  python -m lead_kt.sweep --config=configs/mvkt_crossval.py --workdir=runs/crossval_1500 \\
    --config.data.manual_dir=../shared/data/ptb-xl --config.data.data_dir=runs/tfds_1500
  python -m lead_kt.report --workdirs runs/crossval_1500/* --baseline runs/crossval_1500/baseline \\
    --out runs/crossval_1500/report

Cost: about 40 runs of 3-8 minutes each on 2 CPU cores (folds run in order, so a sweep stopped
early has all four methods of the folds it reached).
"""

import ml_collections

from configs import kd, mvkt


def get_config():
  c = mvkt.get_config()
  for field in ("kd_variant", "kd_temperature", "kd_weight", "fitnet_weight", "at_weight"):
    c[field] = kd.get_config()[field]
  c.sweep = ml_collections.ConfigDict()
  c.sweep.methods = ("teacher", "baseline", "mvkt", "kd")
  c.sweep.leads = ()
  c.sweep.folds = tuple(range(1, 11))
  c.sweep.seeds = ()  # () = config.seed; the official-split runs of docs/results.md set (0, 1, 2)
  return c
