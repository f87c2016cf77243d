"""scikit-learn's bundled 8x8 handwritten digits: 1797 one-channel 8x8 images, 10 classes, no download."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from manualnet.data.base import DATASETS, Arrays
from manualnet.errors import DataError

GRAY_LEVELS = 16  # the digits' pixels are counts 0..16 of set bits in a 4x4 block of the original scan


@DATASETS.register("digits")
def digits() -> Arrays:
    """x: (1797, 1, 8, 8) images, pixels scaled to [0, 1]; y: (1797,) digit 0..9."""
    table = np.loadtxt(_bundled_csv(), delimiter=",")
    x = (torch.from_numpy(table[:, :-1]) / GRAY_LEVELS).reshape(-1, 1, 8, 8)   # each row is an image, row-major
    return Arrays(x, torch.from_numpy(table[:, -1]).long(), "classification", 10)


def _bundled_csv():
    """The CSV that ``sklearn.datasets.load_digits`` reads, found without importing scikit-learn (whose
    import takes seconds: most of a small run's start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("digits: scikit-learn is not installed (pip install scikit-learn); it bundles the data")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"digits: {path} is missing from the scikit-learn installation")
    return path
