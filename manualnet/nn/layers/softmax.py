import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, register_layer


@register_layer("Softmax")
class Softmax(Module):
    """y_i = exp(x_i) / sum_j exp(x_j) along ``dim`` (max-shifted, finite for any finite x).

    Shape: any; y has x's shape. Backward is the full Jacobian-vector product, not its diagonal.
    """


    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        y = torch.softmax(x, self.dim)
        self.cache = y                          # backward needs only y
        return y

    def backward(self, dy):
        y = self.take_cache()
        # dx_i = sum_j dy_j * y_j * ([i == j] - y_i) = y_i * (dy_i - sum_j dy_j y_j)
        return y * (dy - (dy * y).sum(self.dim, keepdim=True))

    def reference(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


@register_layer("LogSoftmax")
class LogSoftmax(Module):
    """y_i = x_i - log sum_j exp(x_j) along ``dim`` (finite for any finite x). Shape: any; y has x's shape."""


    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        y = torch.log_softmax(x, self.dim)
        self.cache = y                          # backward needs only y (softmax = exp(y))
        return y

    def backward(self, dy):
        y = self.take_cache()
        return dy - y.exp() * dy.sum(self.dim, keepdim=True)   # dx_i = dy_i - softmax_i * sum_j dy_j

    def reference(self, x):
        return F.log_softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
