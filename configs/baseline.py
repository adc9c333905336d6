"""The single-lead student alone, trained with BCE (the MVKT paper's baseline)."""

from configs import default


def get_config():
  return default.get_config()
