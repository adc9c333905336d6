"""Distillation baselines of the MVKT paper's Table 1: KD, KD + FitNet, KD + attention transfer.

Trained by function matching (``default.function_matching``: the teacher sees the student's
augmented, mixed input; 100 epochs), the recipe that validation selected over 30 unaugmented
epochs; the teacher still trains 30 epochs without augmentation."""

from configs import default


def get_config():
  c = default.function_matching(default.get_config())
  c.method = "kd"
  c.kd_variant = "kd"  # kd | kd_fitnet | kd_at
  c.kd_temperature = 4.0
  c.kd_weight = 1.0  # weight of the KD term next to BCE
  c.fitnet_weight = 100.0  # weight of the FitNet hint loss (kd_fitnet)
  c.at_weight = 1000.0  # beta of attention transfer (kd_at), as Zagoruyko & Komodakis
  return c
