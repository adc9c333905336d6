"""MVKT-ECG: a frozen 12-lead teacher educates a single-lead student with BCE + MKD + CLT.

With ``teacher.checkpoint`` empty the run first trains the teacher into WORKDIR/teacher, then the
student into WORKDIR/student.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.method = "mvkt"
  c.alpha = 1.0  # weight of MKD
  c.beta = 0.8  # weight of CLT

  c.mkd = ml_collections.ConfigDict()
  # paper (default): the formula of the paper (softmax over (p/T, (1-p)/T), T^2 scaling, T = 1.5).
  # reference_code: the authors' public code (temperature divides probabilities, no T^2, T = 1).
  c.mkd.variant = "paper"
  c.mkd.temperature = -1.0  # -1 = the variant's own default

  c.clt = ml_collections.ConfigDict()
  c.clt.memory = "bank"  # bank (CRD-style NCE, the paper) | queue (MoCo-style InfoNCE)
  c.clt.embed_dim = 128
  c.clt.num_negatives = 1024
  c.clt.temperature = 0.07
  c.clt.momentum = 0.5
  # uniform (the paper, default) | other_class (the code: negatives with a different first label)
  c.clt.negatives = "uniform"
  c.clt.bank_sharding = "replicated"  # replicated | data (bank rows split over the data axis)
  c.clt.queue_size = 4096
  return c
