"""Plain BCE training of one network: the 12-lead teacher and the single-lead baseline."""

import dataclasses

from lead_kt import losses
from lead_kt.methods.common import Network, build_backbone


@dataclasses.dataclass(frozen=True)
class Supervised:
  name: str
  net: Network
  view: str  # "teacher" (all 12 leads) or "student" (the configured subset)

  def init(self, rng, batch):
    params, stats = self.net.init(rng, batch[self.view])
    return params, stats

  def loss(self, params, state, batch, rng):
    out, stats = self.net.train_apply(params, state, batch[self.view], rng)
    bce = losses.bce_with_logits(out.logits, batch["label"], batch["mask"])
    return bce, (stats, {"bce": bce})

  def predict(self, params, state, batch):
    return {"logits": self.net.eval_apply(params, state, batch[self.view]).logits}

  def export_network(self, params, state) -> dict:
    """The trained network's variables, as a later run loads them as its frozen teacher."""
    return {"params": params, "stats": state}


def validate(config) -> None:
  del config  # Nothing beyond the backbone, which the registry checks when it is built.


def create(config, num_classes, num_train, train_first_labels):
  del num_train, train_first_labels
  net = Network(build_backbone(config.student, num_classes))
  view = "teacher" if config.method == "teacher" else "student"
  return Supervised(config.method, net, view=view)
