"""A user layer: Swish, y = x * sigmoid(beta * x), with a learnable beta.

List this file under ``plugins:`` in a config and use ``{type: Swish}`` in the model; ``manualnet verify``
checks its backward against autograd on its own forward (it gives no functional reference).
"""

import torch

import manualnet


@manualnet.register_layer("Swish")
class Swish(manualnet.Module):
    """y = x * s with s = sigmoid(beta * x), elementwise; beta is one learnable number.

    Shape: any; y has x's shape. beta: (1,).
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = manualnet.Parameter(torch.tensor([float(beta)]))

    def forward(self, x):
        s = torch.sigmoid(self.beta * x)
        self.cache = (x, s)                     # backward needs x and s
        return x * s

    def backward(self, dy):
        x, s = self.take_cache()
        ds = s * (1 - s)                        # sigmoid' at beta * x
        self.beta.grad += (dy * x * x * ds).sum().reshape(1)       # dbeta = sum dy * x^2 * s (1 - s)
        return dy * (s + self.beta * x * ds)                        # dx = dy * (s + beta x s (1 - s))
