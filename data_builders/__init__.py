"""TFDS dataset builders of lead_kt; importing this package registers `ptbxl` and `icbeb2018`."""

from data_builders import icbeb2018, ptbxl  # noqa: F401
