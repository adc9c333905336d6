"""Methods as plug-ins of the one trainer; ``create`` picks one by ``config.method``."""

import ml_collections

from lead_kt.methods import kd, mvkt
from lead_kt.methods.common import Network, build_backbone
from lead_kt.methods.supervised import Supervised

# Methods that distil from a frozen 12-lead teacher (trained first when none is given).
TRANSFER_METHODS = ("mvkt", "kd")
METHODS = ("teacher", "baseline", *TRANSFER_METHODS)


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects unknown method names and loss variants before anything is built."""
  if config.method not in METHODS:
    raise ValueError(f"unknown method {config.method!r}; known: {', '.join(METHODS)}")
  if config.method == "mvkt":
    from lead_kt import losses

    checks = [
      ("mkd.variant", config.mkd.variant, losses.MKD_VARIANTS),
      ("clt.memory", config.clt.memory, mvkt.MEMORIES),
      ("clt.negatives", config.clt.negatives, mvkt.NEGATIVES),
      ("clt.bank_sharding", config.clt.bank_sharding, ("replicated", "data")),
    ]
  elif config.method == "kd":
    checks = [("kd_variant", config.kd_variant, kd.VARIANTS)]
  else:
    checks = []
  for field, value, known in checks:
    if value not in known:
      raise ValueError(f"unknown {field} {value!r}; known: {', '.join(known)}")


def create(config: ml_collections.ConfigDict, num_classes: int, num_train: int, train_first_labels):
  validate(config)
  student = Network(build_backbone(config.student, num_classes))
  if config.method == "teacher":
    return Supervised("teacher", student, view="teacher")
  if config.method == "baseline":
    return Supervised("baseline", student, view="student")
  teacher = Network(build_backbone(config.teacher, num_classes))
  if config.method == "mvkt":
    first = None if config.clt.negatives == "uniform" else tuple(int(v) for v in train_first_labels)
    return mvkt.Mvkt(student, teacher, config, num_train, first)
  return kd.Kd(student, teacher, config)
