"""The built-in layers; importing this package registers them."""

from manualnet.layers.dropout import Dropout
from manualnet.layers.linear import Linear
from manualnet.layers.relu import LeakyReLU, ReLU
from manualnet.layers.shape import Flatten, Identity
from manualnet.layers.sigmoid import Sigmoid, Tanh
from manualnet.layers.softmax import LogSoftmax, Softmax

__all__ = ["Dropout", "Flatten", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "ReLU", "Sigmoid",
           "Softmax", "Tanh"]
