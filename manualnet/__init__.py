"""manualnet: neural networks whose gradients are written by hand.

Every layer implements an explicit forward and backward pass on torch tensors; autograd is used only to
verify them (``manualnet.verify``).
"""

from manualnet.errors import CheckpointError, ConfigError, DataError, LayerError, ManualnetError
from manualnet.layer import LAYERS, Layer, register_layer
from manualnet.layers import Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from manualnet.losses import LOSSES, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, NLLLoss, register_loss
from manualnet.sequential import Sequential

__version__ = "0.1.0"

__all__ = [
    "LAYERS", "LOSSES", "BCELoss", "BCEWithLogitsLoss", "CheckpointError", "ConfigError", "CrossEntropyLoss",
    "DataError", "Dropout", "Flatten", "Identity", "Layer", "LayerError", "LeakyReLU", "Linear", "LogSoftmax",
    "Loss", "MSELoss", "ManualnetError", "NLLLoss", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh",
    "register_layer", "register_loss",
]
