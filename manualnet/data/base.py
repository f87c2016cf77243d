"""What a data set loader returns, the ``DATASETS`` registry, and the checks every loader shares.

A loader is a function registered under a name (``@DATASETS.register("digits")``). Its keyword arguments are
the per-dataset keys of the config's ``data`` section, so its signature is the documentation of those keys:
every parameter is annotated, and ``generator`` (a seeded ``torch.Generator``, passed by ``load_dataset``,
never by a config) is the only source of randomness. It returns an ``Arrays`` of CPU features and labels;
``load_dataset`` splits, standardises and moves them to the device.
"""

import hashlib
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from manualnet.errors import ConfigError, DataError
from manualnet.names import COMMON_KEYS
from manualnet.registry import Registry, closest, range_lines
from manualnet.typecheck import typechecked

DATASETS = Registry("dataset")

RUNTIME = {"generator", "val_fraction", "test_fraction"}  # loader parameters load_dataset fills in, never a
# config (a loader that takes the fractions splits the data itself, e.g. by position)


@dataclass
class Arrays:
    """A whole data set before splitting.

    x: (N, *sample_shape) float features, (N, F) vectors or (N, C, H, W) images (float64; float32 where a
    float64 copy would be large: the image sets).
    y: (N,) int64 class indices in 0..num_classes-1 (classification) or (N, n_outputs) float64 targets
    (regression). ``test``: the source's own (x, y) test split, if it ships one (MNIST's t10k files).
    ``classes`` names what each class index stood for in the source file, when the loader renumbered labels
    (a text's vocabulary: the character of each token id). ``val``: the loader's own (x, y) val split, when it
    splits the data itself (then ``test`` is its test split, empty or not).
    x may instead hold integer token ids (N, T), with y (N, T) the next tokens: a language model's data.
    """

    x: torch.Tensor
    y: torch.Tensor
    task: str
    num_classes: int | None = None
    classes: list | None = None
    test: tuple | None = None
    features: list | None = None  # each column's name in the source (a CSV header), for errors
    val: tuple | None = None
    baseline: dict | None = None  # losses a model should beat, named as in summary.json ({"unigram_entropy": nats})


def loader_arguments(name):
    """{argument: default (``inspect.Parameter.empty`` if required)} a data set ``name`` takes from a config."""
    return {n: p.default for n, p in _config_parameters(DATASETS.get(name, where="data.dataset")).items()}


def check_arguments(name, loader, kwargs):
    """``kwargs`` validated against ``loader``'s signature: unknown or missing keys and values of the wrong
    type are a ConfigError naming ``data.<key>``; values come back converted to the annotated types."""
    params = _config_parameters(loader)
    problems = [f"data.{k}: unknown key for dataset {name!r}{closest(k, params)}; "
                f"{name} takes {', '.join(params) or 'no arguments'}" for k in kwargs if k not in params]
    problems += [f"data.{n}: required by dataset {name!r} but missing" for n, p in params.items()
                 if p.default is p.empty and n not in kwargs]
    values, wrong = typechecked(params, kwargs, "data")
    own = getattr(loader, "problems", None)  # its ranges, on the values of the right type (see registry.refuse)
    if callable(own):
        given = {k: v for k, v in values.items() if k in params and k not in wrong}
        problems += range_lines(own(given), "data", kwargs)
    problems += [line for lines in wrong.values() for line in lines]
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def data_arguments(section):
    """A config's data section as its loader gets it: the given keys converted to their types, the others at
    the common keys' and the loader's defaults (a ConfigError for keys it does not take)."""
    name = section.get("dataset", COMMON_KEYS["dataset"])
    defaults = {k: v for k, v in loader_arguments(name).items() if v is not inspect.Parameter.empty}
    given = check_arguments(name, DATASETS.get(name), {k: v for k, v in section.items() if k not in COMMON_KEYS})
    return {**COMMON_KEYS, **defaults, **{k: v for k, v in section.items() if k in COMMON_KEYS}, **given}


def _config_parameters(loader):
    params = inspect.signature(loader).parameters
    return {n: p for n, p in params.items() if n not in RUNTIME}


def class_indices(labels, source):
    """(y, num_classes, classes) of a classification task from a 1-D array of labels of any kind.

    Labels are renumbered 0..K-1 in sorted order of their values (``classes``), so a file may label its
    classes 1..K, -1/+1 or by name. ``source`` names the file in errors.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{source}: classification labels must be one value per sample, got shape "
                        f"{labels.shape}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        at = int(np.flatnonzero(~np.isfinite(labels))[0])
        raise DataError(f"{source}: classification labels must be finite, got {labels[at].item()} at sample {at}")
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise DataError(f"{source}: classification labels must be whole numbers or names, got fractional "
                        f"values such as {labels[labels != np.round(labels)][0].item()!r}; use task: regression")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source}: classification needs at least 2 classes, the labels hold only "
                        f"{len(classes)} ({classes.tolist()})")
    names = [c.item() if isinstance(c, np.generic) else c for c in classes]
    if labels.dtype.kind == "f":
        names = [int(c) for c in names]
    return torch.from_numpy(y.reshape(-1).astype(np.int64)), len(classes), names


def numeric_matrix(values, source, what):
    """``values`` as an (N, F) float64 tensor (trailing dimensions flattened); non-numeric or non-finite
    values are a DataError naming ``source`` and ``what`` (``"features"``, ``"labels"``)."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{source}: {what} must be numbers, got an array of dtype {values.dtype}")
    if values.ndim == 0 or len(values) == 0:
        raise DataError(f"{source}: {what} hold no samples (shape {values.shape})")
    out = torch.from_numpy(values.reshape(len(values), -1).astype(np.float64))
    bad = ~torch.isfinite(out)
    if bad.any():
        row, col = bad.nonzero()[0].tolist()
        raise DataError(f"{source}: {what} must be finite, got {out[row, col].item()} at sample {row}, "
                        f"column {col}")
    return out


def seeded_generator(seed, stream):
    """A CPU torch.Generator that is a pure function of (``seed``, ``stream``): independent streams (data
    generation, split, epoch e's shuffle) from one run seed, the same in every process."""
    digest = hashlib.blake2b(f"{int(seed)}:{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))
