"""The built-in layers; importing this package registers them."""

from manualnet.nn.layers.attention import CausalSelfAttention
from manualnet.nn.layers.batchnorm import BatchNorm1d, BatchNorm2d
from manualnet.nn.layers.combine import Add, Concat, MatMul
from manualnet.nn.layers.conv import Conv2d
from manualnet.nn.layers.dropout import Dropout, Dropout2d
from manualnet.nn.layers.embedding import Embedding
from manualnet.nn.layers.gelu import GELU
from manualnet.nn.layers.layernorm import LayerNorm
from manualnet.nn.layers.linear import Linear
from manualnet.nn.layers.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from manualnet.nn.layers.relu import LeakyReLU, ReLU
from manualnet.nn.layers.shape import Flatten, Identity
from manualnet.nn.layers.sigmoid import Sigmoid, Tanh
from manualnet.nn.layers.softmax import LogSoftmax, Softmax

__all__ = ["GELU", "AdaptiveAvgPool2d", "Add", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "CausalSelfAttention",
           "Concat", "Conv2d", "Dropout", "Dropout2d", "Embedding", "Flatten", "Identity", "LayerNorm", "LeakyReLU",
           "Linear", "LogSoftmax", "MatMul", "MaxPool2d", "ReLU", "Sigmoid", "Softmax", "Tanh"]
