import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, register_layer


@register_layer("ReLU")
class ReLU(Module):
    """y = max(x, 0), elementwise. Shape: any; y has x's shape."""

    kink = 0.0  # where the derivative jumps: finite differences keep away from it

    def forward(self, x):
        y = torch.relu(x)
        self.cache = y                          # backward needs only where y > 0
        return y

    def backward(self, dy):
        y = self.take_cache()
        return y.sign().mul_(dy)                # dx = dy * [x > 0], and sign(y) is [x > 0] as y >= 0

    def reference(self, x):
        return F.relu(x)


@register_layer("LeakyReLU")
class LeakyReLU(Module):
    """y = x if x > 0 else negative_slope * x, elementwise. Shape: any; y has x's shape."""

    kink = 0.0

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        positive = x > 0
        self.cache = positive                   # backward needs only the sign of x
        return torch.where(positive, x, x * self.negative_slope)

    def backward(self, dy):
        positive = self.take_cache()
        return torch.where(positive, dy, dy * self.negative_slope)   # dx = dy * (1 if x > 0 else slope)

    def reference(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"
