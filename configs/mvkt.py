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
  # paper: the formula of the paper (softmax over (p/T, (1-p)/T), T^2 scaling, T = 1.5).
  # reference_code (default): the authors' public code (temperature divides probabilities, no T^2,
  # T = 1), i.e. half the Bernoulli KL per class. Chosen on validation: on 1,113 PTB-XL training
  # records it gave the best validation macro-AUC of the MVKT variants (docs/results.md).
  c.mkd.variant = "reference_code"
  c.mkd.temperature = -1.0  # -1 = the variant's own default

  c.clt = ml_collections.ConfigDict()
  # bank: one row per training record with sampled negatives, as the MVKT paper and code (CRD's
  # memory) | queue (MoCo-style FIFO with InfoNCE).
  c.clt.memory = "bank"
  # nce: CRD's binary NCE with a fixed normaliser (the MVKT code) | infonce (the paper's Eq. 6).
  c.clt.loss = "nce"
  # bank: the positive is the record's row of the other bank (CRD, the code) | current: the other
  # network's embedding of the input the student sees now.
  c.clt.positive = "bank"
  # Embedding heads: 0 = one Linear + L2 (the code); > 0 = Linear(head_hidden) + ReLU + Linear + L2
  # (the paper's two-layer MLP).
  c.clt.head_hidden = 512
  c.clt.embed_dim = 128
  c.clt.num_negatives = 1024
  c.clt.temperature = 0.07
  c.clt.momentum = 0.5
  # uniform (the paper, default) | other_class (the code: negatives with a different first label)
  c.clt.negatives = "uniform"
  # other_class: first_label (ICBEB2018's First_label; PTB-XL's lowest positive class) | bit0 (the
  # code on PTB-XL, a bug: records split by bit 0 of the multi-hot label, i.e. by one class).
  c.clt.class_key = "first_label"
  c.clt.bank_sharding = "replicated"  # replicated | data (bank rows split over the data axis)
  c.clt.queue_size = 4096
  return c
