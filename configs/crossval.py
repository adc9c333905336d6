"""Cross-validated comparison of the teacher (12 leads), the baseline and MVKT (lead I).

Each strat_fold in turn is the test split (the next fold validation, the rest train): on the
400-record bundled sample the official split's 53 test records are too few to separate methods.
Run with ``python -m lead_kt.sweep --config=configs/crossval.py --workdir=runs/crossval``.
"""

import ml_collections

from configs import mvkt


def get_config():
  c = mvkt.get_config()
  c.sweep = ml_collections.ConfigDict()
  c.sweep.methods = ("teacher", "baseline", "mvkt")
  c.sweep.leads = ()
  c.sweep.folds = tuple(range(1, 11))
  return c
