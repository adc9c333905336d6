"""PhysioNet/CinC Challenge 2021 TFDS builder; importing this package registers `physionet2021`."""

from data_builders.physionet2021.physionet2021_dataset_builder import Builder

__all__ = ["Builder"]
