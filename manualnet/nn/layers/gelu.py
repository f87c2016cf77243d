import math

import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, register_layer
from manualnet.nn.pieces import elementwise_in_pieces
from manualnet.registry import expect

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
CUBIC = 0.044715  # the tanh approximation's coefficient (Hendrycks and Gimpel), as in PyTorch and GPT-2


@register_layer("GELU")
class GELU(Module):
    """y = x * Phi(x), Phi the standard normal CDF, elementwise: Phi(x) = (1 + erf(x / sqrt 2)) / 2.

    Args:
        approximate: ``"none"`` for the exact erf form; ``"tanh"`` for GPT-2's
            y = x (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3).
    Shape: any; y has x's shape.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    @classmethod
    def problems(cls, args):
        return expect(args, "approximate", lambda v: v in ("none", "tanh"), "'none' or 'tanh'")

    @classmethod
    def example(cls, generator):
        return cls("tanh"), (torch.randn(3, 8, generator=generator, dtype=torch.float64) * 2,)

    def forward(self, x):
        self.cache = x                                     # backward needs only x
        if self.approximate == "tanh":  # as x sigmoid(2u), in cache-sized pieces: faster here than F.gelu's tanh
            return elementwise_in_pieces(_gelu_tanh, x)
        return F.gelu(x)

    def backward(self, dy, out=None):
        """dx, written into ``out`` when given: dy itself, from a caller that owns it (the MLP block, whose
        projection's gradient is new), saves a buffer of x's size."""
        x = self.take_cache()
        # dx = dy * gelu'(x), in cache-sized pieces
        return elementwise_in_pieces(lambda x, dy, out: torch.mul(self.derivative(x), dy, out=out), x, dy, out=out)

    def derivative(self, x):
        """gelu'(x), elementwise (in place on two buffers of its own: an elementwise layer's time and memory
        are its passes and its temporaries)."""
        x2 = x * x
        if self.approximate == "tanh":
            # y = x (1 + tanh(u)) / 2 = x sigmoid(2u) with 2u = 2 sqrt(2/pi) (x + 0.044715 x^3), so with s = sigmoid(2u)
            # and a = x d(2u)/dx = 2 sqrt(2/pi) (x + 3 * 0.044715 x^3):  y' = s + x s (1 - s) d(2u)/dx
            # = s (1 + a (1 - s)); sigmoid rather than tanh, which is several times slower on a CPU
            s = torch.addcmul(x, x2, x, value=CUBIC).mul_(2 * SQRT_2_OVER_PI).sigmoid_()
            a = x2.mul_(3 * CUBIC * 2 * SQRT_2_OVER_PI).add_(2 * SQRT_2_OVER_PI).mul_(x)
            return a.addcmul_(a, s, value=-1).add_(1).mul_(s)
        # y' = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density
        x_pdf = x2.mul_(-0.5).exp_().mul_(x).mul_(INV_SQRT_2PI)
        return torch.mul(x, INV_SQRT_2).erf_().add_(1).mul_(0.5).add_(x_pdf)

    def reference(self, x):
        return F.gelu(x, approximate=self.approximate)

    def describe(self):
        return "GELU" if self.approximate == "none" else "GELU(tanh)"

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


def _gelu_tanh(x, out):
    """out = x (1 + tanh(u)) / 2 = x sigmoid(2u), 2u = 2 sqrt(2/pi) (x + 0.044715 x^3)."""
    torch.mul(torch.addcmul(x, x * x, x, value=CUBIC).mul_(2 * SQRT_2_OVER_PI).sigmoid_(), x, out=out)
