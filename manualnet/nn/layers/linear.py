import math

import torch
import torch.nn.functional as F

from manualnet.nn.init import INITS
from manualnet.nn.module import Module, Parameter, register_layer
from manualnet.registry import expect, is_size


@register_layer("Linear")
class Linear(Module):
    """y = x @ W^T + b.

    Args:
        in_features, out_features: sizes of x's and y's last dimension.
        bias: learn an additive bias b.
        init: weight scheme from ``manualnet.nn.init`` (``default`` is PyTorch's); any scheme other than
            ``default`` starts the bias at zero.
        generator: a seeded ``torch.Generator`` to draw the weights from (the global RNG if None).
    Shape: x (*, in_features) -> y (*, out_features); weight (out_features, in_features), bias (out_features,).
    Setting ``needs_input_grad = False`` (a model's first layer, whose input is data) skips dx: backward
    then returns None, as autograd skips inputs that do not require grad.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "default",
                 generator=None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.needs_input_grad = True
        self.weight = Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        INITS.get(init, where="Linear init")(self.weight, generator=generator)
        self.bias = None
        if bias:
            self.bias = Parameter(torch.empty(out_features, device=device, dtype=dtype))
            if init == "default":
                bound = 1 / math.sqrt(in_features) if in_features else 0.0
                self.bias.uniform_(-bound, bound, generator=generator)
            else:
                self.bias.zero_()

    @classmethod
    def problems(cls, args):
        return [p for name in ("in_features", "out_features")
                for p in expect(args, name, is_size, "a whole number >= 0")]

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            got = x.shape[-1] if x.dim() else "a scalar"
            raise self.fail(f"expects {self.in_features} input features, gets {got} (input shape {tuple(x.shape)})")

    def forward(self, x):
        self.cache = x                                       # backward needs only x
        return F.linear(x, self.weight, self.bias)           # y = x @ W^T + b

    def backward(self, dy):
        x = self.take_cache()
        x2, dy2 = (x, dy) if x.dim() == 2 else (x.reshape(-1, self.in_features), dy.reshape(-1, self.out_features))
        self.weight.grad.addmm_(dy2.t(), x2)                 # dW += dy^T @ x: (out, N) @ (N, in) -> (out, in)
        if self.bias is not None:
            self.bias.grad.add_(dy2.sum(0))                  # db += sum_n dy_n
        if not self.needs_input_grad:
            return None
        del x, x2                                            # dx needs no x: its memory goes before dx's comes
        return dy @ self.weight                              # dx = dy @ W: (*, out) @ (out, in) -> (*, in)

    def reference(self, x):
        return F.linear(x, self.weight, self.bias)

    def describe(self):
        return f"Linear({self.in_features}->{self.out_features})"

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
