"""The built-in layers; importing this package registers them."""

from manualnet.nn.layers.combine import Add, Concat, MatMul
from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.linear import Linear
from manualnet.nn.layers.relu import LeakyReLU, ReLU
from manualnet.nn.layers.shape import Flatten, Identity
from manualnet.nn.layers.sigmoid import Sigmoid, Tanh
from manualnet.nn.layers.softmax import LogSoftmax, Softmax

__all__ = ["Add", "Concat", "Dropout", "Flatten", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "MatMul", "ReLU",
           "Sigmoid", "Softmax", "Tanh"]
