"""The single-lead student alone, trained with BCE (the MVKT paper's baseline), with the
augmentation, mixing and 100-epoch schedule that validation selected (``default.function_matching``;
``configs/default.py`` alone is the 30-epoch, unaugmented baseline of the earlier studies)."""

from configs import default


def get_config():
  return default.function_matching(default.get_config())
