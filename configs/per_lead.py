"""The per-lead study on PTB-XL (the MVKT paper's Fig. 4 does it on ICBEB2018): baseline and MVKT
student for each of the 12 leads, all distilled from one 12-lead teacher.

Run with ``python -m lead_kt.sweep --config=configs/per_lead.py --workdir=runs/per_lead``, then
``python -m lead_kt.report --workdirs runs/per_lead/* --out runs/per_lead/report``.
"""

import ml_collections

from configs import default, mvkt


def get_config():
  c = mvkt.get_config()
  c.sweep = ml_collections.ConfigDict()
  c.sweep.methods = ("baseline", "mvkt")
  c.sweep.leads = default.ALL_LEADS
  c.sweep.folds = ()
  c.sweep.overrides = {}
  return c
