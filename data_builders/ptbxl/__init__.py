"""PTB-XL TFDS builder; importing this package registers `ptbxl`."""

from data_builders.ptbxl.ptbxl_dataset_builder import PHYSIONET_URL, SAMPLE_DIR, Builder

__all__ = ["Builder", "PHYSIONET_URL", "SAMPLE_DIR"]
