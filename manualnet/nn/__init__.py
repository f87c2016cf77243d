"""The model's math: modules, containers, layers and losses, each with a hand-written backward.

Imports nothing of optimizers, data, configs, training, logging or the CLI.
"""

from manualnet.names import NN_NAMES
from manualnet.nn.containers import ModuleList, Residual, Sequential
from manualnet.nn.layers import (
    GELU,
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    CausalSelfAttention,
    Concat,
    Conv2d,
    Dropout,
    Dropout2d,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MatMul,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from manualnet.nn.losses import (
    LOSSES,
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    Loss,
    MSELoss,
    NLLLoss,
    register_loss,
)
from manualnet.nn.models import GPT, MLP, Block
from manualnet.nn.module import LAYERS, Module, Parameter, register_layer

__all__ = list(NN_NAMES)
