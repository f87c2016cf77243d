"""manualnet: neural networks whose gradients are written by hand.

Every layer implements an explicit forward and backward pass on torch tensors; autograd is used only to
verify them (``manualnet.verify``).
"""

import importlib

__version__ = "0.1.0"

# Each exported name and the module it lives in: imported on first use (PEP 562), so that the CLI's --help
# and --version, and anything else that needs no tensor, answer without importing torch (1.5-6 s).
_EXPORTS = {
    "manualnet.errors": ["CheckpointError", "ConfigError", "DataError", "LayerError", "ManualnetError"],
    "manualnet.layer": ["LAYERS", "Layer", "register_layer"],
    "manualnet.layers": ["Dropout", "Flatten", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "ReLU", "Sigmoid",
                         "Softmax", "Tanh"],
    "manualnet.losses": ["LOSSES", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss", "NLLLoss",
                         "register_loss"],
    "manualnet.sequential": ["Sequential"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'manualnet' has no attribute {name!r}")
    if module != "manualnet.errors":  # as the eager import did: every built-in layer and loss registered
        importlib.import_module("manualnet.layers")
        importlib.import_module("manualnet.losses")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_MODULE_OF])
