"""Data sets and mini-batches: ``load_dataset(cfg, seed, device, dtype) -> Dataset`` and ``Batches``.

Importing this package registers every built-in loader in ``DATASETS``.
"""

from manualnet.data import arrays, digits, idx, synthetic, text  # noqa: F401  (each registers its loaders)
from manualnet.data.base import DATASETS, Arrays, loader_arguments, seeded_generator
from manualnet.data.batches import Batches
from manualnet.data.dataset import COMMON_KEYS, Dataset, Standardizer, load_dataset, split_arrays, split_indices

__all__ = ["COMMON_KEYS", "DATASETS", "Arrays", "Batches", "Dataset", "Standardizer", "load_dataset",
           "loader_arguments", "seeded_generator", "split_arrays", "split_indices"]
