"""The built-in layers; importing this package registers them."""

from manualnet.nn.layers.attention import CausalSelfAttention
from manualnet.nn.layers.combine import Add, Concat, MatMul
from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.embedding import Embedding
from manualnet.nn.layers.gelu import GELU
from manualnet.nn.layers.layernorm import LayerNorm
from manualnet.nn.layers.linear import Linear
from manualnet.nn.layers.relu import LeakyReLU, ReLU
from manualnet.nn.layers.shape import Flatten, Identity
from manualnet.nn.layers.sigmoid import Sigmoid, Tanh
from manualnet.nn.layers.softmax import LogSoftmax, Softmax

__all__ = ["GELU", "Add", "CausalSelfAttention", "Concat", "Dropout", "Embedding", "Flatten", "Identity", "LayerNorm",
           "LeakyReLU", "Linear", "LogSoftmax", "MatMul", "ReLU", "Sigmoid", "Softmax", "Tanh"]
