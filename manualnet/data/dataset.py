"""A loaded data set: seeded train/val/test splits, standardised with train statistics, on the device.

``load_dataset(cfg)`` is the one entry point: it looks the loader up in ``DATASETS``, checks the config's
per-dataset keys against the loader's signature, splits, standardises and moves the tensors.
"""

import dataclasses
import inspect
import math
import warnings
from dataclasses import dataclass

import torch

from manualnet.data.base import DATASETS, check_arguments, seeded_generator
from manualnet.errors import ConfigError, DataError
from manualnet.names import COMMON_KEYS

SPLITS = ("train", "val", "test")


class Standardizer:
    """x' = (x - mean) / std, per feature, with mean and std measured on the train split.

    A feature whose train std is below ``min_std`` (constant pixels at the border of an image) is only
    centred (std := 1): it carries no information in train, and dividing by a tiny std would turn any
    val/test deviation into a huge input.
    Shape: mean, std have a sample's shape ((F,), or (C, H, W) per pixel); ``apply`` maps (N, *) -> (N, *).
    """

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x, min_std=1e-6):
        """Train statistics, accumulated in float64 whatever x's dtype (float32 MNIST stays float32)."""
        mean = x.mean(dim=0, dtype=torch.float64)
        std = ((x - mean.to(x.dtype)) ** 2).mean(dim=0, dtype=torch.float64).sqrt()
        return cls(mean, torch.where(std < min_std, torch.ones_like(std), std))

    def apply(self, x):
        return (x - self.mean.to(x)) / self.std.to(x)

    def to(self, device, dtype):
        return Standardizer(self.mean.to(device, dtype), self.std.to(device, dtype))

    def flattened(self):
        return Standardizer(self.mean.flatten(), self.std.flatten())

    def state_dict(self):
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, state):
        return cls(state["mean"], state["std"])


@dataclass(eq=False)  # tensors have no single truth value: compare splits with torch.equal
class Dataset:
    """Features (N, *sample_shape) float on the device: (N, F) vectors, or (N, C, H, W) images until
    ``flattened``; labels (N,) int64 class indices or (N, n_outputs) float targets."""

    name: str
    task: str  # "classification" | "regression"
    num_classes: int | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    standardizer: Standardizer | None = None  # what was applied to every split's features, if anything
    classes: list | None = None  # the source file's label for each class index, when labels were renumbered
    baseline: dict | None = None  # losses a model should beat (a text's unigram entropy), for the summary

    @property
    def sample_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def in_features(self):
        """Numbers per sample: an image's pixels, counted over its channels."""
        return math.prod(self.sample_shape)

    def flattened(self):
        """This data set with every sample a vector of in_features numbers (views, no copies): what an MLP takes."""
        flat = {f"x_{s}": getattr(self, f"x_{s}").flatten(1) for s in SPLITS}
        standardizer = self.standardizer.flattened() if self.standardizer else None
        return dataclasses.replace(self, **flat, standardizer=standardizer)

    @property
    def out_features(self):
        return self.num_classes if self.task == "classification" else self.y_train.shape[1]

    def inferred_sizes(self):
        """Model arguments a language model's data fixes: ``vocab_size`` and ``block_size`` (empty for features)."""
        if self.x_train.is_floating_point():
            return {}
        return {"vocab_size": self.num_classes, "block_size": self.x_train.shape[1]}

    def split(self, name):
        """(x, y) of ``train``, ``val`` or ``test``."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def summary(self):
        return {"name": self.name, "task": self.task, "num_classes": self.num_classes,
                "in_features": self.in_features, "out_features": self.out_features,
                **{f"{s}_samples": len(getattr(self, f"x_{s}")) for s in SPLITS},
                "standardized": self.standardizer is not None}

    def __str__(self):
        kind = f"{self.num_classes} classes" if self.task == "classification" else f"{self.out_features} targets"
        sizes = "/".join(str(len(getattr(self, f"x_{s}"))) for s in SPLITS)
        shape = "x".join(map(str, self.sample_shape))
        features = f"{shape} images" if len(self.sample_shape) > 1 else f"{self.in_features} features"
        return f"{self.name}: {self.task}, {features}, {kind}, {sizes} train/val/test samples"


def fraction_problems(fractions):
    """A line per problem with the split fractions in ``fractions`` (``{"val_fraction": 0.1, ...}``, either
    or both), raising nothing: their one check, which ``split_indices`` and a config's check call."""
    lines = [f"data.{key}: expected a fraction >= 0 and less than 1, got {f!r}" for key, f in fractions.items()
             if not (isinstance(f, int | float) and 0 <= f < 1)]
    val, test = fractions.get("val_fraction"), fractions.get("test_fraction")
    if not lines and val is not None and test is not None and val + test >= 1:
        lines.append(f"data: val_fraction + test_fraction must be < 1 to leave training data, got {val} + {test}")
    return lines


