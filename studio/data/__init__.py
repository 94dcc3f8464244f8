"""Datasets: a registry of builders (bundled, generated, hub, user folders) returning `Dataset`s."""

from studio.data import digits, faces, folder, hub_datasets, patches, textures, toys  # noqa: F401  (registration)
from studio.data.dataset import Dataset
from studio.data.registry import DatasetEntry, dataset_names, get_entry, load_dataset

__all__ = ["Dataset", "DatasetEntry", "dataset_names", "get_entry", "load_dataset"]
