import math

import torch
import torch.nn.functional as F

from manualnet.init import INITS
from manualnet.layer import Layer, register_layer


@register_layer("Linear")
class Linear(Layer):
    """y = x @ W^T + b.

    Args:
        in_features, out_features: sizes of x's and y's last dimension.
        bias: learn an additive bias b.
        init: weight scheme from ``manualnet.init`` (``default`` is PyTorch's); any scheme other than
            ``default`` starts the bias at zero.
        generator: a seeded ``torch.Generator`` to draw the weights from (the global RNG if None).
    Shape: x (*, in_features) -> y (*, out_features); weight (out_features, in_features), bias (out_features,).
    """

    fresh_dx = True
    sets_grads = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "default",
                 generator=None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight = torch.empty(out_features, in_features, device=device, dtype=dtype)
        INITS.get(init, where="Linear init")(weight, generator=generator)
        self.params["weight"] = weight
        if bias:
            b = torch.empty(out_features, device=device, dtype=dtype)
            if init == "default":
                bound = 1 / math.sqrt(in_features) if in_features else 0.0
                b.uniform_(-bound, bound, generator=generator)
            else:
                b.zero_()
            self.params["bias"] = b
        self.grads = {name: torch.zeros_like(p) for name, p in self.params.items()}

    def check_input(self, x):
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            got = x.shape[-1] if x.dim() else "a scalar"
            raise self.fail(f"expects {self.in_features} input features, gets {got} (input shape {tuple(x.shape)})")

    def forward(self, x):
        self.cache = x                                       # backward needs only x
        return F.linear(x, self.params["weight"], self.params.get("bias"))   # y = x @ W^T + b

    def backward(self, dy):
        x = self.take_cache()
        W = self.params["weight"]
        if x.dim() != 2:                                     # (*, f) -> (N, f): one row per sample
            x, dy2 = x.reshape(-1, self.in_features), dy.reshape(-1, self.out_features)
        else:
            dy2 = dy
        if self.accumulate_grads:
            self.grads["weight"].addmm_(dy2.t(), x)        # dW += dy^T @ x: (out, N) @ (N, in) -> (out, in)
            if "bias" in self.grads:
                self.grads["bias"] += dy2.sum(0)             # db += sum_n dy_n
        else:                                                # the same, written instead of added: no zero_grad
            torch.mm(dy2.t(), x, out=self.grads["weight"])
            if "bias" in self.grads:
                torch.sum(dy2, 0, out=self.grads["bias"])
        if not self.needs_input_grad:
            return None
        return dy @ W                                        # dx = dy @ W: (*, out) @ (out, in) -> (*, in)

    def reference(self, x, params):
        return F.linear(x, params["weight"], params.get("bias"))

    def describe(self):
        return f"Linear({self.in_features}->{self.out_features})"

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"
