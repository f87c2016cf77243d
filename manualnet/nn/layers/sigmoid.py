import torch

from manualnet.nn.module import Module, register_layer


@register_layer("Sigmoid")
class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)), elementwise. Shape: any; y has x's shape."""

    def forward(self, x):
        y = torch.sigmoid(x)
        self.cache = y                          # backward needs only y
        return y

    def backward(self, dy):
        y = self.take_cache()
        return dy * y * (1 - y)                 # dx = dy * y * (1 - y)

    def reference(self, x):
        return torch.sigmoid(x)


@register_layer("Tanh")
class Tanh(Module):
    """y = tanh(x), elementwise. Shape: any; y has x's shape."""

    def forward(self, x):
        y = torch.tanh(x)
        self.cache = y                          # backward needs only y
        return y

    def backward(self, dy):
        y = self.take_cache()
        return dy * (1 - y * y)                 # dx = dy * (1 - y^2)

    def reference(self, x):
        return torch.tanh(x)
