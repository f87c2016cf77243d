"""Seeded synthetic data sets: spirals, moons, xor (2-D classification), blobs (classification in any
number of features) and linear regression.

Each draws everything from the ``generator`` it is given, so a run's seed fixes its data.
"""

import math

import torch

from manualnet.data.base import DATASETS, Arrays
from manualnet.errors import ConfigError

SWEEP = 4.0  # radians each spiral arm turns through from the centre outwards, as in CS231n's spiral data


def _check(name, **limits):
    """ConfigError for the first ``key=(value, minimum)`` with value < minimum."""
    for key, (value, low) in limits.items():
        if value < low:
            raise ConfigError(f"data.{key}: dataset {name!r} needs {key} >= {low}, got {value}")


def _classes(n_samples, n_classes):
    """Balanced labels 0, 1, ..., K-1, 0, 1, ...: (N,) int64."""
    return torch.arange(n_samples) % n_classes


@DATASETS.register("spirals")
def spirals(n_samples: int = 600, arms: int = 3, noise: float = 0.1, *, generator: torch.Generator) -> Arrays:
    """K interleaved spiral arms in the plane, one class each.

    Sample i of arm k = i mod K: radius r ~ U(0, 1), angle t = 2 pi k / K + SWEEP * r,
    x = r * (sin t, cos t) + noise * N(0, I).  x: (N, 2); y: (N,) in 0..K-1.
    """
    _check("spirals", n_samples=(n_samples, arms), arms=(arms, 2), noise=(noise, 0))
    y = _classes(n_samples, arms)
    r = torch.rand(n_samples, generator=generator, dtype=torch.float64)
    t = 2 * math.pi * y / arms + SWEEP * r
    x = r[:, None] * torch.stack([t.sin(), t.cos()], dim=1)
    x += noise * torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    return Arrays(x, y, "classification", arms)


@DATASETS.register("blobs")
def blobs(n_samples: int = 1000, n_features: int = 20, n_classes: int = 3, spread: float = 1.0, *,
          generator: torch.Generator) -> Arrays:
    """One Gaussian blob per class around a random centre: sample i of class k = i mod K is
    x = c_k + spread * N(0, I), centres c_k ~ N(0, I) in ``n_features`` dimensions. x: (N, F); y: (N,).
    A stand-in of any size: MNIST's (784 features, 10 classes) for the benchmark's loop, offline."""
    _check("blobs", n_samples=(n_samples, n_classes), n_features=(n_features, 1), n_classes=(n_classes, 2),
           spread=(spread, 0))
    y = _classes(n_samples, n_classes)
    centres = torch.randn(n_classes, n_features, generator=generator, dtype=torch.float64)
    x = centres[y] + spread * torch.randn(n_samples, n_features, generator=generator, dtype=torch.float64)
    return Arrays(x, y, "classification", n_classes)


@DATASETS.register("moons")
def moons(n_samples: int = 500, noise: float = 0.1, *, generator: torch.Generator) -> Arrays:
    """Two interleaving half circles (the geometry of ``sklearn.datasets.make_moons``).

    t ~ U(0, pi); class 0: (cos t, sin t); class 1: (1 - cos t, 1/2 - sin t); plus noise * N(0, I).
    x: (N, 2); y: (N,) in {0, 1}.
    """
    _check("moons", n_samples=(n_samples, 2), noise=(noise, 0))
    y = _classes(n_samples, 2)
    t = math.pi * torch.rand(n_samples, generator=generator, dtype=torch.float64)
    upper = torch.stack([t.cos(), t.sin()], dim=1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
    x = torch.where(y[:, None] == 0, upper, lower)
    x += noise * torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    return Arrays(x, y, "classification", 2)


@DATASETS.register("xor")
def xor(n_samples: int = 400, noise: float = 0.1, *, generator: torch.Generator) -> Arrays:
    """Points in the square, labelled by the XOR of their coordinates' signs.

    p ~ U([-1, 1]^2), y = [p_0 > 0] xor [p_1 > 0], x = p + noise * N(0, I) (labels come from the clean
    point, so noise blurs the class boundary along the axes).  x: (N, 2); y: (N,) in {0, 1}.
    """
    _check("xor", n_samples=(n_samples, 2), noise=(noise, 0))
    p = 2 * torch.rand(n_samples, 2, generator=generator, dtype=torch.float64) - 1
    y = ((p[:, 0] > 0) ^ (p[:, 1] > 0)).long()
    x = p + noise * torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    return Arrays(x, y, "classification", 2)


@DATASETS.register("linear_regression")
def linear_regression(n_samples: int = 500, n_features: int = 5, n_outputs: int = 1, noise: float = 0.1, *,
                      generator: torch.Generator) -> Arrays:
    """y = x @ w + b + noise * N(0, I), with x ~ N(0, I), w ~ N(0, I) (n_features, n_outputs), b ~ N(0, I).

    x: (N, n_features); y: (N, n_outputs) float.
    """
    _check("linear_regression", n_samples=(n_samples, 2), n_features=(n_features, 1),
           n_outputs=(n_outputs, 1), noise=(noise, 0))
    x = torch.randn(n_samples, n_features, generator=generator, dtype=torch.float64)
    w = torch.randn(n_features, n_outputs, generator=generator, dtype=torch.float64)
    b = torch.randn(n_outputs, generator=generator, dtype=torch.float64)
    y = x @ w + b + noise * torch.randn(n_samples, n_outputs, generator=generator, dtype=torch.float64)
    return Arrays(x, y, "regression")