def split_indices(n, val_fraction, test_fraction, generator):
    """(train, val, test) index tensors: a seeded permutation of range(n) cut into round(f * n)-sized
    val and test parts; train keeps the rest and must not be empty."""
    problems = fraction_problems({"val_fraction": val_fraction, "test_fraction": test_fraction})
    if problems:
        raise ConfigError("\n".join(problems))
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n - n_val - n_test < 1:
        raise DataError(f"data: {n} samples leave none for training after val_fraction {val_fraction} and "
                        f"test_fraction {test_fraction}")
    empty = [name for name, fraction, size in (("val", val_fraction, n_val), ("test", test_fraction, n_test))
             if fraction > 0 and size == 0]
    if empty:  # a fraction asked for but too few samples to give it one: no val/test metrics, said once
        warnings.warn(f"data: {n} sample(s) are too few for a {' or a '.join(empty)} split "
                      f"({' and '.join(f'{name}_fraction' for name in empty)} of {n} rounds to 0): the run reports "
                      f"no {' or '.join(f'{name}/' for name in empty)} metrics", stacklevel=2)
    perm = torch.randperm(n, generator=generator)
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


def split_arrays(arrays, val_fraction, test_fraction, generator):
    """{split: (x, y)} for train, val and test: a seeded random split of the samples. A source's own test
    split (MNIST's t10k files) is the test split when ``test_fraction`` is 0; otherwise it is pooled with
    the rest, and test_fraction of the whole is held out at random like for any data set."""
    x, y, own_test = arrays.x, arrays.y, arrays.test
    if arrays.val is not None:  # the loader split the data itself (a text, by position)
        return {"train": (x, y), "val": arrays.val, "test": own_test}
    if own_test is not None and test_fraction > 0:
        x, y, own_test = torch.cat([x, own_test[0]]), torch.cat([y, own_test[1]]), None
    parts = split_indices(len(x), val_fraction, test_fraction, generator)
    splits = {name: (x[idx], y[idx]) for name, idx in zip(SPLITS, parts, strict=True)}
    if own_test is not None:
        splits["test"] = own_test
    return splits


def _check_range(arrays, dtype, name):
    """A DataError naming the column if a feature (or regression target) is beyond ``dtype``'s range: it
    would become infinite when cast, and the run would stop as diverged on its first step."""
    largest = torch.finfo(dtype).max
    sources = [("feature", arrays.x), ("target", arrays.y if arrays.task == "regression" else None)]
    sources += [("feature", arrays.test[0])] if arrays.test is not None else []
    for what, values in sources:
        if values is None or not values.is_floating_point() or torch.finfo(values.dtype).max <= largest:
            continue
        flat = values.reshape(len(values), -1)
        beyond = flat.abs() > largest
        if beyond.any():
            row, col = beyond.nonzero()[0].tolist()
            column = arrays.features[col] if what == "feature" and arrays.features else col
            raise DataError(f"data ({name}): {what} column {column!r} holds {flat[row, col]:g} (sample {row}), beyond "
                            f"{str(dtype).removeprefix('torch.')}'s range (largest {largest:.3g}); rescale it, or "
                            "set dtype: float64")


def load_dataset(cfg=None, seed=0, device="cpu", dtype=torch.float32, **kwargs):
    """The data set a config's ``data`` section describes, split, standardised and on ``device``.

    Args:
        cfg: the ``data`` section as a dict: ``dataset`` (a DATASETS name, default ``digits``),
            ``val_fraction`` (0.1), ``test_fraction`` (0.2), ``standardize`` (True), and the loader's own
            keyword arguments (``n_samples``, ``noise``, ``root``, ``path``, ...). ``kwargs`` add to it.
        seed: seeds the synthetic data (stream "data") and the split (stream "split"); see ``split_arrays``
            for data sets that ship their own test split.
        device, dtype: where the tensors live and the float dtype of features (and regression targets).
    """
    if hasattr(cfg, "model_dump"):  # the validated pydantic section itself
        cfg = cfg.model_dump()
    spec = {**(cfg or {}), **kwargs}
    name, val_fraction, test_fraction, standardize = (spec.pop(k, default) for k, default in COMMON_KEYS.items())
    loader = DATASETS.get(name, where="data.dataset")
    args = check_arguments(name, loader, spec)
    runtime = {"generator": seeded_generator(seed, "data"), "val_fraction": val_fraction,
               "test_fraction": test_fraction}
    args.update({k: v for k, v in runtime.items() if k in inspect.signature(loader).parameters})
    arrays = loader(**args)
    _check_range(arrays, dtype, name)
    splits = split_arrays(arrays, val_fraction, test_fraction, seeded_generator(seed, "split"))
    tokens = not splits["train"][0].is_floating_point()  # token ids: neither cast nor standardised
    standardizer = Standardizer.fit(splits["train"][0]).to(device, dtype) if standardize and not tokens else None
    label_dtype = torch.int64 if arrays.task == "classification" else dtype
    tensors = {}
    for split, (x, y) in splits.items():
        x = x.to(device=device, dtype=None if tokens else dtype)  # standardised after the cast: float64 keeps it
        tensors[f"x_{split}"] = standardizer.apply(x) if standardizer else x
        tensors[f"y_{split}"] = y.to(device=device, dtype=label_dtype)
    return Dataset(name=name, task=arrays.task, num_classes=arrays.num_classes, **tensors,
                   standardizer=standardizer, classes=arrays.classes, baseline=arrays.baseline)
