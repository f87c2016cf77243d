"""manualnet: neural networks whose gradients are written by hand.

Every layer implements an explicit forward and backward pass on torch tensors; autograd is used only to
verify them (``manualnet.verify``). ``import manualnet as mn`` gives the modules (``mn.Linear``,
``mn.Sequential``, ...), ``mn.train(config, ...)`` and the subpackages ``mn.nn``, ``mn.optim``, ``mn.data``,
``mn.verify``; they are imported when first used, so a command that does not need torch does not load it.
"""

import importlib

from manualnet.errors import CheckpointError, ConfigError, DataError, LayerError, ManualnetError
from manualnet.names import NN_NAMES as _NN_NAMES

__version__ = "0.1.0"

_SUBPACKAGES = ("nn", "optim", "data", "verify")

__all__ = ["CheckpointError", "ConfigError", "DataError", "LayerError", "ManualnetError", "__version__", "train",
           *_SUBPACKAGES, *_NN_NAMES]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"manualnet.{name}")
    if name in _NN_NAMES:
        return getattr(importlib.import_module("manualnet.nn"), name)
    if name == "train":
        return importlib.import_module("manualnet.training.api").train
    raise AttributeError(f"module 'manualnet' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
