"""TFDS dataset builders of lead_kt; importing this package registers `ptbxl`, `icbeb2018` and
`physionet2021`."""

from data_builders import icbeb2018, physionet2021, ptbxl  # noqa: F401
