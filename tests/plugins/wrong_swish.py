"""A user layer whose backward has the classic wrong-sign bug: verify must fail it."""

import torch

import manualnet


@manualnet.register_layer("WrongSwish")
class WrongSwish(manualnet.Module):
    """y = x * sigmoid(x), with dx's sign flipped."""

    def forward(self, x):
        s = torch.sigmoid(x)
        self.cache = (x, s)
        return x * s

    def backward(self, dy):
        x, s = self.take_cache()
        return -dy * (s + x * s * (1 - s))
