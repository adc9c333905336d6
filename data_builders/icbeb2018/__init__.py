"""ICBEB2018 (CPSC2018) TFDS builder; importing this package registers `icbeb2018`."""

from data_builders.icbeb2018.icbeb2018_dataset_builder import Builder

__all__ = ["Builder"]
